"""The compiled form of rulesets and everything done per decision.

    plan = engine.compile_plan(dsl.load_checked("rulesets/retail.rules"))
    decision, record = engine.decide(plan, request, inputs, decision_id=..., now=..., oracle=...)

Knows nothing of HTTP.
"""

from engine.compiler import COMPILER_VERSION, compile_plan
from engine.decide import decide
from engine.plan import Plan
from engine.records import DecideRequest, Decision, DecisionRecord, Inputs

__all__ = [
    "COMPILER_VERSION",
    "DecideRequest",
    "Decision",
    "DecisionRecord",
    "Inputs",
    "Plan",
    "compile_plan",
    "decide",
]

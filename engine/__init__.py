"""The compiled form of rulesets and everything done per decision.

    plan = engine.compile_plan(dsl.load_checked("rulesets/retail.rules"))
    decision, record = engine.decide(plan, request, inputs, decision_id=..., now=..., oracle=...)

Knows nothing of HTTP.
"""

from arbiter.engine.codegen.compiler import COMPILER_VERSION, compile_plan
from arbiter.engine.decision.decide import decide
from arbiter.engine.plan import Plan
from arbiter.engine.records import DecideRequest, Decision, DecisionRecord, Inputs

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

"""engine.decision.decide on its own: arbitration filters, degraded inputs, holdout."""

from __future__ import annotations

from arbiter import dsl
from arbiter.engine import DecideRequest, Inputs, compile_plan, decide
from arbiter.engine.decision.oracle import LiveOracle

RULES = """
ruleset caps
context { channel: one of [web, app] }
action capped { value 10 channels [web] cap 1 per 7d }
action tired  { value 8 channels [web] suppress after 2 rejections within 7d for 14d }
action plain  { value 1 channels [web] }
when context.channel == web offer capped
when context.channel == web offer tired
when context.channel == web offer plain
"""


def _decide(inputs: Inputs, limit: int = 3) -> list[str]:
    plan = compile_plan(dsl.check(dsl.parse(RULES, "caps.rules")))
    request = DecideRequest("c1", {"channel": "web"}, limit=limit)
    decision, _ = decide(
        plan, request, inputs, decision_id="d1", now=1.8e9, oracle=LiveOracle({}, {})
    )
    return [a.action for a in decision.actions]


def test_caps_and_fatigue_apply() -> None:
    assert _decide(Inputs()) == ["capped", "tired", "plain"]
    assert _decide(Inputs(caps={"capped": 1})) == ["tired", "plain"]
    assert _decide(Inputs(rejections={"tired": 2})) == ["capped", "plain"]


def test_degraded_never_offers_capped_or_fatigued_actions() -> None:
    # With Redis unreachable the contact count is unknown: fail closed.
    assert _decide(Inputs(degraded=True)) == ["plain"]

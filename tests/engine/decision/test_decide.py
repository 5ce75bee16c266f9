"""engine.decision.decide on its own: arbitration filters, degraded inputs, holdout."""

from __future__ import annotations

import gc

from support.paths import CASES_DIR

from arbiter import dsl
from arbiter.engine import DecideRequest, Inputs, compile_plan, decide
from arbiter.engine.codegen import compiler
from arbiter.engine.decision import policies
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


def test_policy_coverage_is_kept_per_plan_and_dropped_with_it() -> None:
    source = (CASES_DIR / "good" / "contact_policy.rules").read_text()
    plan = compile_plan(dsl.check(dsl.parse(source, "contact_policy.rules")))
    sms = plan.action("sms_flash_sale")
    # `channel sms: 1 per 7d` and `tag promo: 3 per 30d` cover it on sms; email's does not.
    limit, seen = policies.blocking_limit(plan, sms, "sms", {"~channel:sms:604800": 1}) or (None, 0)
    assert limit is not None and (limit.scope, limit.name, seen) == ("channel", "sms", 1)
    assert policies.blocking_limit(plan, sms, "sms", {"~channel:email:2592000": 5}) is None
    assert policies.applies(plan, plan.action("gentle_nudge"), "web") is False
    tiring = policies.tiring_policy(plan, sms, "sms", {"~tag:promo": 2})
    assert tiring is not None and tiring.name == "promo"
    key = id(plan)
    assert key in policies._COVERAGE
    # compile_plan keeps recent plans (a content-hash cache): let this one go too.
    with compiler._CACHE_LOCK:
        compiler._CACHE.clear()
    del plan, sms, limit, tiring
    gc.collect()
    assert key not in policies._COVERAGE

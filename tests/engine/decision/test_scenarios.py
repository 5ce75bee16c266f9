"""Scenario blocks: inputs built from literals, decisions through the real `decide`, the report.

`tests/cases/good/*.rules` are data: each checks clean (no errors, no
warnings) and every scenario in it passes.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from support.paths import ROOT_DIR

from arbiter import dsl, engine
from arbiter.dsl import nodes as n
from arbiter.engine.decision.scenarios import (
    DEFAULT_NOW,
    ScenarioResult,
    decision_id,
    format_report,
    run_scenario,
    run_scenarios,
    scenario_inputs,
)
from arbiter.engine.plan import Plan

ROOT = ROOT_DIR
GOOD = sorted((ROOT / "tests/cases/good").glob("*.rules"))


def plan_of(text: str, filename: str = "tiny.rules") -> Plan:
    return engine.compile_plan(dsl.check(dsl.parse(text, filename)))


def at(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


@pytest.mark.parametrize("path", GOOD, ids=lambda p: p.stem)
def test_good_cases_check_clean_and_pass(path: Path) -> None:
    checked = dsl.load_checked(path)
    assert checked.warnings == []
    results = run_scenarios(engine.compile_plan(checked))
    assert results, f"{path.name} has no scenarios"
    failed = [r for r in results if not r.passed]
    assert not failed, format_report(results)


TINY = """ruleset tiny
profile { visits: int }
action welcome { value 1 }
action other { value 1 }
when profile.visits <= 1 offer welcome
scenario "new visitor gets welcome" { profile { visits: 0 } expect [welcome] }
scenario "wrong on purpose" { profile { visits: 0 } expect [other] }
"""


def test_report_reads_like_pytest() -> None:
    results = run_scenarios(plan_of(TINY))
    assert [r.passed for r in results] == [True, False]
    assert format_report(results) == (
        "tiny.rules::new visitor gets welcome PASSED\n"
        "tiny.rules::wrong on purpose FAILED\n"
        "\n"
        "============================== FAILURES ==============================\n"
        "__________ tiny.rules::wrong on purpose __________\n"
        "tiny.rules:7:1: scenario 'wrong on purpose'\n"
        "  expected: [other]\n"
        "  got:      [welcome]\n"
        "  customer: scenario-customer-0\n"
        "  segments true: none\n"
        "  fired rules:\n"
        "    tiny.rules:5:1: when profile.visits <= 1 offer welcome  -> welcome\n"
        "  not returned: other: no rule offers it\n"
        "\n"
        "1 passed, 1 failed"
    )


def test_summary_line() -> None:
    span = n.Span("f.rules", 1, 1, 1, 1)
    ok = ScenarioResult("a", span, True, ("x",), ("x",))
    bad = ScenarioResult("b", span, False, ("x",), ())
    assert format_report([ok, ok, ok]).splitlines()[-1] == "3 passed"
    assert format_report([ok, ok, ok, bad]).splitlines()[-1] == "3 passed, 1 failed"
    assert format_report([]).splitlines()[-1] == "0 passed"
    assert "  got:      nothing" in format_report([bad])


def test_expect_nothing() -> None:
    plan = plan_of(
        "ruleset r\nprofile { visits: int }\naction a { value 1 }\n"
        "when profile.visits > 5 offer a\n"
        'scenario "quiet" { profile { visits: 1 } expect nothing }\n'
        'scenario "not quiet" { profile { visits: 9 } expect nothing }\n'
    )
    assert [r.passed for r in run_scenarios(plan)] == [True, False]


def test_decision_ids_are_fixed_per_scenario() -> None:
    plan = plan_of(TINY)
    first, second = plan.checked.scenarios
    assert decision_id(plan, first) == decision_id(plan, first)
    assert decision_id(plan, first) != decision_id(plan, second)
    assert run_scenario(plan, first) == run_scenario(plan, first)


EVENTS = """ruleset ev
profile { since: time, tags: set<string>, visits: int }
event view
event purchase { amount: number }
action a { value 1, cap 2 per 7d, suppress after 2 rejections within 7d for 3d }
when count(view within 24h) > 0 and sum(purchase.amount within 30d) > 0
  and count(purchase within 30d) > 0 and max(purchase.amount within 30d) > 0
  and min(purchase.amount within 30d) > 0 and avg(purchase.amount within 30d) > 0
  and last_seen(view) is present and profile.since is present and profile.tags is present
  and profile.visits is present
  offer a
scenario "s" {
  profile { since: "2026-01-02", tags: ["b", "a", "b"], visits: null }
  events {
    view: 3 2h ago, view: 1 30h ago,
    purchase.amount: 40 1d ago, purchase.amount: 10 40d ago, purchase: 1 2d ago,
    a: 1 1d ago, a: 1 8d ago, a.rejected: 2 1d ago
  }
  now 2026-03-01T12:00:00Z
  expect [a]
}
"""


def test_inputs_from_scenario_literals() -> None:
    plan = plan_of(EVENTS)
    (scenario,) = plan.checked.scenarios
    now = at("2026-03-01T12:00:00")
    inputs = scenario_inputs(plan, scenario, now)
    by_key = {
        spec.key.split(" within")[0]: inputs.aggregates[spec.key] for spec in plan.needs.aggregates
    }
    assert by_key == {
        "count(view": 3.0,  # 30h ago is outside 24h
        "sum(purchase.amount": 40.0,  # 40d ago is outside 30d
        "count(purchase": 2.0,  # the amount-less purchase counts as an event
        "max(purchase.amount": 40.0,
        "min(purchase.amount": 40.0,
        "avg(purchase.amount": 40.0,  # over purchases with an amount, as the store divides
        "last(view": now - 2 * 3600,
    }
    assert inputs.profile == {"since": at("2026-01-02T00:00:00"), "tags": ["a", "b"]}
    assert inputs.caps == {"a": 1}  # the contact 8 days ago is outside the 7-day cap
    assert inputs.rejections == {"a": 2}  # fatigued: 2 rejections within 7d, 1 day old


def test_missing_aggregates_are_missing() -> None:
    plan = plan_of(EVENTS)
    scenario = n.ScenarioDecl(n.NO_SPAN, "empty", expect=())
    inputs = scenario_inputs(plan, scenario, DEFAULT_NOW)
    values = {spec.fn: inputs.aggregates[spec.key] for spec in plan.needs.aggregates}
    assert values["count"] == 0.0 and values["sum"] == 0.0
    assert values["max"] is None and values["min"] is None and values["avg"] is None
    assert values["last"] is None


MODELS = """ruleset models
profile { visits: int }
action attributes { discount: number }
action a { value 1, discount 10 }
action b { value 1, discount 20 }
model churn = onnx "churn.onnx" inputs (profile.visits)
model click = onnx "click.onnx" inputs (value, action.discount) per action
when churn > 0.5 offer a
when true offer b
arbitrate by click * value, top 2
"""


def test_model_scores_come_from_the_scenario() -> None:
    text = MODELS + (
        'scenario "per action" { profile { visits: 1 } scores { churn: 0.9, '
        "click: { a: 0.2, b: 0.7 } } expect [b, a] }\n"
        'scenario "one for all" { profile { visits: 1 } scores { churn: 0.9, click: 0.5 }'
        " expect [a, b] }\n"
    )
    results = run_scenarios(plan_of(text))
    assert [r.passed for r in results] == [True, True], format_report(results)


def test_a_model_without_a_score_is_missing() -> None:
    text = MODELS + 'scenario "no churn score" { profile { visits: 1 } expect [b] }\n'
    (result,) = run_scenarios(plan_of(text))
    assert result.passed
    assert any("no score for model 'churn'" in e for e in result.errors)


def test_a_score_whose_model_is_never_asked_is_pointed_out() -> None:
    text = MODELS + 'scenario "no visits" { scores { churn: 0.9 } expect [b] }\n'
    (result,) = run_scenarios(plan_of(text))
    assert result.passed  # churn needs profile.visits, which is missing: no score
    assert any("the score given for 'churn' was not used" in e for e in result.errors)


SPLITS = """ruleset splits
action a { value 1 }
action b { value 1 }
action base { value 0 }
experiment x { a: 50%, b: 50% }
when experiment.x == a offer a
when experiment.x == b offer b
holdout 20% control
default base
"""


def test_a_given_customer_must_be_in_the_groups_asked_for() -> None:
    from arbiter.engine.decision.decide import assign_variant, in_holdout

    plan = plan_of(SPLITS)
    ids = [f"c-{i}" for i in range(200)]
    fits = next(c for c in ids if not in_holdout(plan, c) and assign_variant(plan, "x", c) == "b")
    other = next(c for c in ids if not in_holdout(plan, c) and assign_variant(plan, "x", c) == "a")
    text = SPLITS + "".join(
        f'scenario "{c}" {{ customer "{c}" experiments {{ x: b }} expect [b] }}\n'
        for c in (fits, other)
    )
    good, bad = run_scenarios(plan_of(text))
    assert good.passed and good.customer_id == fits
    assert not bad.passed and bad.got == ()
    assert bad.errors == (f"customer '{other}' is not in the groups the scenario asks for (x=b)",)


def test_found_customers_are_in_the_groups_asked_for() -> None:
    from arbiter.engine.decision.decide import assign_variant, in_holdout

    text = SPLITS + (
        'scenario "b" { experiments { x: b } expect [b] }\n'
        'scenario "held out" { in holdout expect [base] }\n'
    )
    plan = plan_of(text)
    b, held = run_scenarios(plan)
    assert b.passed and held.passed
    assert assign_variant(plan, "x", b.customer_id) == "b"
    assert not in_holdout(plan, b.customer_id)
    assert in_holdout(plan, held.customer_id)


def test_the_example_rulesets_scenarios_can_fail() -> None:
    """Changing an expectation in a real ruleset makes its scenario fail."""
    path = ROOT / "rulesets/retail.rules"
    text = path.read_text(encoding="utf-8").replace(
        "expect [cart_recovery_email]", "expect [winback_email]", 1
    )
    ruleset, sources = dsl.load(path, text)
    results = run_scenarios(engine.compile_plan(dsl.check(ruleset, sources)))
    failed = [r for r in results if not r.passed]
    assert len(failed) == 1
    assert failed[0].got == ("cart_recovery_email",)


def test_failures_say_why_offered_actions_were_not_returned() -> None:
    text = """ruleset why
profile { consents: set<string> }
context { channel: one of [web, email] }
action by_email { value 9, channels [email] }
action needs_consent { value 8, requires consent "email" }
action capped { value 7, cap 1 per 7d }
action seasonal { value 6, valid 2026-12-01 .. 2026-12-24 }
action hidden { value 5 }
action low { value 1 }
when true offer by_email
when true offer needs_consent
when true offer capped
when true offer seasonal
when true offer hidden
when true offer low
suppress hidden when true
scenario "all dropped but one" {
  context { channel: web }
  events { capped: 1 1d ago }
  expect nothing
}
"""
    (result,) = run_scenarios(plan_of(text, "why.rules"))
    assert result.got == ("low",)
    assert dict(result.dropped) == {
        "by_email": "only for channels [email], not web",
        "needs_consent": 'needs consent "email" (the customer has none)',
        "capped": "contact cap 1 per 7d reached (1 so far)",
        "seasonal": "outside its validity dates (2026-12-01 .. 2026-12-24; now 2026-01-01T12:00:00Z)",
        "hidden": "suppressed by `suppress hidden when true`",
    }
    assert "  not returned: by_email: only for channels [email], not web" in format_report([result])


def test_scenario_inputs_match_what_the_store_reads(redis_url: str) -> None:
    """Every scenario's events, ingested into real Redis, read back as the runner computed.

    Times are moved by whole days to near the real clock (bucket hashes expire
    at absolute times); whole days keep every hourly and daily bucket edge, but
    not calendar months: a month window is compared with the runner's own
    computation (`literal_inputs.aggregate`) of the moved events at the moved time.
    """
    import asyncio
    import time

    from arbiter.engine.decision.literal_inputs import LiteralEvent, aggregate
    from arbiter.engine.decision.policies import rejections_of
    from arbiter.engine.store.client import connect
    from arbiter.engine.store.profiles import Event, ProfileStore, grouped_properties

    day = 86400
    cases = []
    for path in [*sorted((ROOT / "rulesets").glob("*.rules")), *GOOD]:
        plan = engine.compile_plan(dsl.load_checked(path))
        cases += [(plan, sc) for sc in plan.checked.scenarios if sc.events]
    assert len(cases) > 20

    async def main() -> None:
        client = connect(redis_url, socket_timeout=5)
        store = ProfileStore(client)
        try:
            for i, (plan, sc) in enumerate(cases):
                now = sc.now if sc.now is not None else DEFAULT_NOW
                shift = round((time.time() - now) / day) * day
                cid = f"scenario-xcheck-{i}"
                events: list[Event] = []
                moved: list[LiteralEvent] = []
                for e in sc.events:
                    ts = now - e.ago_seconds + shift
                    if e.event in plan.checked.actions and e.event not in plan.checked.events:
                        spec = plan.action(e.event)
                        # What the feedback route records: the action's own rejections and
                        # those of the fatigue policies covering it.
                        targets = rejections_of(plan, spec, None) if e.prop == "rejected" else []
                        if e.prop == "rejected" and spec.fatigue is not None:
                            keep = spec.fatigue.window_seconds + spec.fatigue.period_seconds
                            targets.append((e.event, keep))
                        for name, keep in targets:
                            for _ in range(int(e.amount)):
                                await store.record_rejection(cid, name, ts, keep)
                    elif e.prop is None:
                        events += [Event(cid, e.event, ts, {}) for _ in range(int(e.amount))]
                        moved += [LiteralEvent(e.event, ts)] * int(e.amount)
                    elif e.label is not None:
                        events.append(Event(cid, e.event, ts, {e.prop: e.label}))
                        moved.append(LiteralEvent(e.event, ts, {}, {e.prop: e.label}))
                    else:
                        events.append(Event(cid, e.event, ts, {e.prop: e.amount}))
                        moved.append(LiteralEvent(e.event, ts, {e.prop: e.amount}))
                grouped = grouped_properties([plan.needs])
                await store.add_events(events, now=now + shift, grouped=grouped)
                stored = await store.fetch(cid, plan.needs, now + shift)
                ours = scenario_inputs(plan, sc, now)
                where = f"{sc.span}: {sc.name}"
                for spec in plan.needs.aggregates:
                    have = stored.aggregates[spec.key]
                    if spec.fn == "last" and have is not None:
                        have -= shift
                    want = ours.aggregates[spec.key]
                    if spec.window_seconds < 0:  # calendar months
                        want = aggregate(moved, spec, now + shift)
                    assert have == pytest.approx(want), (where, spec.key)
                assert stored.rejections == ours.rejections, where
        finally:
            await client.aclose()

    asyncio.run(main())


def test_a_trigger_scenario_that_does_not_fire_says_why() -> None:
    text = (ROOT / "tests/cases/good/triggers.rules").read_text()
    text = text.replace(
        "events { add_to_cart: 1 30min ago }\n  trigger recovery\n  expect nothing",
        "events { add_to_cart: 1 30min ago }\n  trigger recovery\n  expect [cart_reminder]",
    )
    results = {r.name: r for r in run_scenarios(plan_of(text))}
    early = results["not yet due"]
    assert not early.passed and early.got == ()
    assert "has not fired by now: no add_to_cart event at least 3600s before it" in early.errors[0]
    assert "a purchase event followed" in results["bought in between"].errors[0]
    with pytest.raises(dsl.RulesError) as info:
        dsl.check(
            dsl.parse(
                text.replace(
                    "trigger recovery\n  expect nothing", "trigger recvery\n  expect nothing", 1
                ),
                "t.rules",
            )
        )
    assert [d.code for d in info.value.diagnostics] == ["unknown-name"]

"""Every decision explains itself: one test per reason an action is returned or left out.

The fates come from `engine.decision.explain` through the real `decide`, over
`tests/cases/explain/fates.rules` (one action per reason) and literal inputs.
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime
from typing import Any

import pytest
from support.paths import CASES_DIR

from arbiter import dsl
from arbiter.engine.codegen.compiler import compile_plan
from arbiter.engine.decision.decide import decide, in_holdout
from arbiter.engine.decision.explain import EXPLANATION_VERSION
from arbiter.engine.decision.literal_inputs import literal_inputs
from arbiter.engine.decision.scenarios import ScenarioOracle
from arbiter.engine.plan import Plan
from arbiter.engine.records import DecideRequest, Inputs

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC).timestamp()
WEB = {"channel": "web", "page": "/checkout"}


@pytest.fixture(scope="module")
def plan() -> Plan:
    return compile_plan(dsl.load_checked(CASES_DIR / "explain" / "fates.rules"))


def outside_holdout(plan: Plan) -> str:
    return next(f"c{i}" for i in range(1000) if not in_holdout(plan, f"c{i}"))


def explained(
    plan: Plan,
    context: dict[str, Any] | None = None,
    profile: dict[str, Any] | None = None,
    customer: str | None = None,
    inputs: Inputs | None = None,
    **stored: Any,
) -> dict[str, Any]:
    cid = customer or outside_holdout(plan)
    request = DecideRequest(cid, context or WEB, limit=2, explain=True)
    if inputs is None:
        inputs = literal_inputs(plan, profile or {"visits": 1}, [], NOW, **stored)
    oracle = ScenarioOracle({}, plan)
    decision, _ = decide(plan, request, inputs, decision_id="d-1", now=NOW, oracle=oracle)
    assert decision.explanation is not None
    return decision.explanation


def fate(explanation: dict[str, Any], action: str) -> dict[str, Any]:
    found: dict[str, Any] = next(a for a in explanation["actions"] if a["action"] == action)
    return found


def test_every_declared_action_has_a_fate(plan: Plan) -> None:
    ex = explained(plan)
    assert ex["version"] == EXPLANATION_VERSION
    assert [a["action"] for a in ex["actions"]] == [a.name for a in plan.actions]
    assert ex["formula"] == "value * weight"


def test_returned_with_rank_score_and_terms(plan: Plan) -> None:
    assert fate(explained(plan), "winner") == {
        "action": "winner",
        "fate": "returned",
        "reason": "offered",
        "message": "returned at rank 1 with score 10, offered by `when true offer winner`",
        "rank": 1,
        "score": 10.0,
        "rule": {
            "at": f"{CASES_DIR / 'explain' / 'fates.rules'}:23:1",
            "text": "when true offer winner",
        },
        "terms": [
            {"name": "value", "value": 10.0, "source": "action"},
            {"name": "weight", "value": 1.0, "source": "rule"},
            {"name": "priority", "value": 0, "source": "rule"},
        ],
    }


@pytest.mark.parametrize(
    ("action", "reason", "message", "details"),
    [
        (
            "same_tag",
            "diversity",
            "ranked 2 but lost the diversity limit: max 1 per tag, and tag 'hero' was already taken",
            {"tag": "hero", "max_per_tag": 1},
        ),
        (
            "email_only",
            "channel",
            "only for channels [email], not web",
            {"channel": "web", "channels": ["email"]},
        ),
        (
            "old_news",
            "dates",
            "outside its validity dates (2025-01-01 .. 2025-01-31; now 2026-03-01T12:00:00Z)",
            {
                "valid_from": "2025-01-01T00:00:00Z",
                "valid_until": "2025-02-01T00:00:00Z",
                "now": "2026-03-01T12:00:00Z",
            },
        ),
        (
            "needs_consent",
            "consent",
            'needs consent "email" (the customer has none)',
            {"consent": "email", "consents": []},
        ),
        ("capped", "top-n", "ranked 4 with score 7, below the top 2", {"limit": 2}),
    ],
)
def test_dropped_by_a_filter_or_the_ranking(
    plan: Plan, action: str, reason: str, message: str, details: dict[str, Any]
) -> None:
    got = fate(explained(plan), action)
    assert (got["fate"], got["reason"], got["message"], got["details"]) == (
        "dropped",
        reason,
        message,
        details,
    )


def test_cap_reached_with_counts(plan: Plan) -> None:
    got = fate(explained(plan, contacts={"capped": [NOW - 3600]}), "capped")
    assert got["reason"] == "cap"
    assert got["message"] == "contact cap 1 per 7d reached (1 so far)"
    assert got["details"] == {"limit": 1, "window": "7d", "contacts": 1}


def test_fatigue(plan: Plan) -> None:
    got = fate(explained(plan, rejections={"tired": [NOW - 7200, NOW - 3600]}), "tired")
    assert got["reason"] == "fatigue"
    assert got["message"] == "fatigued: 2 rejections within 7d, so not offered for 14d"


def test_contact_policy_with_counts(plan: Plan) -> None:
    got = fate(explained(plan, contacts={"over_policy": [NOW - 3600]}), "over_policy")
    assert (got["fate"], got["reason"]) == ("dropped", "policy")
    assert got["message"] == "contact policy reached: tag limited allows 1 per 7d (1 so far)"
    assert got["details"] == {
        "scope": "tag",
        "name": "limited",
        "limit": 1,
        "window": "7d",
        "contacts": 1,
    }


def test_suppressed_names_the_rule(plan: Plan) -> None:
    got = fate(explained(plan), "hidden")
    assert got["reason"] == "suppressed"
    assert got["message"] == 'suppressed by `suppress hidden when context.page == "/checkout"`'
    assert got["rule"]["at"].endswith("fates.rules:32:1")


def test_no_rule_names_the_closest_rule_and_its_false_comparison(plan: Plan) -> None:
    got = fate(explained(plan, profile={"visits": 5}), "loyal_only")
    assert got["fate"] == "not-offered" and got["reason"] == "no-rule"
    # Both rules miss the page; the first also needs `regular`, which holds (5 visits): a tie
    # on one miss each, so the first in source order is the closest.
    assert got["rule"]["text"] == 'when regular and context.page == "/account" offer loyal_only'
    assert got["condition"] == {
        "text": 'context.page == "/account"',
        "at": f"{CASES_DIR / 'explain' / 'fates.rules'}:33:18",
        "result": "false",
        "values": {"context.page": "/checkout"},
    }
    assert got["message"] == (
        'no rule offered it: closest is `when regular and context.page == "/account" offer '
        'loyal_only`, where `context.page == "/account"` is false (context.page = /checkout)'
    )


def test_no_rule_looks_into_segments_and_missing_values(plan: Plan) -> None:
    context = {"channel": "web", "page": "/account"}
    got = fate(explained(plan, context=context, profile={}), "loyal_only")
    # With the page right, `regular` is what fails: profile.visits is missing.
    # The weight-2 rule needs only the page, so it fired: loyal_only is returned or ranked.
    assert got["fate"] != "not-offered"
    got = fate(explained(plan, context={"channel": "web"}, profile={}), "loyal_only")
    assert got["condition"]["result"] == "unknown"
    assert got["condition"]["values"] == {"context.page": None}


def test_bandit_lists_the_pmf_by_arm(plan: Plan) -> None:
    ex = explained(plan)
    (loser,) = [a for a in ex["actions"] if a["reason"] == "bandit"]
    (choice,) = ex["bandits"]
    assert choice["probabilities"] == {"arm_a": 0.5, "arm_b": 0.5}
    assert loser["details"] == {
        "bandit": "pick",
        "chosen": choice["chosen"],
        "probabilities": {"arm_a": 0.5, "arm_b": 0.5},
    }
    assert loser["message"] == (
        f"bandit 'pick' chose {choice['chosen']} (probabilities: arm_a 0.5, arm_b 0.5)"
    )


def test_holdout_and_the_default(plan: Plan) -> None:
    held = next(f"c{i}" for i in range(1000) if in_holdout(plan, f"c{i}"))
    ex = explained(plan, customer=held)
    assert fate(ex, "winner")["reason"] == "holdout"
    assert fate(ex, "winner")["message"] == (
        "the customer is in the holdout group 'control': only the default applies"
    )
    fallback = fate(ex, "fallback")
    assert (fallback["fate"], fallback["reason"]) == ("returned", "default")
    standby = fate(explained(plan), "fallback")
    assert (standby["fate"], standby["reason"]) == ("not-offered", "standby")


def test_degraded_store(plan: Plan) -> None:
    ex = explained(plan, inputs=Inputs(profile={"visits": 1}, degraded=True))
    assert fate(ex, "capped")["reason"] == "degraded"
    assert fate(ex, "tired")["reason"] == "degraded"
    assert fate(ex, "over_policy")["reason"] == "degraded"  # its history is unknown


def test_explaining_never_changes_the_decision(plan: Plan) -> None:
    cid = outside_holdout(plan)
    inputs = literal_inputs(plan, {"visits": 4}, [], NOW)
    answers = []
    for explain in (False, True):
        request = DecideRequest(cid, WEB, limit=2, explain=explain)
        oracle = ScenarioOracle({}, plan)
        decision, record = decide(plan, request, inputs, decision_id="d", now=NOW, oracle=oracle)
        answers.append((decision.actions, record.bandits, record.trace))
    assert answers[0] == answers[1]


# ------------------------------------------------------------ from the engine's own code

PROBED = """ruleset probed
profile { a: number, b: number, visits: int }
context { channel: one of [web, email], page: string }
model churn = onnx "churn.onnx" inputs (profile.visits)
segment loyal = profile.visits >= 3 or profile.a > 100
action ratio_offer { value 5 }
action churn_offer { value 4 }
action fallback { value 0 }
when profile.a / profile.b > 1 offer ratio_offer
when loyal and churn > 0.5 offer churn_offer
default fallback
"""


def explain_text(text: str, profile: dict[str, Any], scores: dict[str, Any]) -> tuple[Any, Any]:
    plan = compile_plan(dsl.check(dsl.parse(text, "probed.rules")))
    request = DecideRequest("c1", WEB, explain=True)
    inputs = literal_inputs(plan, profile, [], NOW)
    oracle = ScenarioOracle(scores, plan)
    decision, record = decide(plan, request, inputs, decision_id="d-1", now=NOW, oracle=oracle)
    assert decision.explanation is not None
    return decision.explanation, record


def test_a_comparison_that_raised_is_reported_as_an_error() -> None:
    ex, record = explain_text(PROBED, {"a": 5, "b": 0, "visits": 1}, {})
    got = fate(ex, "ratio_offer")
    # The rule failed at run time (the decision's errors say so) and the explanation shows
    # the same failure, from the same code: not a guess that the value is "unknown".
    assert any("ZeroDivisionError" in e for e in record.errors)
    assert got["condition"] == {
        "text": "profile.a / profile.b > 1",
        "at": "probed.rules:9:6",
        "result": "error",
        "values": {"profile.a / profile.b": None},
        "error": "ZeroDivisionError: division by zero",
    }
    assert got["message"] == (
        "no rule offered it: closest is `when profile.a / profile.b > 1 offer ratio_offer`, "
        "where `profile.a / profile.b > 1` failed (ZeroDivisionError: division by zero) "
        "(profile.a / profile.b = missing)"
    )


def test_a_model_the_decision_did_not_need_is_not_called_to_explain() -> None:
    # Not loyal: the evaluator never asks churn; explaining must not either (the record
    # would change), so the culprit is the segment, through its decisive comparison.
    ex, record = explain_text(PROBED, {"a": 5, "b": 1, "visits": 1}, {"churn": 0.9})
    got = fate(ex, "churn_offer")
    assert record.scores == {}
    assert got["condition"] == {
        "text": "profile.visits >= 3",
        "at": "probed.rules:5:17",
        "result": "false",
        "values": {"profile.visits": 1},
        "segment": "loyal",
    }


def test_a_model_score_the_decision_computed_is_shown() -> None:
    ex, record = explain_text(PROBED, {"a": 5, "b": 1, "visits": 4}, {"churn": 0.2})
    got = fate(ex, "churn_offer")
    assert record.scores == {"churn": [0.2]}
    assert got["condition"]["text"] == "churn > 0.5"
    assert got["condition"]["values"] == {"churn": 0.2}
    assert got["condition"]["result"] == "false"


def test_an_or_is_explained_by_its_deciding_operand() -> None:
    # `loyal` is unknown (visits missing, `a > 100` false): the part shown is the operand
    # with the outcome the whole has, not merely the first one that is not true.
    ex, _ = explain_text(PROBED, {"a": 5, "b": 1}, {})
    got = fate(ex, "churn_offer")
    assert got["condition"]["text"] == "profile.visits >= 3"
    assert got["condition"]["result"] == "unknown"


def test_probes_are_built_once_per_plan(plan: Plan) -> None:
    seen: list[Any] = []
    threads = [threading.Thread(target=lambda: seen.append(plan.probes())) for _ in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert len(seen) == 8 and all(p is seen[0] for p in seen)
    # The evaluator's source holds no probe: explaining adds nothing to the hot path.
    assert "def probe_" not in plan.source and "def probe_0(" in seen[0].source


def test_a_model_whose_inputs_raised_fails_the_comparison_with_that_error() -> None:
    text = PROBED.replace("inputs (profile.visits)", "inputs (profile.visits / profile.b)")
    ex, record = explain_text(text, {"a": 5, "b": 0, "visits": 4}, {"churn": 0.9})
    got = fate(ex, "churn_offer")
    assert record.scores == {}  # never scored: the row raised, in the decision and in explaining
    assert any("ZeroDivisionError" in e and ":10:" in e for e in record.errors)
    assert got["condition"]["text"] == "churn > 0.5"
    assert got["condition"]["result"] == "error"
    assert got["condition"]["error"] == "ZeroDivisionError: division by zero"

"""Every decision explains itself: one test per reason an action is returned or left out.

The fates come from `engine.decision.explain` through the real `decide`, over
`tests/cases/explain/fates.rules` (one action per reason) and literal inputs.
"""

from __future__ import annotations

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

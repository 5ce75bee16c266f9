"""One calendar for every month: `add_months` (windows, `now() ± Nmo`) and fatigue in months."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from support.paths import CASES_DIR

from arbiter import dsl
from arbiter.dsl import printing
from arbiter.engine.codegen.compiler import compile_plan
from arbiter.engine.decision.arbitrate import fatigued
from arbiter.engine.decision.decide import decide
from arbiter.engine.decision.literal_inputs import literal_inputs
from arbiter.engine.decision.window_span import add_months, keep_seconds, window_start
from arbiter.engine.records import DecideRequest

DAY = 86400


def at(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


@pytest.mark.parametrize(
    ("start", "months", "expected"),
    [
        ("2027-03-31T10:00:00", -1, "2027-02-28T10:00:00"),
        ("2028-03-31T10:00:00", -1, "2028-02-29T10:00:00"),  # leap year
        ("2027-05-31T10:00:00", -1, "2027-04-30T10:00:00"),
        ("2027-01-15T23:59:59", -1, "2026-12-15T23:59:59"),  # across a year
        ("2027-01-31T10:00:00", 1, "2027-02-28T10:00:00"),
        ("2028-01-31T10:00:00", 1, "2028-02-29T10:00:00"),
        ("2027-12-31T00:00:00", 2, "2028-02-29T00:00:00"),
        ("2027-03-31T10:00:00", -13, "2026-02-28T10:00:00"),
    ],
)
def test_add_months_clamps_the_day_in_utc(start: str, months: int, expected: str) -> None:
    assert add_months(at(start), months) == at(expected)


def test_a_window_of_minus_n_is_n_calendar_months_and_keeps_31_days_a_month() -> None:
    now = at("2027-03-31T10:00:00")
    assert window_start(-1, now) == at("2027-02-28T10:00:00")
    assert window_start(7 * DAY, now) == now - 7 * DAY
    assert keep_seconds(-2) == 62 * DAY
    assert keep_seconds(3600) == 3600


def test_fatigue_within_and_for_a_month_are_calendar_months() -> None:
    # Two rejections 02-28 10:30 and 03-31 09:00: within one calendar month of each other.
    times = [at("2027-02-28T10:30:00"), at("2027-03-31T09:00:00")]
    assert fatigued(times, at("2027-03-31T10:00:00"), 2, -1, -1)
    # 02-28 09:30 to 03-31 10:00 is more than a calendar month: no fatigue.
    assert not fatigued(
        [at("2027-02-28T09:30:00"), at("2027-03-31T10:00:00")],
        at("2027-03-31T11:00:00"),
        2,
        -1,
        30 * DAY,
    )
    # Suppressed `for 1mo` after the last rejection on 2028-01-31: until 2028-02-29 10:00.
    last = [at("2028-01-31T09:00:00"), at("2028-01-31T10:00:00")]
    assert fatigued(last, at("2028-02-29T09:59:00"), 2, 7 * DAY, -1)
    assert not fatigued(last, at("2028-02-29T10:00:00"), 2, 7 * DAY, -1)


def test_people_read_a_month_window_as_months_and_fmt_as_mo() -> None:
    assert printing.window(-1) == "1 month"
    assert printing.window(-3) == "3 months"
    assert printing.window(7 * DAY) == "7d"
    assert printing.duration(-2) == "2mo"


def _explained(context: dict[str, str], contacts: dict[str, list[float]]) -> dict[str, Any]:
    plan = compile_plan(dsl.load_checked(CASES_DIR / "good" / "calendar_months.rules"))
    now = at("2027-03-31T10:00:00")
    inputs = literal_inputs(plan, {}, [], now, contacts=contacts)
    request = DecideRequest("c1", context, limit=1, explain=True)
    decision, _ = decide(plan, request, inputs, decision_id="d-1", now=now, oracle=None)
    assert decision.explanation is not None
    return decision.explanation


def _fate(explanation: dict[str, Any], action: str) -> dict[str, Any]:
    found: dict[str, Any] = next(a for a in explanation["actions"] if a["action"] == action)
    return found


def test_explain_says_1_month_never_the_encoding() -> None:
    tip = _fate(
        _explained({"channel": "web"}, {"monthly_tip": [at("2027-02-28T10:30:00")]}), "monthly_tip"
    )
    assert (tip["reason"], tip["message"]) == ("cap", "contact cap 1 per 1mo reached (1 so far)")
    assert tip["details"] == {"limit": 1, "window": "1 month", "contacts": 1}
    sms = _fate(
        _explained({"channel": "sms"}, {"sms_offer": [at("2027-02-28T10:30:00")]}), "sms_offer"
    )
    assert sms["reason"] == "policy"
    assert sms["details"]["window"] == "1 month"
    assert "-1" not in sms["message"]


def test_why_not_probes_compute_now_minus_a_month_as_the_rules_do() -> None:
    plan = compile_plan(dsl.load_checked(CASES_DIR / "good" / "calendar_months.rules"))
    now = at("2027-03-31T10:00:00")
    inputs = literal_inputs(plan, {"renewed_at": "2027-02-28T10:30:00Z"}, [], now)
    request = DecideRequest("c1", {"channel": "app"}, limit=1, explain=True)
    decision, _ = decide(plan, request, inputs, decision_id="d-1", now=now, oracle=None)
    assert decision.explanation is not None
    got = _fate(decision.explanation, "renewal_call")
    assert got["condition"]["text"] == "profile.renewed_at < now() - 1mo"
    assert got["condition"]["values"] == {
        "profile.renewed_at": at("2027-02-28T10:30:00"),
        "now() - 1mo": at("2027-02-28T10:00:00"),  # not 30 days back (03-01 10:00)
    }

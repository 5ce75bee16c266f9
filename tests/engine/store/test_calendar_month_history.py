"""Caps, policies and contacts(…) of `1mo` on real Redis count calendar months.

`cap 1 per 1mo` and `contacts(channel sms within 1 month)` read counters whose window
is -1 (one calendar month, `engine.decision.window_span`): at 2027-03-31 10:00 they
count back to 2027-02-28 10:00, at 2028-03-31 to 2028-02-29 (a leap year), at
2027-03-01 to 2027-02-01. The write behind a decision keeps 31 days a month, so a
contact 30 days and 23 hours old survives a later write that trims the field.
"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
import redis
from support.store import DAY, run

from arbiter.engine.plan import Needs
from arbiter.engine.store import keys
from arbiter.engine.store.profiles import AFTER_DECISION_LUA, ProfileStore

COUNTERS = [("tip", -1), ("~channel:sms:-1", -1), ("~channel:sms:-2", -2)]
NEEDS = Needs((), (), tuple(COUNTERS), (), False)


def at(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


async def contact(s: ProfileStore, customer: str, decision_id: str, t: float) -> None:
    """What the decision log writes behind a decision that offered `tip` by SMS at `t`."""
    key_list, args = s.after_decision_command(customer, b"1-0", decision_id, DAY, COUNTERS, t)
    await s.redis.eval(AFTER_DECISION_LUA, len(key_list), *key_list, *args)


# (decision time, contact time, count within 1 month, count within 2 months)
TABLE = [
    ("2027-03-31T10:00:00", "2027-02-28T10:30:00", 1, 1),  # inside the month (30d 23h 30min)
    ("2027-03-31T10:00:00", "2027-02-28T10:00:00", 0, 1),  # exactly at its start: out
    ("2027-03-31T10:00:00", "2027-02-28T09:30:00", 0, 1),
    ("2028-03-31T10:00:00", "2028-02-29T10:30:00", 1, 1),  # leap year: back to 02-29
    ("2028-03-31T10:00:00", "2028-02-29T09:30:00", 0, 1),
    ("2027-03-01T10:00:00", "2027-01-31T12:00:00", 0, 1),  # 28d 22h: within 30 days, not a month
    ("2027-03-01T10:00:00", "2027-02-01T10:30:00", 1, 1),
    ("2027-05-31T10:00:00", "2027-04-30T10:30:00", 1, 1),  # 30-day April
    ("2027-05-31T10:00:00", "2027-03-31T09:30:00", 0, 0),  # two months back: 03-31 10:00
    ("2027-05-31T10:00:00", "2027-03-31T10:30:00", 0, 1),
]


@pytest.mark.parametrize(("now", "when", "one", "two"), TABLE)
def test_month_counters_count_calendar_months(
    redis_url: str, now: str, when: str, one: int, two: int
) -> None:
    customer = f"cal-{now}-{when}"

    async def body(s: ProfileStore) -> dict[str, int]:
        await contact(s, customer, "past", at(when))
        return (await s.fetch(customer, NEEDS, at(now))).caps

    assert run(redis_url, body) == {"tip": one, "~channel:sms:-1": one, "~channel:sms:-2": two}


def test_a_later_write_keeps_a_contact_the_longest_month_still_sees(redis_url: str) -> None:
    """A write trims what its counters can no longer see: a month is kept 31 days."""

    async def body(s: ProfileStore) -> dict[str, int]:
        await contact(s, "keep", "first", at("2027-02-28T10:30:00"))
        # 30 days 23 hours later: a 30-day keep would drop the first contact here.
        await contact(s, "keep", "second", at("2027-03-31T09:30:00"))
        return (await s.fetch("keep", NEEDS, at("2027-03-31T10:00:00"))).caps

    assert run(redis_url, body) == {"tip": 2, "~channel:sms:-1": 2, "~channel:sms:-2": 2}
    client = redis.Redis.from_url(redis_url)
    try:
        # The hash lives as long as two calendar months can reach: 62 days.
        assert client.ttl(keys.contact_history("keep")) > 62 * DAY
    finally:
        client.close()

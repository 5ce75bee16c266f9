"""engine.log.experiment_reads.load_report with since/until: only that part of the streams is read.

Decisions are made by engine.decision.decide over three days and appended
to the real decision stream (real Redis) under ids of their time, as the
write-behind log does; purchases go to the outcome stream the same way.
"""

from __future__ import annotations

from typing import Any

import pytest
from msgspec import DecodeError
from support.redis import run_with_client as run

from arbiter import dsl
from arbiter.engine.codegen.compiler import compile_plan
from arbiter.engine.decision.decide import assign_variant, decide
from arbiter.engine.decision.oracle import LiveOracle
from arbiter.engine.log.experiment_reads import LOG_SLACK_S, load_report
from arbiter.engine.plan import Plan
from arbiter.engine.records import ENCODER, DecideRequest, Inputs
from arbiter.engine.store import keys
from arbiter.engine.store.client import AsyncRedisClient
from arbiter.engine.store.profiles import Event, outcome_fields

RULES = """ruleset promo
context { page: string }
event purchase { amount: number }
action banner_a { value 1 }
action banner_b { value 1 }
if experiment.hero == a { when true offer banner_a } else { when true offer banner_b }
experiment hero { a: 50%, b: 50% } goal purchase within 1h value amount
"""
D0 = 1.7e9
DAY = 86400.0
PER_DAY = 30


@pytest.fixture(scope="module")
def plan() -> Plan:
    return compile_plan(dsl.check(dsl.parse(RULES, "promo.rules")))


def buys(i: int) -> bool:
    return i % 3 == 0


async def three_days(redis: AsyncRedisClient, plan: Plan) -> list[tuple[float, str, bool]]:
    """30 customers a day for three days; a third buy 10 minutes after their decision.

    Returns (decision time, customer, bought) per customer.
    """
    made: list[tuple[float, str, bool]] = []
    entries: list[tuple[float, str, dict[bytes, bytes]]] = []
    for day in range(3):
        for i in range(PER_DAY):
            ts = D0 + day * DAY + 60 * i
            cid = f"d{day}c{i}"
            _, record = decide(
                plan,
                DecideRequest(cid, {"page": "home"}),
                Inputs(),
                decision_id=f"{cid}-1",
                now=ts,
                oracle=LiveOracle({}, {}),
            )
            # The log stores a decision a little after it is made.
            entries.append((ts + 0.05, keys.DECISION_STREAM, {b"r": ENCODER.encode(record)}))
            if buys(i):
                event = Event(cid, "purchase", ts + 600, {"amount": 10 + i})
                entries.append((ts + 600.01, keys.OUTCOME_STREAM, outcome_fields(event)))
            made.append((ts, cid, buys(i)))
    for seq, (arrived, stream, fields) in enumerate(sorted(entries, key=lambda e: e[0])):
        await redis.xadd(stream, fields, id=f"{int(arrived * 1000)}-{seq}")  # type: ignore[arg-type]
    return made


def expected(plan: Plan, made: list[tuple[float, str, bool]], low: float, high: float) -> Any:
    out = {"a": [0, 0], "b": [0, 0]}
    for ts, cid, bought in made:
        if low <= ts <= high:
            group = assign_variant(plan, "hero", cid)
            out[group][0] += 1
            out[group][1] += bought
    return out


def counts(report: Any) -> dict[str, list[int]]:
    return {g.name: [g.customers, g.conversions] for g in report.groups}


def test_a_range_counts_the_decisions_made_in_it(redis_url: str, plan: Plan) -> None:
    async def body(redis: AsyncRedisClient) -> None:
        made = await three_days(redis, plan)
        whole = await load_report(redis, plan.checked, "hero", min_customers=1)
        assert whole.decisions_read == 3 * PER_DAY
        assert counts(whole) == expected(plan, made, -1, 2e9)
        # Day 1 only, to the second.
        since, until = D0 + DAY, D0 + DAY + 60 * (PER_DAY - 1)
        calls: list[tuple[str, float]] = []
        day1 = await load_report(
            redis,
            plan.checked,
            "hero",
            since=since,
            until=until,
            min_customers=1,
            progress=lambda label, done: calls.append((label, done)),
        )
        assert day1.decisions_read == PER_DAY
        assert counts(day1) == expected(plan, made, since, until)
        assert (day1.since, day1.until) == (since, until)
        # A decision exactly at `until` is in; one a second later is not.
        shorter = await load_report(
            redis, plan.checked, "hero", since=since, until=until - 1, min_customers=1
        )
        assert shorter.decisions_read == PER_DAY - 1
        # Open ends: from day 2 on; up to the end of day 0.
        late = await load_report(redis, plan.checked, "hero", since=D0 + 2 * DAY, min_customers=1)
        assert counts(late) == expected(plan, made, D0 + 2 * DAY, 2e9)
        early = await load_report(redis, plan.checked, "hero", until=D0 + DAY / 2, min_customers=1)
        assert counts(early) == expected(plan, made, -1, D0 + DAY / 2)
        # Progress per stream, in order, ending at 1.
        for label in ("decisions", "events"):
            mine = [done for what, done in calls if what == label]
            assert mine and mine == sorted(mine) and mine[-1] == 1.0, (label, calls)

    run(redis_url, body)


def test_entries_outside_the_range_are_not_read(redis_url: str, plan: Plan) -> None:
    async def body(redis: AsyncRedisClient) -> None:
        # An undecodable decision entry a day before the first decision: reading it fails.
        await redis.xadd(
            keys.DECISION_STREAM,
            {b"r": b'{"ruleset": "promo", broken'},
            id=f"{int((D0 - DAY) * 1000)}-0",
        )
        made = await three_days(redis, plan)
        with pytest.raises(DecodeError):
            await load_report(redis, plan.checked, "hero")  # the whole stream: it is read
        since, until = D0 + DAY, D0 + 2 * DAY - 1
        # A purchase that arrives long after the range's goal windows end (a backfill,
        # timed inside a day-1 customer's window) is past what a range reads.
        buyer = next(cid for ts, cid, bought in made if ts == since)
        late = Event(buyer, "purchase", since + 60, {"amount": 5})
        arrives = until + 3600 + LOG_SLACK_S + 1
        await redis.xadd(keys.OUTCOME_STREAM, outcome_fields(late), id=f"{int(arrives * 1000)}-0")  # type: ignore[arg-type]
        report = await load_report(
            redis, plan.checked, "hero", since=since, until=until, min_customers=1
        )
        assert report.decisions_read == PER_DAY
        assert counts(report) == expected(plan, made, since, until)
        group = assign_variant(plan, "hero", buyer)
        rewards = {g.name: g.mean_reward * g.customers for g in report.groups}
        assert rewards[group] == pytest.approx(
            sum(
                10 + i
                for i in range(PER_DAY)
                if buys(i) and assign_variant(plan, "hero", f"d1c{i}") == group
            )
        )

    run(redis_url, body)

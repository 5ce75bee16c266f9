"""Grouped series (a string property counted per value) and calendar-month windows on real Redis.

Every figure is compared with the scenario runner's computation of the same
events (`literal_inputs.aggregate`), so the store and `arbiter test` agree:
at the windows' edges, past the per-bucket cap of values, after an identity
merge, on a cluster; and erasure leaves nothing of them behind.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime

import pytest
from support.paths import CASES_DIR
from support.store import DAY, HOUR, ev, run

from arbiter import dsl
from arbiter.engine.codegen.compiler import compile_plan
from arbiter.engine.decision import literal_inputs
from arbiter.engine.decision.literal_inputs import LiteralEvent
from arbiter.engine.decision.window_span import bucket_range, window_start
from arbiter.engine.plan import AggregateSpec
from arbiter.engine.store import keys, series
from arbiter.engine.store.profiles import Event, ProfileStore, grouped_properties
from arbiter.engine.store.window_merge import merge_customer_windows

NOW = datetime(2026, 3, 10, 12, 30, tzinfo=UTC).timestamp()
GROUPED = frozenset({"view.category"})
SPECS = [
    AggregateSpec("max_count", "view", "category", DAY),
    AggregateSpec("max_count", "view", "category", HOUR),
    AggregateSpec("distinct", "view", "category", 30 * DAY),
    AggregateSpec("distinct", "view", "category", 7 * DAY),
    AggregateSpec("max_count", "view", "category", -1),  # one calendar month
    AggregateSpec("count", "view", None, DAY),
]


def add(url: str, events: list[Event], now: float = NOW) -> int:
    return run(url, lambda s: s.add_events(events, now=now, grouped=GROUPED))


def read(url: str, customer: str, now: float = NOW) -> list[float | None]:
    values = run(url, lambda s: s.aggregates(customer, SPECS, now))
    return [values[spec.key] for spec in SPECS]


def expected(events: list[Event], now: float = NOW) -> list[float | None]:
    literal = [
        LiteralEvent(
            e.type,
            e.ts,
            {},
            {k: v for k, v in e.properties.items() if isinstance(v, str)},
        )
        for e in events
    ]
    return [literal_inputs.aggregate(literal, spec, now) for spec in SPECS]


def views(customer: str, *pairs: tuple[str, float]) -> list[Event]:
    return [ev(customer, "view", NOW - ago, category=value) for value, ago in pairs]


def test_the_same_category_counted_per_value(redis_url: str) -> None:
    events = views("c", ("shoes", HOUR), ("shoes", 5 * HOUR), ("bags", 6 * HOUR))
    events += views("c", ("shoes", 20 * HOUR), ("hats", 10 * DAY))
    assert add(redis_url, events) == 5
    got = read(redis_url, "c")
    assert got == expected(events)
    assert got == [3.0, 1.0, 3.0, 2.0, 3.0, 4.0]


def test_window_edges_match_the_scenario_runner(redis_url: str) -> None:
    # 12:30 now: the 24h window starts in the 12:00 bucket of yesterday (counted whole),
    # the hour window in the 11:00 bucket; 30d starts on the day of 02-08.
    events = views(
        "e",
        ("shoes", 24 * HOUR + 20 * 60),  # 12:10 yesterday: the old edge's bucket
        ("shoes", 24 * HOUR + 40 * 60),  # 11:50 yesterday: outside
        ("shoes", HOUR + 25 * 60),  # 11:05 today: the hour window's first bucket
        ("bags", HOUR + 35 * 60),  # 10:55: outside the hour
        ("hats", 30 * DAY + 12 * HOUR),  # 02-08 00:30: first day of the 30 days
        ("belts", 31 * DAY),  # 02-07: outside the 30 days, inside the calendar month
    )
    assert add(redis_url, events) == 6
    got = read(redis_url, "e")
    assert got == expected(events)
    assert got[:3] == [2.0, 1.0, 3.0]
    assert (
        got[4] == 3.0
    )  # a month back from 03-10 is 02-10: three shoes; hats (02-08) and belts (02-07) are before it


def test_past_the_cap_a_bucket_overflows_and_never_under_counts(redis_url: str) -> None:
    cap = series.GROUP_CAP
    assert cap == literal_inputs.GROUP_CAP
    # One hour bucket: `cap` categories once each, then three views of a new category.
    events = views("o", *((f"cat{i}", 10 * 60) for i in range(cap)))
    events += views("o", ("latecomer", 5 * 60), ("latecomer", 4 * 60), ("latecomer", 3 * 60))
    events += views("o", ("cat0", 2 * 60))  # a kept value still counts as itself
    assert add(redis_url, events) == cap + 4
    got = read(redis_url, "o")
    assert got == expected(events)
    # The latecomer's 3 views went to the overflow: the largest count is at most 2 + 3,
    # never less than the true 3; distinct values: cap kept + 3 overflow views >= cap + 1.
    assert got[0] == 2 + 3
    assert got[2] == cap + 3
    blob = run(redis_url, lambda s: s.redis.hget(keys.windows("o"), "h:view/category"))
    records = series.decode("h:view/category", blob)
    assert [len(keys_) for keys_ in records.values()] == [cap + 1]  # kept + the overflow
    assert next(iter(records.values()))[series.OVERFLOW] == 3


def test_random_histories_agree_with_the_scenario_runner(redis_url: str) -> None:
    rng = random.Random(9)
    categories = [f"c{i}" for i in range(40)]
    events = [
        ev("r", "view", NOW - rng.uniform(0, 45 * DAY), category=rng.choice(categories))
        for _ in range(400)
    ]
    assert add(redis_url, events) == 400
    assert read(redis_url, "r") == expected(events)


def test_only_grouped_properties_are_stored(redis_url: str) -> None:
    run(redis_url, lambda s: s.add_events(views("n", ("shoes", HOUR)), now=NOW))
    fields = run(redis_url, lambda s: s.redis.hkeys(keys.windows("n")))
    assert sorted(fields) == [b"d:view", b"h:view", b"l", b"x"]  # l: its last-seen time
    assert read(redis_url, "n")[0] == 0.0


def test_merge_adds_values_and_keeps_the_cap(redis_url: str) -> None:
    anon = views("anon", ("shoes", HOUR), ("shoes", 2 * HOUR))
    known = views("known", ("shoes", 3 * HOUR), ("bags", 3 * HOUR))
    add(redis_url, anon + known)

    async def merge(store: ProfileStore) -> int:
        return await merge_customer_windows(store.redis, "anon", "known")

    assert run(redis_url, merge) > 0
    assert read(redis_url, "known") == expected(anon + known)
    assert read(redis_url, "known")[0] == 3.0


def test_erasure_deletes_grouped_series(redis_url: str) -> None:
    add(redis_url, views("gone", ("shoes", HOUR), ("bags", HOUR)))
    assert run(redis_url, lambda s: s.redis.hexists(keys.windows("gone"), "h:view/category"))
    assert run(redis_url, lambda s: s.erase("gone")) > 0
    assert run(redis_url, lambda s: s.redis.keys("*gone*")) == []
    assert read(redis_url, "gone")[:3] == [0.0, 0.0, 0.0]


def test_on_a_cluster(redis_cluster_url: str) -> None:
    events = views("k1", ("shoes", HOUR), ("shoes", 2 * HOUR), ("shoes", 3 * HOUR))
    events += views("k2", ("a", HOUR), ("b", HOUR))
    assert add(redis_cluster_url, events) == 5
    assert read(redis_cluster_url, "k1") == expected(events[:3])
    assert read(redis_cluster_url, "k2") == expected(events[3:])
    assert run(redis_cluster_url, lambda s: s.erase("k1")) > 0
    assert read(redis_cluster_url, "k1")[0] == 0.0


@pytest.mark.parametrize(
    ("now", "start"),
    [
        ("2026-03-31T10:00:00", "2026-02-28T10:00:00"),  # clamped to February's end
        ("2024-03-31T10:00:00", "2024-02-29T10:00:00"),  # a leap year
        ("2026-01-15T00:00:00", "2025-12-15T00:00:00"),  # across the year
        ("2026-05-31T23:30:00", "2026-04-30T23:30:00"),  # 30-day month
        # UTC: Europe's clocks moved on 03-29, the window did not (same UTC time of day).
        ("2026-04-15T10:00:00", "2026-03-15T10:00:00"),
        ("2026-03-01T00:00:00", "2026-02-01T00:00:00"),  # a month at midnight of its first day
    ],
)
def test_a_month_window_starts_a_calendar_month_back(now: str, start: str) -> None:
    at = datetime.fromisoformat(now).replace(tzinfo=UTC).timestamp()
    begin = datetime.fromisoformat(start).replace(tzinfo=UTC).timestamp()
    assert window_start(-1, at) == begin
    assert bucket_range(-1, at) == (DAY, int(begin // DAY), int(at // DAY))


def test_grouped_properties_of_plans() -> None:
    plan = compile_plan(dsl.load_checked(CASES_DIR / "good" / "grouped_windows.rules"))
    assert grouped_properties([plan.needs]) == {"product_view.category"}

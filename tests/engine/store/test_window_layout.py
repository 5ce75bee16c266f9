"""The one-hash window layout (engine.store.series): edges, pruning, read cost, merge, migration.

`test_profiles.py` pins what a window counts; this pins what the layout adds:
records aged out of a series are dropped exactly at the oldest bucket a window
can still read, a read is the same few commands whatever the windows' lengths,
and data moves between customers (merge) and from layout 1 (migrate) without
a count lost or doubled.
"""

from __future__ import annotations

import random
import time
from collections.abc import Iterator

import pytest
import redis
from support.legacy_windows import legacy_ingest
from support.redis import run_with_client
from support.store import DAY, HOUR, aggregates, count, ev, hour_floor, ingest, run

from arbiter.engine.plan import AggregateSpec, Needs
from arbiter.engine.store import keys, series, windows
from arbiter.engine.store.client import connect_sync
from arbiter.engine.store.last_seen_migration import migrate_last_seen
from arbiter.engine.store.profiles import ProfileStore
from arbiter.engine.store.window_merge import merge_customer_windows
from arbiter.engine.store.window_migration import migrate_windows
from arbiter.server.cli.main import main


@pytest.fixture
def sync_redis(redis_url: str) -> Iterator[redis.Redis]:
    client = connect_sync(redis_url)
    assert isinstance(client, redis.Redis)
    yield client
    client.close()


SPECS = [
    count("view", HOUR),
    count("view", DAY),
    count("view", 7 * DAY),
    count("view", 30 * DAY),
    count("view", 365 * DAY),
    count("buy", 7 * DAY),
    AggregateSpec("sum", "buy", "amount", DAY),
    AggregateSpec("sum", "buy", "amount", 90 * DAY),
    AggregateSpec("avg", "buy", "amount", 30 * DAY),
    AggregateSpec("min", "buy", "amount", 7 * DAY),
    AggregateSpec("max", "buy", "amount", 365 * DAY),
    AggregateSpec("last", "buy", None, 0),
]


def history(customer: str, now: float, n: int, seed: int) -> list[tuple[str, str, float, dict]]:
    rng = random.Random(seed)
    out: list[tuple[str, str, float, dict]] = []
    for _ in range(n):
        ts = now - rng.uniform(0, 380 * DAY)
        if rng.random() < 0.7:
            out.append((customer, "view", ts, {}))
        else:
            out.append((customer, "buy", ts, {"amount": float(rng.randint(1, 500))}))
    return out


def as_events(rows: list[tuple[str, str, float, dict]], customer: str | None = None) -> list:
    return [ev(customer or c, t, ts, None, **p) for c, t, ts, p in rows]


# ------------------------------------------------------------------ edges


def test_pruning_keeps_the_oldest_readable_hour_and_drops_the_one_before(
    redis_url: str, sync_redis: redis.Redis
) -> None:
    now = hour_floor(time.time()) + 1800
    edge_hour = int((now - 7 * DAY) // HOUR)
    ingest(
        redis_url,
        [
            ev("c", "view", edge_hour * HOUR + 5),  # the hour holding now-7d: still readable
            ev("c", "view", edge_hour * HOUR - 5),  # the hour before: no window reads it
        ],
        now - 2 * HOUR,
    )
    # A later write to the series drops what has aged out, and only that.
    ingest(redis_url, [ev("c", "view", now - 60)], now)
    blob = sync_redis.hget(keys.windows("c"), "h:view")
    assert blob is not None
    assert series.decode("h:view", blob) == {edge_hour: 1, int((now - 60) // HOUR): 1}
    assert aggregates(redis_url, "c", [count("view", 7 * DAY)], now) == [2]


def test_daily_records_end_at_the_longest_window(redis_url: str, sync_redis: redis.Redis) -> None:
    now = time.time()
    oldest_day = int((now - windows.MAX_WINDOW) // DAY)
    ingest(
        redis_url,
        [
            ev("c", "view", oldest_day * DAY + 10),  # readable by a 400-day window: kept
            ev("c", "view", oldest_day * DAY - 10),  # a day older: never written
            ev("c", "view", now - 3 * DAY),
        ],
        now,
    )
    blob = sync_redis.hget(keys.windows("c"), "d:view")
    assert blob is not None
    assert sorted(series.decode("d:view", blob)) == [oldest_day, int((now - 3 * DAY) // DAY)]
    assert aggregates(redis_url, "c", [count("view", windows.MAX_WINDOW)], now) == [2]
    # Hourly records only for what a 7-day window can read.
    hourly = sync_redis.hget(keys.windows("c"), "h:view")
    assert hourly is not None and list(series.decode("h:view", hourly)) == [
        int((now - 3 * DAY) // HOUR)
    ]


def test_one_record_per_bucket_sorted_whatever_the_arrival_order(
    redis_url: str, sync_redis: redis.Redis
) -> None:
    now = time.time()
    stamps = [now - random.Random(3).uniform(0, 6 * DAY) for _ in range(200)]
    events = [ev("c", "buy", t, None, amount=float(i % 7)) for i, t in enumerate(stamps)]
    ingest(redis_url, events, now)
    for prefix, size in (("h:", HOUR), ("d:", DAY)):
        blob = sync_redis.hget(keys.windows("c"), prefix + "buy.amount")
        assert blob is not None
        records = series.props(blob)
        buckets = [r[0] for r in records]
        assert buckets == sorted(set(buckets))
        want: dict[int, list[float]] = {}
        for i, t in enumerate(stamps):
            want.setdefault(int(t // size), []).append(float(i % 7))
        assert {r[0]: r[1:] for r in records} == {
            b: (len(v), sum(v), min(v), max(v)) for b, v in want.items()
        }


def test_a_read_is_the_same_commands_whatever_the_window_lengths(redis_url: str) -> None:
    now = time.time()
    ingest(redis_url, as_events(history("c", now, 300, 1)), now)

    async def commands(s: ProfileStore, window: int) -> dict[str, int]:
        needs = Needs((), (count("view", window), count("buy", window)), (), (), False)
        await s.fetch("c", needs, now)  # the script is loaded
        before = await s.redis.info("commandstats")
        await s.fetch("c", needs, now)
        after = await s.redis.info("commandstats")
        return {
            k: after[k]["calls"] - before.get(k, {"calls": 0})["calls"]
            for k in after
            if k != "cmdstat_info" and after[k]["calls"] != before.get(k, {"calls": 0})["calls"]
        }

    short = run(redis_url, lambda s: commands(s, HOUR))
    long = run(redis_url, lambda s: commands(s, 365 * DAY))
    # The GET is the identity link check (engine.store.identity), sent with the reads.
    assert (
        short
        == long
        == {
            "cmdstat_get": 1,
            "cmdstat_hgetall": 1,
            "cmdstat_hmget": 1,
        }
    )


# ------------------------------------------------------------------ merge


def test_merge_adds_one_customers_windows_to_anothers(
    redis_url: str, sync_redis: redis.Redis
) -> None:
    now = time.time()
    anon, known = history("anon", now, 150, 4), history("known", now, 150, 5)
    ingest(redis_url, as_events(anon), now)
    ingest(redis_url, as_events(known), now)
    ingest(redis_url, as_events(anon + known, "both"), now)
    source = sync_redis.hgetall(keys.windows("anon"))
    merged = run_with_client(redis_url, lambda r: merge_customer_windows(r, "anon", "known"))
    assert merged == 6  # h:/d: of view, buy and buy.amount
    got = aggregates(redis_url, "known", SPECS, now)
    assert got == pytest.approx(aggregates(redis_url, "both", SPECS, now))
    assert sync_redis.hgetall(keys.windows("known")) == sync_redis.hgetall(keys.windows("both"))
    # Last-seen times are a field of the window hash (layout 3): compared with it above.
    seen = windows.last_seen_times(sync_redis.hget(keys.windows("known"), "l"))
    assert set(seen) == {"view", "buy"}
    assert sync_redis.ttl(keys.windows("known")) > 0
    # The source is left as it was; merging nothing is nothing.
    assert sync_redis.hgetall(keys.windows("anon")) == source
    assert run_with_client(redis_url, lambda r: merge_customer_windows(r, "nobody", "known")) == 0


# -------------------------------------------------------------- migration


def test_migrate_converts_layout_1_exactly_once(redis_url: str, sync_redis: redis.Redis) -> None:
    now = time.time()
    # A view two days ago: the seeded history's newest event is 7.05 days old, whose
    # hourly hash layout 1 no longer writes during a few minutes of each day (its
    # expiry, a function of the day, has passed), so without it the test failed then.
    rows = [*history("old", now, 250, 6), ("old", "view", now - 2 * DAY, {})]
    legacy_ingest(sync_redis, rows, now)
    # The same events through today's layout, for comparison.
    ingest(redis_url, as_events(rows, "new"), now)
    # Events ingested after the upgrade and before the migration add to the old ones.
    late = [("old", "view", now - 30, {}), ("old", "buy", now - 20, {"amount": 3.0})]
    ingest(redis_url, as_events(late), now)
    ingest(redis_url, as_events(late, "new"), now)
    assert any(b":eh:" in k for k in sync_redis.scan_iter(match=keys.customer_pattern("old")))

    report = run_with_client(redis_url, migrate_windows)
    # d:view, d:buy, d:buy.amount, h:view: this history has no purchase in its last week.
    assert (report.customers, report.series) == (1, 4)
    assert report.old_keys >= 10
    left = [k for k in sync_redis.scan_iter(match=keys.customer_pattern("old"))]
    assert sorted(k.decode().rsplit(":", 1)[1] for k in left) == ["seen", "w"]
    # Layout 1 kept last-seen times in a hash of their own, as layout 2 did: `arbiter
    # migrate` moves them next (engine.store.last_seen_migration).
    seen = run_with_client(redis_url, migrate_last_seen)
    assert (seen.customers, seen.times) == (1, 2)
    left = [k for k in sync_redis.scan_iter(match=keys.customer_pattern("old"))]
    assert [k.decode().rsplit(":", 1)[1] for k in left] == ["w"]

    def seen_of(who: str) -> dict[str, float]:
        return windows.last_seen_times(sync_redis.hget(keys.windows(who), "l"))

    assert seen_of("old") == seen_of("new") != {}
    assert aggregates(redis_url, "old", SPECS, now) == pytest.approx(
        aggregates(redis_url, "new", SPECS, now)
    )
    assert sync_redis.ttl(keys.windows("old")) == pytest.approx(
        sync_redis.ttl(keys.windows("new")), abs=2
    )
    # Running it again finds nothing: nothing counted twice.
    again = run_with_client(redis_url, migrate_windows)
    assert (again.customers, again.series) == (0, 0)
    assert aggregates(redis_url, "old", SPECS, now) == pytest.approx(
        aggregates(redis_url, "new", SPECS, now)
    )


def test_arbiter_migrate_command(
    redis_url: str,
    sync_redis: redis.Redis,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    now = time.time()
    legacy_ingest(sync_redis, history("a", now, 20, 7) + history("b", now, 20, 8), now)
    monkeypatch.setenv("ARBITER_REDIS_URL", redis_url)
    assert main(["migrate", "--dry-run"]) == 0
    assert "would convert the event windows of 2 customers" in capsys.readouterr().out
    assert main(["migrate"]) == 0
    assert "converted the event windows of 2 customers" in capsys.readouterr().out
    assert main(["migrate"]) == 0
    assert "of 0 customers" in capsys.readouterr().out


def test_last_seen_times_are_one_field_newest_per_type_sorted(
    redis_url: str, sync_redis: redis.Redis
) -> None:
    """Layout 3: every type's newest time in the window hash's `l` field, in name order
    whatever the arrival order, so equal histories are equal bytes."""
    now = time.time()
    long_name = "e" * 300  # longer than a byte can count
    events = [
        ev("c", "view", now - 50),
        ev("c", "buy", now - 10),
        ev("c", "view", now - 100),  # older: ignored
        ev("c", long_name, now - 5),
        ev("c", "add", now - 500 * DAY),  # too old for any bucket: last-seen only
    ]
    ingest(redis_url, events, now)
    blob = sync_redis.hget(keys.windows("c"), windows.LAST_SEEN_FIELD)
    expected = {"view": now - 50, "buy": now - 10, long_name: now - 5, "add": now - 500 * DAY}
    assert blob == windows.pack_last_seen(expected)
    assert windows.last_seen_times(blob) == expected
    assert list(windows.last_seen_times(blob)) == sorted(expected)

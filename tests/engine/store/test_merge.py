"""engine.store.merge: the window-layout part of identity stitching, on real Redis.

These tests pin what a window layout must keep: every key that ingestion
writes (and every layout-1 hash `arbiter migrate` has not converted yet) is
found by `window_sources`, and adding one id's keys into another's sums
counts and sums, keeps the smaller minimum and the larger maximum, the newer
last-seen, the union of event ids, the later expiry, and counts a key once
however often it is added.
"""

from __future__ import annotations

import time
from typing import Any

import pytest
import redis
from support.legacy_windows import legacy_ingest
from support.store import DAY, HOUR, aggregates, count, ev, ingest

from arbiter.engine.plan import AggregateSpec
from arbiter.engine.store import keys, merge, series, windows
from arbiter.engine.store.client import connect_sync


def sync(url: str) -> redis.Redis:
    client = connect_sync(url)
    assert isinstance(client, redis.Redis)
    return client


AGES = [0, 30, HOUR, 5 * HOUR, DAY, 6 * DAY, 7 * DAY + 23 * HOUR, 9 * DAY, 40 * DAY]
AGES += [100 * DAY, 300 * DAY, 399 * DAY, 430 * DAY]


def test_window_sources_name_every_key_ingestion_writes(redis_url: str) -> None:
    now = time.time()
    events = [ev("a", "view", now - age, f"e{i}", price=1.0) for i, age in enumerate(AGES)]
    events.append(ev("a", "view", now + 240, "future"))  # the API takes 5 minutes of skew
    ingest(redis_url, events, now)
    # And what layout 1 wrote before the upgrade, not converted yet.
    client = sync(redis_url)
    try:
        legacy_ingest(client, [("a", "buy", now - age, {"amount": 2.0}) for age in AGES], now)
        legacy_ingest(client, [("a", "buy", now + 240, {})], now)
        written = {k.decode() for k in client.scan_iter(match=keys.customer_pattern("a"))}
    finally:
        client.close()
    listed = {key for key, _ in merge.window_sources("a", now)}
    assert written and written <= listed
    assert keys.windows("a") in written
    assert any(":eh:" in k for k in written) and any(":ed:" in k for k in written)
    # Nothing listed that no window could read any more: the list stays short.
    assert len(listed) < 40


def apply(client: redis.Redis, source: str, kind: str, now: float) -> Any:
    pipe = client.pipeline(transaction=False)
    merge.read_source(pipe, source, kind)
    content, pttl = pipe.execute()
    key_list, args = merge.merge_command("c", "a", source, kind, content, pttl, int(now * 1000))
    return client.eval(merge.MERGE_WINDOWS_LUA, len(key_list), *key_list, *args)


SPECS = [
    count("buy", HOUR),
    count("buy", 7 * DAY),
    count("view", 400 * DAY),
    AggregateSpec("sum", "buy", "amount", DAY),
    AggregateSpec("min", "buy", "amount", 30 * DAY),
    AggregateSpec("max", "buy", "amount", 30 * DAY),
    AggregateSpec("avg", "buy", "amount", 400 * DAY),
]


def test_window_hashes_add_up_once_and_keep_the_later_expiry(redis_url: str) -> None:
    now = time.time()
    a = [
        ev("a", "buy", now - HOUR, "1", amount=5.0),
        ev("a", "buy", now - HOUR, "2", amount=50.0),
        ev("a", "view", now - 300 * DAY, "5"),
    ]
    c = [ev("c", "buy", now - HOUR, "3", amount=7.5), ev("c", "view", now - 20 * DAY, "4")]
    ingest(redis_url, a + c, now)
    ingest(redis_url, [ev("ref", e.type, e.ts, e.event_id, **e.properties) for e in a + c], now)
    client = sync(redis_url)
    try:
        source, dest = keys.windows("a"), keys.windows("c")
        expected_expiry = client.ttl(source)
        assert apply(client, source, "series", now) == 1
        assert apply(client, source, "series", now) == 0  # a retry counts nothing
        hour = int((now - HOUR) // HOUR)
        assert series.decode("h:buy", client.hget(dest, "h:buy") or b"") == {hour: 3}
        n, total, lo, hi = series.decode("h:buy.amount", client.hget(dest, "h:buy.amount") or b"")[
            hour
        ]
        assert (n, total, lo, hi) == (3, 62.5, 5.0, 50.0)
        assert client.hgetall(dest) == client.hgetall(keys.windows("ref"))
        assert abs(client.ttl(dest) - expected_expiry) <= 2
        marks = keys.merge_marks("c", "a")
        assert client.smembers(marks) == {b"w"}
        assert client.ttl(marks) >= expected_expiry  # the mark outlives what it stands for
    finally:
        client.close()
    assert aggregates(redis_url, "c", SPECS, now) == aggregates(redis_url, "ref", SPECS, now)


def test_layout_1_hashes_are_converted_on_the_way_in_once(redis_url: str) -> None:
    now = time.time()
    old = [("a", "buy", now - age, {"amount": float(i + 1)}) for i, age in enumerate(AGES)]
    old += [("a", "view", now - age, {}) for age in AGES[::2]]
    newer = [ev("c", "buy", now - 2 * HOUR, None, amount=4.0), ev("c", "view", now - 50 * DAY)]
    ingest(redis_url, newer, now)
    ingest(redis_url, [ev("ref", t, ts, None, **p) for _, t, ts, p in old], now)
    ingest(redis_url, [ev("ref", e.type, e.ts, None, **e.properties) for e in newer], now)
    client = sync(redis_url)
    try:
        legacy_ingest(client, old, now)
        sources = [(k, kind) for k, kind in merge.window_sources("a", now) if kind in ("h", "d")]
        found = [(k, kind) for k, kind in sources if client.exists(k)]
        assert {kind for _, kind in found} == {"h", "d"}
        for key, kind in found:
            assert apply(client, key, kind, now) == 1
        for key, kind in found:
            assert apply(client, key, kind, now) == 0  # retried: nothing counted twice
        # Marked under layout 1's own names ("eh:<day>", "ed:<block>").
        marks = {m.decode() for m in client.smembers(keys.merge_marks("c", "a"))}
        assert marks == {k.split("}:", 1)[1] for k, _ in found}
        ttl, ref_ttl = client.ttl(keys.windows("c")), client.ttl(keys.windows("ref"))
        assert ttl == pytest.approx(ref_ttl, abs=2)
    finally:
        client.close()
    got = aggregates(redis_url, "c", SPECS, now)
    assert got == pytest.approx(aggregates(redis_url, "ref", SPECS, now))
    assert got[1] == 7  # purchases within 7 days: six anonymous (layout 1), one known


def last_seen_of(client: redis.Redis, customer: str) -> dict[str, float]:
    return windows.last_seen_times(client.hget(keys.windows(customer), windows.LAST_SEEN_FIELD))


def test_a_layout_2_last_seen_hash_goes_into_the_window_hash_keeping_the_newer(
    redis_url: str,
) -> None:
    """An anonymous id not yet converted by `arbiter migrate` (window layout 2) still has its
    own last-seen hash: the merge moves it into the customer's window hash."""
    now = time.time()
    ingest(redis_url, [ev("c", "buy", now - DAY), ev("c", "view", now - 10 * DAY)], now)
    client = sync(redis_url)
    try:
        old = keys.last_seen("a")
        client.hset(old, mapping={"buy": repr(now - HOUR), "view": repr(now - 30 * DAY)})
        client.expire(old, windows.LAST_SEEN_TTL + DAY)  # later than the customer's hash
        assert apply(client, old, "seen", now) == 1
        assert last_seen_of(client, "c") == {"buy": now - HOUR, "view": now - 10 * DAY}
        assert client.ttl(keys.windows("c")) == pytest.approx(windows.LAST_SEEN_TTL + DAY, abs=2)
        assert apply(client, old, "seen", now) == 1  # again: the same state
        assert last_seen_of(client, "c") == {"buy": now - HOUR, "view": now - 10 * DAY}
    finally:
        client.close()


def test_last_seen_keeps_the_newer_and_event_ids_unite(redis_url: str) -> None:
    now = time.time()
    ingest(
        redis_url,
        [
            ev("a", "buy", now - HOUR, "x"),
            ev("a", "view", now - 3 * DAY, "y"),
            ev("c", "buy", now - DAY, "z"),
            ev("c", "view", now - 10 * DAY, "y"),
        ],
        now,
    )
    client = sync(redis_url)
    try:
        # Last-seen times are a field of the window hash (layout 3): merged with its series.
        assert apply(client, keys.windows("a"), "series", now) == 1
        assert apply(client, keys.event_ids("a"), "eids", now) == 1
        assert last_seen_of(client, "c") == {"buy": now - HOUR, "view": now - 3 * DAY}
        ids = client.zrange(keys.event_ids("c"), 0, -1)
        assert sorted(ids) == [b"x", b"y", b"z"]
        # Applied again: the same state (max and union are idempotent).
        assert apply(client, keys.event_ids("a"), "eids", now) == 1
        assert client.zcard(keys.event_ids("c")) == 3
    finally:
        client.close()

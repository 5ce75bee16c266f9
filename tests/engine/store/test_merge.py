"""engine.store.merge: the window-layout part of identity stitching, on real Redis.

These tests pin what a new window layout must keep: every key that ingestion
writes is found by `window_sources`, and adding one id's keys into another's
sums counts and sums, keeps the smaller minimum and the larger maximum, the
newer last-seen, the union of event ids, the later expiry, and counts a key
once however often it is added.
"""

from __future__ import annotations

import time
from typing import Any

import redis
from support.store import DAY, HOUR, ev, ingest

from arbiter.engine.store import keys, merge
from arbiter.engine.store.client import connect_sync


def sync(url: str) -> redis.Redis:
    client = connect_sync(url)
    assert isinstance(client, redis.Redis)
    return client


def test_window_sources_name_every_key_ingestion_writes(redis_url: str) -> None:
    now = time.time()
    ages = [0, 30, HOUR, 5 * HOUR, DAY, 6 * DAY, 7 * DAY + 23 * HOUR, 9 * DAY, 40 * DAY]
    ages += [100 * DAY, 300 * DAY, 399 * DAY, 430 * DAY]
    events = [ev("a", "view", now - age, f"e{i}", price=1.0) for i, age in enumerate(ages)]
    events.append(ev("a", "view", now + 240, "future"))  # the API takes 5 minutes of skew
    ingest(redis_url, events, now)
    client = sync(redis_url)
    try:
        written = {k.decode() for k in client.scan_iter(match=keys.customer_pattern("a"))}
    finally:
        client.close()
    listed = {key for key, _ in merge.window_sources("a", now)}
    assert written and written <= listed
    assert any(":eh:" in k for k in written) and any(":ed:" in k for k in written)
    # Nothing listed that no window could read any more: the list stays short.
    assert len(listed) < 40


def apply(client: redis.Redis, source: str, kind: str, now: float) -> Any:
    pipe = client.pipeline(transaction=False)
    merge.read_source(pipe, source, kind)
    content, pttl = pipe.execute()
    key_list, args = merge.merge_command("c", "a", source, kind, content, pttl, int(now * 1000))
    return client.eval(merge.MERGE_WINDOWS_LUA, len(key_list), *key_list, *args)


def test_buckets_add_up_once_and_keep_the_later_expiry(redis_url: str) -> None:
    now = time.time()
    ingest(
        redis_url,
        [
            ev("a", "buy", now - HOUR, "1", amount=5.0),
            ev("a", "buy", now - HOUR, "2", amount=50.0),
            ev("c", "buy", now - HOUR, "3", amount=7.5),
            ev("c", "view", now - HOUR, "4"),
        ],
        now,
    )
    client = sync(redis_url)
    try:
        day = int((now - HOUR) // DAY)
        source, dest = keys.hourly_buckets("a", day), keys.hourly_buckets("c", day)
        expected_expiry = client.ttl(source)
        assert apply(client, source, "buckets", now) == 1
        assert apply(client, source, "buckets", now) == 0  # a retry counts nothing
        fields = {k.decode(): float(v) for k, v in client.hgetall(dest).items()}
        hour = int((now - HOUR) // HOUR)
        assert fields[f"buy|{hour}"] == 3 and fields["buy|all"] == 3
        assert fields[f"buy.amount|{hour}"] == 62.5 and fields[f"buy.amount|{hour}|n"] == 3
        assert fields[f"buy.amount|{hour}|min"] == 5.0
        assert fields[f"buy.amount|{hour}|max"] == 50.0
        assert fields[f"view|{hour}"] == 1
        assert client.hget(dest, f"buy|{hour}") == b"3"  # still an integer for HINCRBY
        assert abs(client.ttl(dest) - expected_expiry) <= 2
        marks = keys.merge_marks("c", "a")
        assert client.ttl(marks) >= expected_expiry  # the mark outlives what it stands for
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
        assert apply(client, keys.last_seen("a"), "seen", now) == 1
        assert apply(client, keys.event_ids("a"), "eids", now) == 1
        seen = {k.decode(): float(v) for k, v in client.hgetall(keys.last_seen("c")).items()}
        assert seen == {"buy": now - HOUR, "view": now - 3 * DAY}
        ids = client.zrange(keys.event_ids("c"), 0, -1)
        assert sorted(ids) == [b"x", b"y", b"z"]
        # Applied again: the same state (max and union are idempotent).
        assert apply(client, keys.event_ids("a"), "eids", now) == 1
        assert client.zcard(keys.event_ids("c")) == 3
    finally:
        client.close()

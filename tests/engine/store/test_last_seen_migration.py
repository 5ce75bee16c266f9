"""`arbiter migrate` from window layout 2 (a last-seen hash per customer) to layout 3.

Layout 3 keeps last-seen times in the window hash (field `l`), so a
decision reads them with its series (one HMGET less). The migration moves
each old hash in, keeps the newer time where layout 3 already wrote one, keeps
the longer expiry, deletes the old hash, and does it once.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
import redis
from support.redis import run_with_client
from support.store import DAY, HOUR, aggregates, ev, ingest

from arbiter.engine.plan import AggregateSpec
from arbiter.engine.store import keys, windows
from arbiter.engine.store.client import connect_sync
from arbiter.engine.store.last_seen_migration import migrate_last_seen
from arbiter.engine.store.profiles import ProfileStore
from arbiter.server.cli.main import main


@pytest.fixture
def sync_redis(redis_url: str) -> Iterator[redis.Redis]:
    client = connect_sync(redis_url)
    assert isinstance(client, redis.Redis)
    yield client
    client.close()


LAST = [AggregateSpec("last", "view", None, 0), AggregateSpec("last", "buy", None, 0)]


def as_layout_2(client: redis.Redis, customer: str) -> None:
    """What window layout 2 stored for the same events: last-seen times in a hash of
    their own, kept `LAST_SEEN_TTL`, and the window hash expiring at its `x`."""
    w = keys.windows(customer)
    seen = windows.last_seen_times(client.hget(w, windows.LAST_SEEN_FIELD))
    client.hdel(w, windows.LAST_SEEN_FIELD)
    client.hset(keys.last_seen(customer), mapping={k: repr(t) for k, t in seen.items()})
    client.expire(keys.last_seen(customer), windows.LAST_SEEN_TTL)
    client.expireat(w, int(client.hget(w, "x") or 0))


def test_migrate_moves_last_seen_times_into_the_window_hash_once(
    redis_url: str, sync_redis: redis.Redis
) -> None:
    now = time.time()
    ingest(redis_url, [ev("c", "view", now - 3 * DAY), ev("c", "buy", now - 2 * DAY)], now)
    as_layout_2(sync_redis, "c")
    assert aggregates(redis_url, "c", LAST, now) == [None, None]  # layout 3 reads none yet
    # A view ingested after the upgrade, before the migration: the newer time wins.
    ingest(redis_url, [ev("c", "view", now - HOUR)], now)
    x = sync_redis.hget(keys.windows("c"), "x")

    dry = run_with_client(redis_url, lambda r: migrate_last_seen(r, dry_run=True))
    assert (dry.customers, dry.times) == (1, 0)
    assert sync_redis.exists(keys.last_seen("c"))
    report = run_with_client(redis_url, migrate_last_seen)
    assert (report.customers, report.times, report.linked) == (1, 2, 0)
    assert not sync_redis.exists(keys.last_seen("c"))
    assert aggregates(redis_url, "c", LAST, now) == pytest.approx([now - HOUR, now - 2 * DAY])
    # `x` (the newest daily bucket's expiry) is left; the hash lives as long as the old one.
    assert sync_redis.hget(keys.windows("c"), "x") == x
    assert sync_redis.ttl(keys.windows("c")) == pytest.approx(windows.LAST_SEEN_TTL, abs=2)
    again = run_with_client(redis_url, migrate_last_seen)
    assert (again.customers, again.times) == (0, 0)


def test_an_older_time_never_replaces_a_newer_one(redis_url: str, sync_redis: redis.Redis) -> None:
    now = time.time()
    ingest(redis_url, [ev("c", "view", now - DAY)], now)
    sync_redis.hset(keys.last_seen("c"), "view", repr(now - 5 * DAY))  # an old server's
    sync_redis.expire(keys.last_seen("c"), windows.LAST_SEEN_TTL)
    run_with_client(redis_url, migrate_last_seen)
    assert aggregates(redis_url, "c", LAST, now) == pytest.approx([now - DAY, None])


def test_a_linked_ids_old_hash_goes_to_its_customer(
    redis_url: str, sync_redis: redis.Redis
) -> None:
    now = time.time()
    ingest(redis_url, [ev("cust", "view", now - 3 * DAY)], now)
    run_with_client(
        redis_url, lambda r: ProfileStore(r).identities.identify("anon", "cust", (), now)
    )
    # Left on the anonymous id by a merge interrupted before the upgrade.
    sync_redis.hset(keys.last_seen("anon"), "buy", repr(now - HOUR))
    sync_redis.expire(keys.last_seen("anon"), windows.LAST_SEEN_TTL)
    report = run_with_client(redis_url, migrate_last_seen)
    assert (report.customers, report.linked) == (1, 1)
    assert not sync_redis.exists(keys.last_seen("anon"))
    assert not sync_redis.exists(keys.windows("anon"))  # nothing written for the linked id
    assert aggregates(redis_url, "cust", LAST, now) == pytest.approx([now - 3 * DAY, now - HOUR])


def test_arbiter_migrate_reports_the_last_seen_times(
    redis_url: str,
    sync_redis: redis.Redis,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    now = time.time()
    ingest(redis_url, [ev("a", "view", now - DAY), ev("b", "buy", now - DAY)], now)
    as_layout_2(sync_redis, "a")
    as_layout_2(sync_redis, "b")
    assert sync_redis.ttl(keys.windows("a")) < windows.MAX_WINDOW + 3 * DAY
    monkeypatch.setenv("ARBITER_REDIS_URL", redis_url)
    assert main(["migrate", "--dry-run"]) == 0
    assert "the last-seen times of 2 customers" in capsys.readouterr().out
    assert sync_redis.exists(keys.last_seen("a"), keys.last_seen("b")) == 2
    assert main(["migrate"]) == 0
    assert "the last-seen times of 2 customers (2 times)" in capsys.readouterr().out
    assert sync_redis.exists(keys.last_seen("a"), keys.last_seen("b")) == 0
    # The window hash, which layout 2 let go with its newest bucket (~401 days), now
    # lives as long as the last-seen hash did.
    assert sync_redis.ttl(keys.windows("a")) == pytest.approx(windows.LAST_SEEN_TTL, abs=2)

"""The contact history hash (caps and fatigue records): edges, retries, expiry, migration.

The counting rules are those of the sorted sets it replaced: a cap counts the
contacts strictly after `now - window`; the same decision written twice counts
once; two decisions at the same instant count twice. `arbiter migrate` and the
identity merge convert sorted sets left by the old layout.
"""

from __future__ import annotations

import struct
import time
from typing import Any

import redis
from support.store import DAY, HOUR, run

from arbiter.engine.plan import Needs
from arbiter.engine.store import contact_history, keys
from arbiter.engine.store.client import connect_sync
from arbiter.engine.store.history_migration import legacy_field, migrate_history
from arbiter.engine.store.profiles import AFTER_DECISION_LUA, ProfileStore

WEEK = 7 * DAY
NEEDS = Needs(
    (), (), (("promo", WEEK), ("~channel:email:604800", WEEK)), (("promo", 2, WEEK, DAY),), False
)


async def contact(s: ProfileStore, customer: str, decision_id: str, t: float) -> None:
    """What the decision log writes behind a decision that offered `promo` by email at `t`."""
    counters = [("promo", WEEK), ("~channel:email:604800", WEEK)]
    key_list, args = s.after_decision_command(customer, b"1-0", decision_id, WEEK, counters, t)
    await s.redis.eval(AFTER_DECISION_LUA, len(key_list), *key_list, *args)


def caps(url: str, customer: str, now: float) -> dict[str, int]:
    return run(url, lambda s: s.fetch(customer, NEEDS, now)).caps


def test_a_cap_counts_the_contacts_strictly_inside_its_window(redis_url: str) -> None:
    now = time.time()

    async def body(s: ProfileStore) -> None:
        await contact(s, "c", "d-edge", now - WEEK)  # exactly at the window's edge: out
        await contact(s, "c", "d-in", now - WEEK + 0.5)  # half a second inside
        await contact(s, "c", "d-new", now - HOUR)

    run(redis_url, body)
    assert caps(redis_url, "c", now) == {"promo": 2, "~channel:email:604800": 2}
    # A second later the older of the two has left the window too.
    assert caps(redis_url, "c", now + 1) == {"promo": 1, "~channel:email:604800": 1}


def test_a_retried_write_counts_once_and_two_decisions_at_one_instant_twice(
    redis_url: str,
) -> None:
    now = time.time()

    async def body(s: ProfileStore) -> None:
        for _ in range(3):  # the batch retried
            await contact(s, "c", "d-1", now - 60)
        await contact(s, "c", "d-2", now - 60)  # another decision, same instant

    run(redis_url, body)
    assert caps(redis_url, "c", now) == {"promo": 2, "~channel:email:604800": 2}


def test_a_write_drops_what_no_window_sees_and_never_shortens_the_expiry(redis_url: str) -> None:
    now = time.time()
    client = connect_sync(redis_url)
    assert isinstance(client, redis.Redis)

    async def body(s: ProfileStore) -> None:
        await contact(s, "c", "d-old", now - 10 * DAY)  # already outside the 7-day window
        await s.record_rejection("c", "promo", now, 30 * DAY)  # kept 30 days
        await contact(s, "c", "d-new", now)

    run(redis_url, body)
    blob = client.hget(keys.contact_history("c"), contact_history.cap_field("promo"))
    assert contact_history.times(blob) == [now]  # the old record is gone, the new one kept
    # The rejection's 30 days (+60 s) win over the caps' 7 days written after it.
    assert client.ttl(keys.contact_history("c")) > 29 * DAY
    client.close()


def test_an_id_is_only_matched_where_a_record_keeps_its_id(redis_url: str) -> None:
    """The write looks for the record's id with a byte search: 8 bytes that straddle
    two records (the end of one id, the start of the next time) are not that id."""
    now = time.time()
    client = connect_sync(redis_url)
    assert isinstance(client, redis.Redis)
    field = contact_history.cap_field("promo")
    old = contact_history.encode([(now - 2 * HOUR, "d-a"), (now - HOUR, "d-b")])
    straddle = old[12:20]  # last 4 bytes of d-a's id, first 4 of d-b's time
    key_list, args = ProfileStore(client).after_decision_command(
        "c", b"1-0", "d-new", WEEK, [("promo", WEEK)], now - 60
    )
    args[4] = straddle  # a record id that happens to be those 8 bytes
    client.hset(keys.contact_history("c"), field, old)
    client.eval(AFTER_DECISION_LUA, len(key_list), *key_list, *args)
    blob = client.hget(keys.contact_history("c"), field)
    assert blob == old + struct.pack("<d", now - 60) + straddle  # added, the others untouched
    # The same write again finds it, now where an id is: counted once.
    client.eval(AFTER_DECISION_LUA, len(key_list), *key_list, *args)
    assert client.hget(keys.contact_history("c"), field) == blob
    client.close()


def test_a_decision_read_runs_one_hmget_of_the_history_whatever_the_counters(
    redis_url: str,
) -> None:
    now = time.time()

    async def body(s: ProfileStore) -> dict[str, int]:
        await contact(s, "c", "d-1", now - 60)
        await s.fetch("warm", NEEDS, now)
        before = await s.redis.info("commandstats")
        await s.fetch("c", NEEDS, now)
        after = await s.redis.info("commandstats")
        return {k: after[k]["calls"] - before.get(k, {"calls": 0})["calls"] for k in after}

    delta = {k: v for k, v in run(redis_url, body).items() if v and k != "cmdstat_info"}
    assert "cmdstat_zcount" not in delta and "cmdstat_zrange" not in delta
    assert delta["cmdstat_hmget"] == 1  # no window, no last-seen: only the history


# ------------------------------------------------- layout 1: a sorted set per counter


def legacy(client: Any, customer: str, now: float) -> None:
    """Caps and rejections as an Arbiter before the contact history wrote them."""
    cap = keys.contacts(customer, "promo")
    client.zadd(cap, {f"{now - HOUR!r}:d-1": now - HOUR, f"{now - 2 * HOUR!r}:d-2": now - 2 * HOUR})
    client.expire(cap, WEEK + 60)
    policy = keys.contacts(customer, "~channel:email:604800")
    client.zadd(policy, {f"{now - HOUR!r}:d-1": now - HOUR})
    client.expire(policy, WEEK + 60)
    rej = keys.rejections(customer, "promo")
    client.zadd(rej, {"fb:d-1:promo": now - 3 * HOUR, "fb:d-2:promo": now - 2 * HOUR})
    client.expire(rej, 30 * DAY)


def test_migrate_converts_the_sorted_sets_once_and_keeps_their_expiry(redis_url: str) -> None:
    now = time.time()
    client = connect_sync(redis_url)
    legacy(client, "old", now)
    assert legacy_field(keys.contacts("old", "~channel:email:604800")) == (
        keys.tag("old"),
        "c:~channel:email:604800",
    )
    dry = run(redis_url, lambda s: migrate_history(s.redis, dry_run=True))
    assert (dry.customers, dry.old_keys, dry.records) == (1, 3, 0)
    report = run(redis_url, lambda s: migrate_history(s.redis))
    assert (report.customers, report.old_keys, report.records) == (1, 3, 5)
    assert not list(client.scan_iter(match=keys.contacts("old", "*")))
    assert not list(client.scan_iter(match=keys.rejections("old", "*")))
    inputs = run(redis_url, lambda s: s.fetch("old", NEEDS, now))
    assert inputs.caps == {"promo": 2, "~channel:email:604800": 1}
    assert inputs.rejections == {"promo": 2}  # 2 rejections within 7 days, the last < 1 day ago
    assert client.ttl(keys.contact_history("old")) > 29 * DAY
    # Again: nothing left to convert. And the same decision's write, retried after the
    # upgrade, is recognised as the record migrated (same id), so it counts once.
    again = run(redis_url, lambda s: migrate_history(s.redis))
    assert (again.customers, again.records) == (0, 0)

    async def retry(s: ProfileStore) -> None:
        key_list, args = s.after_decision_command(
            "old", b"1-0", "d-1", WEEK, [("promo", WEEK)], now - HOUR
        )
        await s.redis.eval(AFTER_DECISION_LUA, len(key_list), *key_list, *args)

    run(redis_url, retry)
    assert caps(redis_url, "old", now)["promo"] == 2
    client.close()


def test_sets_written_after_a_first_run_are_added_by_the_next(redis_url: str) -> None:
    now = time.time()
    client = connect_sync(redis_url)
    run(redis_url, lambda s: contact(s, "mixed", "d-new", now - 60))  # the new layout
    legacy(client, "mixed", now)  # an old server, during a rolling upgrade
    run(redis_url, lambda s: migrate_history(s.redis))
    assert caps(redis_url, "mixed", now) == {"promo": 3, "~channel:email:604800": 2}
    client.close()


def test_an_anonymous_ids_sorted_sets_reach_the_customer_through_the_merge(
    redis_url: str,
) -> None:
    now = time.time()
    client = connect_sync(redis_url)
    legacy(client, "anon", now)
    run(redis_url, lambda s: contact(s, "cust", "d-9", now - 60))
    run(redis_url, lambda s: s.identities.identify("anon", "cust", ["promo"], now))
    inputs = run(redis_url, lambda s: s.fetch("cust", NEEDS, now))
    # The policy counter is not an action: only what the rulesets' actions name moves.
    assert inputs.caps == {"promo": 3, "~channel:email:604800": 1}
    assert inputs.rejections == {"promo": 2}
    assert not client.exists(keys.contacts("anon", "promo"), keys.rejections("anon", "promo"))
    client.close()

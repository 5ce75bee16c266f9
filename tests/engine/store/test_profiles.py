"""ProfileStore against real Redis: windows, late and duplicate events, caps, consent, fatigue, erasure.

Time is injected everywhere (`fetch(now=…)`, `add_events(now=…)`, decision
records carry their own `ts`), so nothing here sleeps. The injected times
stay near the real clock because bucket hashes expire at absolute times.
"""

from __future__ import annotations

import random
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from fastapi.testclient import TestClient
from support.server import ADMIN, settings
from support.store import (
    DAY,
    HOUR,
    Decider,
    aggregates,
    count,
    ev,
    everything,
    hour_floor,
    ingest,
    run,
    shop_plan,
)

from arbiter.engine.plan import AggregateSpec
from arbiter.engine.store import keys, windows
from arbiter.engine.store.client import connect_sync
from arbiter.engine.store.profiles import Event, ProfileStore
from arbiter.server.app import create_app


@pytest.fixture
def sync_redis(redis_url: str) -> Iterator[redis.Redis]:
    client = connect_sync(redis_url)
    assert isinstance(client, redis.Redis)
    yield client
    client.close()


# ----------------------------------------------------------------- windows


def test_window_edges_on_an_hour_boundary(redis_url: str) -> None:
    now = hour_floor(time.time())  # exactly on a bucket edge: the window is exact
    edge = now - DAY
    ingest(
        redis_url,
        [
            ev("c", "view", edge),  # exactly at now-24h: inside
            ev("c", "view", edge + 1),  # just inside
            ev("c", "view", edge - 1),  # just outside: previous bucket
            ev("c", "view", now),  # the newest moment of the window
        ],
        now,
    )
    assert aggregates(redis_url, "c", [count("view", DAY)], now) == [3]


def test_window_overcounts_by_at_most_one_bucket_at_the_old_edge(redis_url: str) -> None:
    base = hour_floor(time.time())
    now = base + 1800  # half-way through an hour: now-24h falls inside a bucket
    ingest(
        redis_url,
        [
            ev("c", "view", base - DAY + 1),  # 30 min too old, same bucket as now-24h: counted
            ev("c", "view", base - DAY - 1),  # previous bucket: not counted
            ev("c", "view", now - DAY + 60),  # inside
            ev("c", "view", now - 60),  # inside
        ],
        now,
    )
    assert aggregates(redis_url, "c", [count("view", DAY)], now) == [3]


def test_hourly_buckets_up_to_7d_daily_beyond(redis_url: str) -> None:
    day0 = int(time.time() // DAY) * DAY
    now = day0 + 12 * HOUR + 1800
    events = [
        ev("c", "view", now - 7 * DAY - 600),  # same hour as now-7d: counted in 7d (hourly)
        ev("c", "view", now - 7 * DAY - 3600),  # an hour earlier: not in 7d
        ev("c", "view", day0 - 8 * DAY + 60),  # 12.5 h before now-8d, same day: counted in 8d
        ev("c", "view", day0 - 8 * DAY - 60),  # the day before: not in 8d
    ]
    ingest(redis_url, events, now)
    got = aggregates(redis_url, "c", [count("view", 7 * DAY), count("view", 8 * DAY)], now)
    assert got == [1, 3]


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_windows_never_undercount_and_overcount_only_the_edge_bucket(
    redis_url: str, seed: int
) -> None:
    rng = random.Random(seed)
    now0 = time.time()
    stamps = sorted(now0 - rng.uniform(0, 40 * DAY) for _ in range(300))
    ingest(redis_url, [ev("c", "view", t) for t in stamps], now0)
    spans = [HOUR, 6 * HOUR, DAY, 3 * DAY, 7 * DAY, 7 * DAY + 1, 10 * DAY, 30 * DAY]
    # Decisions read at the present, never before the events arrived.
    now = now0 + rng.uniform(0, 3 * HOUR)
    got = aggregates(redis_url, "c", [count("view", w) for w in spans], now)
    for w, n in zip(spans, got, strict=True):
        size = HOUR if w <= 7 * DAY else DAY
        exact = sum(1 for t in stamps if now - w <= t <= now)
        edge_bucket = int((now - w) // size) * size
        at_edge = sum(1 for t in stamps if edge_bucket <= t < now - w)
        in_current = sum(1 for t in stamps if now < t < (int(now // size) + 1) * size)
        assert exact <= n <= exact + at_edge + in_current, (w, n, exact, at_edge)
        assert n == exact + at_edge + in_current  # the model is exact, not only bounded


def test_late_and_out_of_order_events_count_the_same(redis_url: str) -> None:
    now = time.time()
    events = [ev("a", "purchase", now - k * 5 * HOUR, None, amount=float(k)) for k in range(1, 40)]
    shuffled = events[:]
    random.Random(7).shuffle(shuffled)
    ingest(redis_url, events, now)
    # "b" gets the same events in another order, in small batches, days late ones included.
    for i in range(0, len(shuffled), 5):
        late = [Event("b", e.type, e.ts, e.properties) for e in shuffled[i : i + 5]]
        ingest(redis_url, late, now)
    specs = [
        count("purchase", DAY),
        count("purchase", 7 * DAY),
        AggregateSpec("sum", "purchase", "amount", 30 * DAY),
        AggregateSpec("max", "purchase", "amount", 7 * DAY),
        AggregateSpec("last", "purchase", None, 0),
    ]
    a = aggregates(redis_url, "a", specs, now)
    assert a == aggregates(redis_url, "b", specs, now)
    assert a[4] == pytest.approx(now - 5 * HOUR)  # last_seen is the newest, whatever the order


def test_duplicate_event_id_counts_once(redis_url: str) -> None:
    now = time.time()
    batch = [
        ev("c", "purchase", now - 10, "e1", amount=5.0),
        ev("c", "purchase", now - 10, "e1", amount=5.0),  # same batch
        ev("d", "purchase", now - 10, "e1", amount=5.0),  # another customer's own e1
    ]
    assert ingest(redis_url, batch, now) == 2
    # A retry minutes later, even with another time stamp, is recognised.
    assert ingest(redis_url, [ev("c", "purchase", now - 5, "e1", amount=5.0)], now + 300) == 0
    specs = [count("purchase", DAY), AggregateSpec("sum", "purchase", "amount", DAY)]
    assert aggregates(redis_url, "c", specs, now + 300) == [1, 5.0]
    # Ids are remembered for EVENT_ID_TTL after arrival (documented), then forgotten.
    later = now + windows.EVENT_ID_TTL + 1
    assert ingest(redis_url, [ev("c", "purchase", now - 10, "e1", amount=5.0)], later) == 1


def test_duplicate_of_a_late_event_counts_once(redis_url: str) -> None:
    # Ids are kept by arrival time: a newer event must not push a late one's id out.
    now = time.time()
    assert ingest(redis_url, [ev("c", "view", now - 5 * DAY, "late")], now) == 1
    assert ingest(redis_url, [ev("c", "view", now, "fresh")], now + 1) == 1
    assert ingest(redis_url, [ev("c", "view", now - 5 * DAY, "late")], now + 2) == 0


def test_sum_min_max_avg_of_a_property(redis_url: str) -> None:
    now = time.time()
    amounts = [12.5, 3.0, 40.0, 7.25]
    events = [
        ev("c", "purchase", now - (i + 1) * 2 * DAY, f"p{i}", amount=a)
        for i, a in enumerate(amounts)
    ]
    events.append(ev("c", "purchase", now - HOUR, "no-amount"))  # no property: not in avg
    events.append(ev("c", "purchase", now - 40 * DAY, "old", amount=1000.0))  # outside 30d
    ingest(redis_url, events, now)
    specs = [
        AggregateSpec(fn, "purchase", "amount", 30 * DAY) for fn in ("sum", "min", "max", "avg")
    ]
    specs += [count("purchase", 30 * DAY), AggregateSpec("sum", "purchase", "amount", 3 * DAY)]
    got = aggregates(redis_url, "c", specs, now)
    assert got[:4] == pytest.approx([62.75, 3.0, 40.0, 62.75 / 4])
    assert got[4:] == [5, 12.5]


def test_empty_windows(redis_url: str) -> None:
    now = time.time()
    specs = [
        count("purchase", DAY),
        AggregateSpec("sum", "purchase", "amount", 30 * DAY),
        AggregateSpec("avg", "purchase", "amount", 30 * DAY),
        AggregateSpec("min", "purchase", "amount", DAY),
        AggregateSpec("last", "purchase", None, 0),
    ]
    # Counts and sums of nothing are 0; an average, minimum or last time of nothing is missing.
    assert aggregates(redis_url, "nobody", specs, now) == [0, 0, None, None, None]


def test_last_seen(redis_url: str) -> None:
    now = time.time()
    ingest(
        redis_url,
        [ev("c", "view", now - 100), ev("c", "view", now - 300), ev("c", "cart", now - 50)],
        now,
    )
    summary = run(redis_url, lambda s: s.event_summary("c"))
    assert summary == {"view": pytest.approx(now - 100), "cart": pytest.approx(now - 50)}


def test_every_key_but_the_profile_expires(redis_url: str, sync_redis: redis.Redis) -> None:
    now = time.time()
    run(redis_url, lambda s: s.put_profile("c", {"visits": 3}))
    ingest(redis_url, [ev("c", "purchase", now - DAY, "x", amount=2.0)], now)
    run(redis_url, lambda s: s.record_rejection("c", "promo", now, 3600))
    ttls = {k: sync_redis.ttl(k) for k in sync_redis.scan_iter(match=keys.customer_pattern("c"))}
    profile = keys.profile("c").encode()
    assert ttls.pop(profile) == -1  # attributes are kept until erased
    assert ttls and all(t > 0 for t in ttls.values()), ttls
    buckets = keys.windows("c").encode()
    # The buckets live until the longest window that reads them has passed the newest, and
    # the last-seen times (fields of the same hash) a month past the longest window.
    expected = max(windows.expire_at(int((now - DAY) // DAY)) - now, windows.LAST_SEEN_TTL)
    assert abs(ttls[buckets] - expected) <= 2


def test_events_too_old_to_read_write_no_buckets(redis_url: str, sync_redis: redis.Redis) -> None:
    now = time.time()
    assert ingest(redis_url, [ev("c", "view", now - 500 * DAY)], now) == 1
    names = sorted(k.decode() for k in sync_redis.scan_iter(match=keys.customer_pattern("c")))
    assert names == [keys.windows("c")]
    # Only its last-seen time (the hash lives as long as that is kept): no series.
    assert sync_redis.hkeys(keys.windows("c")) == [b"l"]
    assert sync_redis.ttl(keys.windows("c")) == pytest.approx(windows.LAST_SEEN_TTL, abs=2)


def test_fetch_is_one_command(redis_url: str) -> None:
    plan = shop_plan()
    now = time.time()

    async def body(s: ProfileStore) -> tuple[dict[str, int], int]:
        await s.fetch("warm", plan.needs, now)  # connects
        before, batches = await s.redis.info("commandstats"), s.round_trips.batches
        await s.fetch("c", plan.needs, now)
        after = await s.redis.info("commandstats")
        delta = {
            name: after[name]["calls"] - before.get(name, {"calls": 0})["calls"]
            for name in after
            if name != "cmdstat_info"
        }
        return delta, s.round_trips.batches - batches

    delta, round_trips = run(redis_url, body)
    delta = {k: v for k, v in delta.items() if v}
    # One round trip (one pipeline) of plain commands on the customer's keys: the id's
    # link (engine.store.identity), the profile, then one HMGET per hash it reads:
    # last-seen, windows, contact history (caps and fatigue), whatever their number.
    assert round_trips == 1
    assert delta.pop("cmdstat_get") == 1
    assert delta.pop("cmdstat_hgetall") == 1
    assert set(delta) <= {"cmdstat_hmget"}
    assert delta.get("cmdstat_hmget", 0) <= 3


def test_customer_ids_cannot_collide_through_escaping() -> None:
    assert keys.profile("a{b") != keys.profile("a%7Bb")
    assert keys.profile("a}b").count("}") == 1  # the hash tag stays the whole id
    assert keys.customer_pattern("a*") == "arb:{a\\*}:*"


def test_profile_put_replaces_patch_merges(redis_url: str) -> None:
    async def body(s: ProfileStore) -> list[dict[str, Any]]:
        await s.put_profile("c", {"visits": 1, "country": "DE"})
        first = await s.get_profile("c")
        await s.put_profile("c", {"visits": 2})
        second = await s.get_profile("c")
        await s.patch_profile("c", {"country": "FR", "visits": None})
        third = await s.get_profile("c")
        await s.put_profile("c", {})
        return [first, second, third, await s.get_profile("c")]

    assert run(redis_url, body) == [
        {"visits": 1, "country": "DE"},
        {"visits": 2},
        {"country": "FR"},
        {},
    ]


# ----------------------------------------- caps, consent, fatigue: decisions


def test_caps_over_time(redis_url: str) -> None:
    plan = shop_plan()
    t0 = time.time()

    async def body(s: ProfileStore) -> list[str | None]:
        d = Decider(s, plan)
        await s.put_profile("c", {"visits": 1})
        seen = [await d("c", t0, channel="web")]  # welcome_offer: cap 1 per 7d
        seen.append(await d("c", t0 + 1, channel="web"))
        seen.append(await d("c", t0 + 7 * DAY - 1, channel="web"))
        seen.append(await d("c", t0 + 7 * DAY, channel="web"))  # the window has passed
        seen.append(await d("c", t0 + 7 * DAY + 1, channel="web"))
        return seen

    assert run(redis_url, body) == [
        "welcome_offer",
        "bestsellers",
        "bestsellers",
        "welcome_offer",
        "bestsellers",
    ]


def test_cap_of_two_per_day_slides(redis_url: str) -> None:
    plan = shop_plan()
    t0 = time.time()

    async def body(s: ProfileStore) -> list[str | None]:
        d = Decider(s, plan)
        await s.put_profile("c", {"consents": ["email"]})
        # Carts a day apart keep "added to cart within 24h" true at every decision.
        await s.add_events(
            [ev("c", "add_to_cart", t0 - 60), ev("c", "add_to_cart", t0 + DAY - 60)], now=t0
        )
        times = [t0, t0 + 3 * HOUR, t0 + 6 * HOUR, t0 + DAY - 1, t0 + DAY + 1, t0 + DAY + 2]
        return [await d("c", t, channel="email") for t in times]

    # cart_reminder: cap 2 per 1d. The third is refused until the first contact is a day old;
    # then one slot is free again (the second contact still counts).
    assert run(redis_url, body) == [
        "cart_reminder",
        "cart_reminder",
        "bestsellers",
        "bestsellers",
        "cart_reminder",
        "bestsellers",
    ]


@pytest.mark.parametrize(
    ("consents", "expected"),
    [
        (None, "bestsellers"),
        ([], "bestsellers"),
        (["sms"], "bestsellers"),
        (["email"], "cart_reminder"),
        (["sms", "email"], "cart_reminder"),
    ],
)
def test_consent_is_required(redis_url: str, consents: list[str] | None, expected: str) -> None:
    plan = shop_plan()
    now = time.time()

    async def body(s: ProfileStore) -> str | None:
        attributes: dict[str, Any] = {"visits": 5}
        if consents is not None:
            attributes["consents"] = consents
        await s.put_profile("c", attributes)
        await s.add_events([ev("c", "add_to_cart", now - 60)], now=now)
        return await Decider(s, plan)("c", now, channel="email")

    assert run(redis_url, body) == expected


def test_fatigue_suppresses_after_n_rejections_within_w_for_p(redis_url: str) -> None:
    plan = shop_plan()
    fatigue = plan.action("vip_lounge").fatigue
    assert fatigue is not None  # suppress after 2 rejections within 7d for 14d
    keep = fatigue.window_seconds + fatigue.period_seconds
    t0 = time.time()
    vip = {"lifetime_value": 5000, "orders_90d": 4, "visits": 30}

    async def body(s: ProfileStore) -> list[str | None]:
        d = Decider(s, plan)
        await s.put_profile("c", vip)
        seen = [await d("c", t0, channel="web")]
        await s.record_rejection("c", "vip_lounge", t0 + 10, keep)
        seen.append(await d("c", t0 + 20, channel="web"))  # one rejection: still offered
        await s.record_rejection("c", "vip_lounge", t0 + 6 * DAY, keep)  # second within 7d
        seen.append(await d("c", t0 + 6 * DAY + 1, channel="web"))
        seen.append(await d("c", t0 + 20 * DAY - 1, channel="web"))  # 14d after the 2nd
        seen.append(await d("c", t0 + 20 * DAY, channel="web"))
        # Two rejections 8 days apart are not "2 within 7d".
        await s.put_profile("e", vip)
        await s.record_rejection("e", "vip_lounge", t0, keep)
        await s.record_rejection("e", "vip_lounge", t0 + 8 * DAY, keep)
        seen.append(await d("e", t0 + 8 * DAY + 1, channel="web"))
        # Two at the same instant are two.
        await s.put_profile("f", vip)
        await s.record_rejection("f", "vip_lounge", t0, keep)
        await s.record_rejection("f", "vip_lounge", t0, keep)
        seen.append(await d("f", t0 + 1, channel="web"))
        return seen

    assert run(redis_url, body) == [
        "vip_lounge",
        "vip_lounge",
        "bestsellers",
        "bestsellers",
        "vip_lounge",
        "vip_lounge",
        "bestsellers",
    ]


# ------------------------------------------------------------------ erasure


def test_delete_profile_leaves_no_key_behind(
    redis_url: str, tmp_path: Path, sync_redis: redis.Redis
) -> None:
    gone, kept = "erase-me-7f3a", "keep-me-91c2"
    tag = keys.customer_pattern(gone)[:-2].encode()  # "arb:{erase-me-7f3a}"
    with TestClient(create_app(settings(redis_url, tmp_path))) as client:
        decision_ids: dict[str, list[str]] = {gone: [], kept: []}
        for who in (gone, kept):
            attributes = {"visits": 1, "lifetime_value": 5000, "orders_90d": 4}
            r = client.put(
                f"/v1/profiles/{who}", json={**attributes, "consents": ["email"]}, headers=ADMIN
            )
            assert r.status_code == 200
            events = [
                {"customer_id": who, "type": "add_to_cart", "event_id": f"{who}-1"},
                {"customer_id": who, "type": "purchase", "properties": {"amount": 9.5}},
            ]
            r = client.post("/v1/events", json={"events": events}, headers=ADMIN)
            assert r.status_code == 202
            for channel in ("web", "app", "email", "web"):
                r = client.post(
                    "/v1/decide", json={"customer_id": who, "context": {"channel": channel}}
                )
                d = r.json()
                decision_ids[who].append(d["decision_id"])
                if d["actions"]:
                    # A rejection: a feedback marker, a reward entry, maybe a fatigue entry.
                    fb = {
                        "decision_id": d["decision_id"],
                        "action": d["actions"][0]["action"],
                        "reward": 0,
                    }
                    assert client.post("/v1/feedback", json=fb).status_code == 202
        client.portal.call(client.app.state.arbiter.log.flush)  # type: ignore[attr-defined,union-attr]
        before = everything(sync_redis)
        assert any(tag in k for k in before)  # the search below can find something
        assert any(gone.encode() in v for v in before.values())
        r = client.delete(f"/v1/profiles/{gone}", headers=ADMIN)
        assert r.status_code == 200 and r.json()["erased_keys"] >= 5

    after = everything(sync_redis)
    mentions = [k for k, v in after.items() if gone.encode() in k or gone.encode() in v]
    assert mentions == []
    # Nothing keyed by the erased customer's decisions either, except the reward stream,
    # which holds (decision id, action, reward) and no customer id (documented).
    for did in decision_ids[gone]:
        left = [k for k, v in after.items() if did.encode() in k or did.encode() in v]
        assert left in ([], [keys.REWARD_STREAM.encode()]), (did, left)
    # The other customer is untouched.
    assert sum(1 for k in after if keys.customer_pattern(kept)[:-2].encode() in k) >= 5
    assert any(kept.encode() in v for k, v in after.items() if k == keys.DECISION_STREAM.encode())


# ---------------------------------------------------------- bytes / customer


def realistic_events(customer: str, now: float, n: int, rng: random.Random) -> list[Event]:
    """A month of behaviour: mostly page views, some carts, a few purchases."""
    out = []
    for i in range(n):
        ts = now - rng.uniform(0, 30 * DAY)
        roll = rng.random()
        if roll < 0.75:
            out.append(Event(customer, "page_view", ts, {}, f"{customer}-{i}"))
        elif roll < 0.92:
            props = {"price": round(rng.uniform(5, 200), 2)}
            out.append(Event(customer, "add_to_cart", ts, props, f"{customer}-{i}"))
        else:
            props = {"amount": round(rng.uniform(10, 500), 2), "items": rng.randint(1, 5)}
            out.append(Event(customer, "purchase", ts, props, f"{customer}-{i}"))
    return out


def customer_bytes(client: redis.Redis, customer: str) -> dict[str, int]:
    """MEMORY USAGE of every key of a customer, by key kind."""
    sizes: dict[str, int] = {}
    for key in client.scan_iter(match=keys.customer_pattern(customer), count=1000):
        kind = key.decode().split("}:", 1)[1].split(":", 1)[0]
        sizes[kind] = sizes.get(kind, 0) + int(client.memory_usage(key, samples=0) or 0)
    return sizes


@pytest.mark.parametrize(("n_events", "bulk"), [(10, False), (200, False), (200, True)])
def test_bytes_per_customer(
    redis_url: str, sync_redis: redis.Redis, n_events: int, bulk: bool
) -> None:
    """MEMORY USAGE of one customer: the figures in docs/profiles.md (run with -s)."""
    now = time.time()
    rng = random.Random(n_events)
    plan = shop_plan()
    profile: dict[str, Any] = {"visits": 12, "country": "DE", "lifetime_value": 840.5}
    profile |= {"orders_90d": 2, "consents": ["email", "sms"]}
    events = sorted(realistic_events("c", now, n_events, rng), key=lambda e: e.ts)

    async def body(s: ProfileStore) -> None:
        await s.put_profile("c", profile)
        if bulk:  # a backfill: everything arrives now
            await s.add_events(events, now=now)
        else:  # steady state: each event arrives as it happens
            for e in events:
                await s.add_events([e], now=e.ts)
        decide = Decider(s, plan)
        for k in range(10):  # ten decisions over the last week (index entries, a cap)
            await decide("c", now - k * 0.7 * DAY, channel="web")

    run(redis_url, body)
    sizes = customer_bytes(sync_redis, "c")
    total = sum(sizes.values())
    how = "bulk import" if bulk else "steady state"
    print(f"\n{n_events} events over 30 days, {how}: {total} bytes {sorted(sizes.items())}")
    # Bounds that catch a layout change multiplying the documented figures.
    bound = {10: 4_000, 200: 20_000}[n_events] * (2.5 if bulk else 1)
    assert total < bound, sizes

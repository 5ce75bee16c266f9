"""The Redis Streams intake, in process, on real Redis and a real Redis Cluster.

Events and identifies produced to the sharded streams end up in the windows
exactly once, whatever is redelivered; invalid messages end on the
dead-letter stream with their reason; another consumer takes over the
messages of one that died; acknowledged messages are trimmed.
"""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from support.redis import run_with_client
from support.store import DAY, HOUR, count

from arbiter import dsl
from arbiter.dsl.types import Type
from arbiter.engine.intake.consumer import IntakeConsumer
from arbiter.engine.intake.messages import InvalidMessage, parse_event, parse_identify
from arbiter.engine.intake.redis_streams import (
    EVENT,
    IDENTIFY,
    RedisStreamSource,
    shard_of,
    wait_drained,
)
from arbiter.engine.plan import AggregateSpec
from arbiter.engine.store import keys
from arbiter.engine.store.profiles import ProfileStore

SCHEMA = {"purchase": {"amount": Type("number")}}
ACTIONS = ["welcome_offer"]
CARTS = count("add_to_cart", 30 * DAY)
SPEND = AggregateSpec("sum", "purchase", "amount", 30 * DAY)


@pytest.fixture(params=["redis", "cluster"])
def url(request: pytest.FixtureRequest) -> str:
    name = "redis_url" if request.param == "redis" else "redis_cluster_url"
    value: str = request.getfixturevalue(name)
    return value


def consumer(client: Any, name: str, shards: int = 3, **kw: Any) -> IntakeConsumer:
    source = RedisStreamSource(client, shards=shards, consumer=name, block_ms=20, **kw)
    return IntakeConsumer(
        source, ProfileStore(client), schema=lambda: SCHEMA, actions=lambda: ACTIONS, batch=50
    )


def event(customer: str, type_: str, ts: float, **extra: Any) -> tuple[str, bytes, bytes]:
    body = {"customer_id": customer, "type": type_, "ts": ts, **extra}
    return customer, EVENT, json.dumps(body).encode()


def identify(anon: str, cust: str) -> tuple[str, bytes, bytes]:
    return anon, IDENTIFY, json.dumps({"anonymous_id": anon, "customer_id": cust}).encode()


def run(url: str, body: Callable[[Any], Awaitable[Any]]) -> Any:
    return run_with_client(url, body)


async def drain(c: IntakeConsumer, until_idle: int = 3) -> None:
    idle = 0
    while idle < until_idle:
        idle = idle + 1 if await c.run_once() == 0 else 0


def test_messages_are_checked_like_the_http_api() -> None:
    now = time.time()
    ok = parse_event(
        {"customer_id": "c", "type": "purchase", "properties": {"amount": 2}}, now, SCHEMA
    )
    assert ok.properties == {"amount": 2.0} and ok.ts == now
    for raw, field in [
        (
            {"customer_id": "c", "type": "purchase", "properties": {"amount": "x"}},
            "properties.amount",
        ),
        ({"customer_id": "", "type": "view"}, "customer_id"),
        ({"customer_id": "c", "type": "view", "timestamp": 1}, "timestamp"),
        ({"customer_id": "c", "type": "view", "ts": now + 3600}, "ts"),
        ([1, 2], None),
    ]:
        with pytest.raises(InvalidMessage) as info:
            parse_event(raw, now, SCHEMA)
        assert info.value.field == field
    with pytest.raises(InvalidMessage, match="same id"):
        parse_identify({"anonymous_id": "a", "customer_id": "a"})


def test_events_identifies_and_dead_letters(url: str) -> None:
    now = time.time()

    async def body(client: Any) -> Any:
        c = consumer(client, "one")
        source = c.source
        assert isinstance(source, RedisStreamSource)
        await source.setup()
        ids = await source.publish(
            [
                event("cookie", "add_to_cart", now - HOUR),
                event("cookie", "purchase", now - HOUR, properties={"amount": 10}),
                event("alice", "purchase", now - DAY, properties={"amount": 5.5}, event_id="o1"),
                event("alice", "purchase", now - DAY, properties={"amount": 5.5}, event_id="o1"),
                identify("cookie", "alice"),
                event("cookie", "add_to_cart", now - 60),  # after the link: alice's
                event("bob", "purchase", now, properties={"amount": "lots"}),  # invalid
                ("bob", b"evnt", b"{}"),  # wrong field name
                ("bob", EVENT, b"{not json"),
                identify("cookie", "bob"),  # 409: linked elsewhere
            ]
        )
        await drain(c)
        store = ProfileStore(client)
        alice = await store.aggregates("alice", [CARTS, SPEND], now)
        dead = await client.xrange(keys.INTAKE_DEAD_LETTERS)
        lags = await source.lag()
        return ids, alice, dead, lags, c.stats

    ids, alice, dead, lags, stats = run(url, body)
    assert alice == {CARTS.key: 2, SPEND.key: 15.5}
    assert (stats.counted, stats.duplicates, stats.identified, stats.dead) == (4, 1, 1, 4)
    reasons = {f[b"message_id"].decode(): f[b"reason"].decode() for _, f in dead}
    assert reasons == {
        ids[6].decode(): "properties.amount: expected a number, got str",
        ids[7].decode(): "a message has one field, 'event' or 'identify' (got ['evnt'])",
        ids[
            8
        ].decode(): "not valid JSON (Expecting property name enclosed in double quotes at column 2)",
        ids[9].decode(): "'cookie' is already linked to another customer",
    }
    assert all(x.pending == 0 and not x.unread for x in lags)


def test_a_batch_not_acknowledged_comes_back_and_counts_once(
    url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    now = time.time()

    async def body(client: Any) -> Any:
        c = consumer(client, "flaky", shards=2)
        source = c.source
        assert isinstance(source, RedisStreamSource)
        await source.setup()
        await source.publish([event(f"c{i % 7}", "add_to_cart", now - i) for i in range(120)])
        real_ack = RedisStreamSource.ack
        calls = {"n": 0}

        async def ack_fails_once(self: RedisStreamSource, deliveries: Any) -> None:
            calls["n"] += 1
            if calls["n"] == 1:
                from redis.exceptions import ConnectionError

                raise ConnectionError("injected: the ack never reached Redis")
            await real_ack(self, deliveries)

        monkeypatch.setattr(RedisStreamSource, "ack", ack_fails_once)
        with pytest.raises(Exception, match="injected"):
            await c.run_once()
        source.rewind()  # what run() does after a failure
        await drain(c)
        store = ProfileStore(client)
        totals = [await store.aggregates(f"c{i}", [CARTS], now) for i in range(7)]
        return sum(t[CARTS.key] for t in totals), c.stats

    total, stats = run(url, body)
    assert total == 120
    assert stats.duplicates > 0  # the first batch was delivered twice, counted once


def test_the_messages_of_a_dead_consumer_are_claimed_by_another(redis_url: str) -> None:
    now = time.time()

    async def body(client: Any) -> Any:
        dead = consumer(client, "dead", shards=2)
        alive = consumer(client, "alive", shards=2, claim_idle_ms=50)
        assert isinstance(dead.source, RedisStreamSource)
        await dead.source.setup()
        await dead.source.publish([event(f"c{i % 3}", "add_to_cart", now - i) for i in range(40)])
        taken = await dead.source.read(20)  # read, then "dies" before writing anything
        assert taken
        await drain(alive)
        # Until the claim: nothing pending is left behind.
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            await alive.run_once()
            if not any(x.pending or x.unread for x in await alive.source.lag()):
                break
        store = ProfileStore(client)
        totals = [await store.aggregates(f"c{i}", [CARTS], now) for i in range(3)]
        info = {}
        for stream in dead.source.streams:
            for row in await client.xinfo_consumers(stream, "arbiter"):
                info[row["name"]] = info.get(row["name"], 0) + row["pending"]
        return sum(t[CARTS.key] for t in totals), info

    total, pending = run(redis_url, body)
    assert total == 40
    assert pending[b"dead"] == 0 and pending[b"alive"] == 0


def test_acknowledged_messages_are_trimmed(redis_url: str) -> None:
    now = time.time()

    async def body(client: Any) -> Any:
        c = consumer(client, "trimmer", shards=1, trim_every_s=0.0)
        assert isinstance(c.source, RedisStreamSource)
        await c.source.setup()
        await c.source.publish([event("c", "view", now) for _ in range(300)])
        await drain(c)
        await c.source.trim()
        return await client.xlen(keys.intake_stream(0))

    # Approximate trimming keeps at most one macro node (100 entries by default).
    assert run(redis_url, body) <= 100


def test_shards_spread_ids_and_wait_drained(redis_cluster_url: str) -> None:
    assert {shard_of(f"c{i}", 4) for i in range(50)} == {0, 1, 2, 3}

    async def body(client: Any) -> bool:
        c = consumer(client, "x", shards=4)
        assert isinstance(c.source, RedisStreamSource)
        await c.source.setup()
        await c.source.publish([event(f"c{i}", "view", time.time()) for i in range(50)])
        assert not await wait_drained(c.source, 0.2)
        await drain(c)
        return await wait_drained(c.source, 5)

    assert run(redis_cluster_url, body)


def test_a_pending_message_trimmed_away_is_a_dead_letter_not_a_crash(redis_url: str) -> None:
    now = time.time()

    async def body(client: Any) -> Any:
        c = consumer(client, "late", shards=1)
        assert isinstance(c.source, RedisStreamSource)
        await c.source.setup()
        ids = await c.source.publish([event("c", "view", now) for _ in range(3)])
        assert len(await c.source.read(10)) == 3  # delivered, then the process "dies"
        await client.xdel(keys.intake_stream(0), ids[1])  # a producer's MAXLEN got it
        c.source.rewind()  # a restart under the same name re-reads its pending messages
        await drain(c)
        dead = await client.xrange(keys.INTAKE_DEAD_LETTERS)
        return ids, dead, c.stats

    ids, dead, stats = run(redis_url, body)
    assert [(f[b"message_id"], f[b"reason"]) for _, f in dead] == [
        (ids[1], b"the message is gone from the stream (trimmed before it was processed)")
    ]
    assert stats.counted == 2


def test_streamed_events_feed_rewards_and_schedule_triggers(url: str) -> None:
    # Events from the stream do what they do over HTTP: a rewarded or measured type
    # goes to the outcome stream (for the customer a linked id resolves to), and an
    # event a `trigger` starts on schedules its firing, once per event.
    now = time.time()
    recovery = dsl.parse(
        "ruleset t\n"
        "context { channel: one of [web, email] }\n"
        "event add_to_cart {}\nevent purchase { amount: number }\n"
        "action remind { value 1, channels [email] }\n"
        "trigger recovery on add_to_cart after 1h unless purchase decide for channel email\n"
        "when context.channel == email offer remind\n",
        "t.rules",
    )
    (decl,) = dsl.check(recovery).triggers.values()

    async def body(client: Any) -> Any:
        source = RedisStreamSource(client, shards=2, consumer="one", block_ms=20)
        c = IntakeConsumer(
            source,
            ProfileStore(client),
            schema=lambda: SCHEMA,
            actions=lambda: ACTIONS,
            outcomes=lambda: {"purchase"},
            triggers=lambda: [("t", decl)],
        )
        await source.setup()
        await source.publish(
            [
                identify("cookie", "alice"),
                event("cookie", "purchase", now - 60, properties={"amount": 3}, event_id="p1"),
                event("carol", "add_to_cart", now - 30, event_id="a1"),
                event("carol", "add_to_cart", now - 30, event_id="a1"),  # redelivered copy
                event("dave", "page_view", now - 30),  # neither rewarded nor a trigger's
            ]
        )
        await drain(c)
        outcomes = await client.xrange(keys.OUTCOME_STREAM)
        due = await client.zrange(keys.TRIGGERS_DUE, 0, -1, withscores=True)
        return outcomes, due

    outcomes, due = run(url, body)
    assert [(f[b"customer_id"], f[b"type"]) for _, f in outcomes] == [(b"alice", b"purchase")]
    assert len(due) == 1
    member, when = due[0]
    assert b"carol" in member and b"recovery" in member
    assert when == pytest.approx(now - 30 + HOUR)


def test_grouped_properties_are_counted_per_value(redis_url: str) -> None:
    """The consumer writes the string properties the live rules group by, as HTTP does."""
    now = time.time()
    views = [("shoes", 60), ("shoes", 120), ("bags", 180), ("shoes", 240)]
    top = AggregateSpec("max_count", "product_view", "category", DAY)

    async def body(client: Any) -> Any:
        source = RedisStreamSource(client, shards=2, consumer="g", block_ms=20)
        store = ProfileStore(client)
        c = IntakeConsumer(
            source,
            store,
            schema=lambda: {"product_view": {"category": Type("string")}},
            actions=lambda: ACTIONS,
            grouped=lambda: {"product_view.category"},
        )
        await source.setup()
        await source.publish(
            [
                event("v", "product_view", now - ago, properties={"category": category})
                for category, ago in views
            ]
        )
        await drain(c)
        return await store.aggregates("v", [top], now)

    assert run(redis_url, body) == {top.key: 3.0}

"""engine.triggers on real Redis: scheduled by events, fired once, in their channel, with the rules.

Runners share one Redis like two server workers; a "crash" is a runner that
claims firings (or decides) and never finishes them; a "restart" is a new
runner after the lease ran out.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

import pytest
from support.redis import run_with_client as run

from arbiter import dsl
from arbiter.engine.codegen.compiler import compile_plan
from arbiter.engine.log.replay import replay
from arbiter.engine.log.writer import DecisionLog
from arbiter.engine.plan import Plan
from arbiter.engine.records import RECORD_DECODER
from arbiter.engine.store import contact_history, keys
from arbiter.engine.store.client import AsyncRedisClient
from arbiter.engine.store.profiles import Event, ProfileStore
from arbiter.engine.triggers.runner import TriggerRunner
from arbiter.engine.triggers.schedule import decode_firing, schedule_triggers

RULES = """ruleset shop
context { channel: one of [web, email] }
profile { consents: set<string> }
event add_to_cart
event purchase { amount: number }
action cart_reminder { value 15 channels [email] cap 1 per 1d requires consent "email" }
action web_banner { value 1 channels [web] }
when count(add_to_cart within 1d) > 0 offer cart_reminder
when true offer web_banner
trigger cart_recovery on add_to_cart after 1h unless purchase decide for channel email
"""
HOUR = 3600.0
# Recent times: event windows live in Redis by real time, so events long past would expire.
T0 = float(int(time.time())) - 12 * HOUR


@pytest.fixture(scope="module")
def plan() -> Plan:
    return compile_plan(dsl.check(dsl.parse(RULES, "shop.rules")))


@dataclass
class Live:
    plan: Plan
    models: dict[str, Any] = field(default_factory=dict)
    bandits: dict[str, Any] = field(default_factory=dict)


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class Shop:
    """The store, the log and a runner factory over one Redis client."""

    def __init__(self, redis: AsyncRedisClient, plan: Plan, clock: Clock, shards: int = 1) -> None:
        self.redis, self.plan, self.clock, self.shards = redis, plan, clock, shards
        self.store = ProfileStore(redis)
        self.log = DecisionLog(redis, self.store)
        self.specs = [("shop", d) for d in plan.checked.triggers.values()]

    def runner(self, **kw: Any) -> TriggerRunner:
        return TriggerRunner(
            self.redis,
            self.store,
            self.log,
            {"shop": Live(self.plan)}.get,
            clock=self.clock,
            shards=self.shards,
            **kw,
        )

    async def customer(self, cid: str, consent: bool = True) -> None:
        await self.store.put_profile(cid, {"consents": ["email"] if consent else []})

    async def event(self, cid: str, kind: str, at: float, event_id: str | None = None) -> None:
        events = [Event(cid, kind, at, {}, event_id)]
        await self.store.add_events(events, now=at)
        await schedule_triggers(self.redis, self.specs, events, at, shards=self.shards)


async def published(redis: AsyncRedisClient) -> list[dict[str, str]]:
    entries = await redis.xrange(keys.TRIGGER_STREAM)
    return [{k.decode(): v.decode() for k, v in f.items()} for _, f in entries]


def test_the_trigger_declaration_parses_checks_and_formats() -> None:
    checked = dsl.check(dsl.parse(RULES, "shop.rules"))
    t = checked.triggers["cart_recovery"]
    assert (t.on, t.after_seconds, t.unless, t.channel) == (
        "add_to_cart",
        HOUR,
        "purchase",
        "email",
    )
    text = dsl.format_ruleset(dsl.parse(RULES, "shop.rules"))
    assert (
        "trigger cart_recovery on add_to_cart after 1h unless purchase decide for channel email"
        in text
    )
    for bad, code in (
        ("decide for channel sms", "unknown-channel"),
        ("after 0s", "bad-window"),
        ("unless purchse", "unknown-event"),
    ):
        old = {"unknown-channel": "decide for channel email", "bad-window": "after 1h"}.get(
            code, "unless purchase"
        )
        with pytest.raises(dsl.RulesError) as info:
            dsl.check(dsl.parse(RULES.replace(old, bad), "shop.rules"))
        assert [d.code for d in info.value.diagnostics if d.severity == "error"] == [code]


def test_fires_once_when_due_in_its_channel_unless_purchased_erased_or_not_allowed(
    redis_url: str, plan: Plan
) -> None:
    async def body(redis: AsyncRedisClient) -> None:
        clock = Clock(T0)
        shop = Shop(redis, plan, clock)
        for cid, consent in (("ok", True), ("buyer", True), ("gone", True), ("no_consent", False)):
            await shop.customer(cid, consent)
            await shop.event(cid, "add_to_cart", T0, event_id=f"{cid}-cart")
        await shop.event("ok", "add_to_cart", T0, event_id="ok-cart")  # sent twice: one firing
        await shop.event("buyer", "purchase", T0 + 1800)
        await shop.store.erase("gone")
        runner = shop.runner()
        clock.now = T0 + HOUR - 1
        assert await runner.run_once() == 0  # not due yet
        clock.now = T0 + HOUR + 2
        assert await runner.run_once() == 4
        stats = runner.snapshot()
        assert (stats.published, stats.cancelled, stats.erased, stats.no_action) == (1, 1, 1, 1)
        [entry] = await published(redis)
        assert (entry["customer_id"], entry["trigger"], entry["channel"]) == (
            "ok",
            "cart_recovery",
            "email",
        )
        assert '"action": "cart_reminder"' in entry["actions"]  # not the web banner: email channel
        assert float(entry["due"]) == T0 + HOUR
        assert stats.delays == [pytest.approx(2.0)]
        # The decision is logged like any other, with the channel in its request.
        raw = await redis.get(keys.decision(entry["decision_id"]))
        assert raw is not None and b'"channel":"email"' in raw
        assert replay(plan, RECORD_DECODER.decode(raw)).identical  # visible in replay
        assert await redis.zcard(keys.TRIGGERS_DUE) == 0
        assert await redis.zcard(keys.TRIGGERS_INFLIGHT) == 0
        # Nothing fires twice.
        clock.now += 10 * HOUR
        assert await runner.run_once() == 0

    run(redis_url, body)


def test_the_contact_cap_holds_across_firings(redis_url: str, plan: Plan) -> None:
    async def body(redis: AsyncRedisClient) -> None:
        clock = Clock(T0)
        shop = Shop(redis, plan, clock)
        await shop.customer("c")
        await shop.event("c", "add_to_cart", T0, "a")
        await shop.event("c", "add_to_cart", T0 + 600, "b")
        clock.now = T0 + 2 * HOUR
        runner = shop.runner()
        await runner.run_once()
        stats = runner.snapshot()
        assert (stats.published, stats.no_action) == (1, 1)  # cap 1 per 1d
        assert len(await published(redis)) == 1

    run(redis_url, body)


async def in_flight(redis: AsyncRedisClient, shards: int) -> int:
    return sum([await redis.zcard(keys.triggers_inflight(k)) for k in range(shards)])


async def _two_workers_and_a_restart(redis: AsyncRedisClient, plan: Plan, shards: int = 1) -> None:
    """40 customers; a worker dies holding firings (some decided), two others finish.

    With ``shards`` the schedule is split over that many hash tags."""
    clock = Clock(T0)
    shop = Shop(redis, plan, clock, shards)
    for i in range(40):
        await shop.customer(f"c{i}")
        await shop.event(f"c{i}", "add_to_cart", T0 + i, f"e{i}")
    clock.now = T0 + HOUR + 60
    due = [await redis.zcard(keys.triggers_due(k)) for k in range(shards)]
    assert sum(due) == 40
    if shards > 1:
        assert all(due), due  # every shard has some
    per_shard = 10 // shards  # a claim takes up to `batch` from each shard
    dead = shop.runner(batch=per_shard, lease_seconds=30)
    held = await dead.claim()
    assert len(held) == sum(min(per_shard, d) for d in due) >= 8
    # It even decided three of them before dying: no second decision, no second contact.
    for member in held[:3]:
        live = {"shop": Live(plan)}["shop"]
        await dead._decide(live, decode_firing(member), "email")
    a, b = shop.runner(batch=4), shop.runner(batch=4)
    await asyncio.gather(a.run_once(), b.run_once(), a.run_once(), b.run_once())
    while await a.run_once() + await b.run_once():
        pass
    # The dead worker's firings are still leased; after the lease, the "restarted" workers
    # take them.
    assert await in_flight(redis, shards) == len(held)
    clock.now += 31
    while await a.run_once() + await b.run_once():
        pass
    entries = await published(redis)
    assert sorted(e["customer_id"] for e in entries) == sorted(f"c{i}" for i in range(40))
    assert a.stats.published + b.stats.published == 40
    # One decision, one contact per customer, though three were decided by the dead worker.
    assert len({e["decision_id"] for e in entries}) == 40
    for i in range(40):
        blob = await redis.hget(keys.contact_history(f"c{i}"), "c:cart_reminder")
        assert len(contact_history.times(blob)) == 1
    assert await in_flight(redis, shards) == 0
    assert sum([await redis.zcard(keys.triggers_due(k)) for k in range(shards)]) == 0


def test_two_workers_and_a_restart_fire_every_trigger_exactly_once(
    redis_url: str, plan: Plan
) -> None:
    run(redis_url, lambda redis: _two_workers_and_a_restart(redis, plan))


def test_two_workers_and_a_restart_on_redis_cluster(redis_cluster_url: str, plan: Plan) -> None:
    run(redis_cluster_url, lambda redis: _two_workers_and_a_restart(redis, plan))


def test_a_sharded_schedule_fires_every_trigger_exactly_once(redis_url: str, plan: Plan) -> None:
    run(redis_url, lambda redis: _two_workers_and_a_restart(redis, plan, shards=4))


def test_a_sharded_schedule_spreads_over_the_cluster_and_fires_once(
    redis_cluster_url: str, plan: Plan
) -> None:
    async def body(redis: Any) -> None:
        await redis.initialize()  # the slot map
        # The shards' keys hash to slots on different masters; a shard's two sets share one.
        nodes = set()
        for k in range(4):
            due, inflight = keys.triggers_due(k), keys.triggers_inflight(k)
            assert redis.keyslot(due) == redis.keyslot(inflight)
            nodes.add(redis.get_node_from_key(due).name)
        assert len(nodes) >= 2, nodes
        await _two_workers_and_a_restart(redis, plan, shards=4)

    run(redis_cluster_url, body)


def test_a_backfilled_old_event_schedules_nothing(redis_url: str, plan: Plan) -> None:
    async def body(redis: AsyncRedisClient) -> None:
        shop = Shop(redis, plan, Clock(T0))
        events = [Event("c", "add_to_cart", T0 - 30 * 86400, {}, "old")]
        assert await schedule_triggers(redis, shop.specs, events, T0) == 0
        assert await redis.zcard(keys.TRIGGERS_DUE) == 0

    run(redis_url, body)

"""engine.learning.bandit_store against real Redis: publishing, cold start, hot swap, restarts."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import TypeVar

import pytest
from redis.exceptions import RedisError
from support.redis import run_with_client as run

from arbiter import dsl
from arbiter.engine.codegen.compiler import compile_plan
from arbiter.engine.learning.bandit import BanditModel, Exploration
from arbiter.engine.learning.bandit_store import (
    BanditRegistry,
    PublishRejected,
    bandit_keys,
    exploration_of,
    load_published,
    publish,
    published_version,
)
from arbiter.engine.plan import Plan
from arbiter.engine.store.client import AsyncRedisClient, connect
from arbiter.engine.store.embedded import EmbeddedRedis

T = TypeVar("T")

RULES = """ruleset shop
context { device: string }
action a1 { value 1 }
action a2 { value 1 }
action a3 { value 1 }
when true offer a1
when true offer a2
when true offer a3
bandit home over [a1, a2, a3] features (context.device) explore {explore}
"""
SHARED = {"context.device": "mobile"}
ARMS = [{"action": "a1"}, {"action": "a2"}, {"action": "a3"}]


def plan_with(explore: str = "epsilon 0.1") -> Plan:
    return compile_plan(dsl.check(dsl.parse(RULES.replace("{explore}", explore), "shop.rules")))


def trained(rounds: int, exploration: Exploration | None = None) -> BanditModel:
    """A model that learned `rounds` times that a3 pays on mobile."""
    model = BanditModel("home", exploration or Exploration("epsilon", 0.1))
    for i in range(rounds):
        chosen = i % 3
        model.learn(SHARED, ARMS, chosen, 1.0 if chosen == 2 else 0.0, 1 / 3)
    return model


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_cold_start_is_uniform_and_version_zero(redis_url: str) -> None:
    async def body(redis: AsyncRedisClient) -> None:
        registry = BanditRegistry(redis)
        bandits = await registry.load(plan_with())
        assert list(bandits) == ["home"]
        assert bandits["home"].version == 0
        assert bandits["home"].pmf(SHARED, ARMS) == [1 / 3, 1 / 3, 1 / 3]
        assert registry.versions("shop") == {"home": 0}
        assert registry.bandits("shop") is bandits
        assert registry.bandits("other") == {}
        assert await published_version(redis, "shop", "home") == 0

    run(redis_url, body)


def test_publish_stores_state_and_bumps_the_version(redis_url: str) -> None:
    async def body(redis: AsyncRedisClient) -> None:
        model = trained(30)
        assert await publish(redis, "shop", "home", model) == 1
        assert await publish(redis, "shop", "home", trained(60)) == 2
        published = await load_published(redis, "shop", "home")
        assert published.version == 2
        assert BanditModel.deserialize("home", published.state).version == 60
        examples = await redis.hget(bandit_keys("shop", "home").model, "examples")
        assert examples == b"60"

    run(redis_url, body)


def test_conditional_publish_refuses_a_stale_version_or_a_foreign_lease(redis_url: str) -> None:
    async def body(redis: AsyncRedisClient) -> None:
        k = bandit_keys("shop", "home")
        await publish(redis, "shop", "home", trained(3))
        with pytest.raises(PublishRejected, match="moved past 0"):
            await publish(redis, "shop", "home", trained(6), expected_version=0)
        await redis.set(k.leader, "someone-else")
        with pytest.raises(PublishRejected, match="lease is not ours"):
            await publish(redis, "shop", "home", trained(6), lease_token="me", done=[("d1", "a")])
        # Nothing was written by the refused attempts: not the state, not the markers.
        assert (await load_published(redis, "shop", "home")).version == 1
        assert await redis.zcard(k.done) == 0
        assert await publish(redis, "shop", "home", trained(6), expected_version=1) == 2

    run(redis_url, body)


def test_another_worker_hot_swaps_within_the_interval(redis_url: str) -> None:
    async def body(redis: AsyncRedisClient) -> None:
        clock = FakeClock()
        worker = BanditRegistry(redis, check_interval_ms=1000, clock=clock)
        bandits = await worker.load(plan_with())
        # What a request handler holds: the same mapping, updated in place.
        held = worker.bandits("shop")
        assert held["home"].version == 0

        # The learner (elsewhere) publishes.
        await publish(redis, "shop", "home", trained(90))

        clock.now += 0.999  # inside the interval: no Redis call, no swap
        assert await worker.refresh() == []
        assert held["home"].version == 0

        clock.now += 0.001
        assert await worker.refresh() == [("shop", "home")]
        assert held is bandits
        assert held["home"].version == 90
        assert worker.versions("shop") == {"home": 1}
        pmf = held["home"].pmf(SHARED, ARMS)
        assert pmf.index(max(pmf)) == 2

        # Nothing new: the next check swaps nothing.
        clock.now += 1.0
        assert await worker.refresh() == []

    run(redis_url, body)


def test_watch_swaps_in_the_background(redis_url: str) -> None:
    async def body(redis: AsyncRedisClient) -> None:
        worker = BanditRegistry(redis, check_interval_ms=10)
        held = await worker.load(plan_with())
        stop = asyncio.Event()
        task = asyncio.create_task(worker.watch(stop))
        await publish(redis, "shop", "home", trained(12))
        deadline = time.monotonic() + 5.0
        while held["home"].version != 12 and time.monotonic() < deadline:
            await asyncio.sleep(0.005)
        stop.set()
        await task
        assert held["home"].version == 12

    run(redis_url, body)


def test_watch_survives_an_unreachable_redis(redis_url: str, tmp_path: Path) -> None:
    async def body(redis: AsyncRedisClient) -> None:
        prepared = await BanditRegistry(redis).prepare(plan_with())
        # This worker's Redis goes away after its plan was loaded.
        dead = connect(f"unix://{tmp_path}/nothing-here.sock")
        try:
            worker = BanditRegistry(dead, check_interval_ms=1)
            held = worker.install(prepared)
            with pytest.raises(RedisError):
                await worker.refresh(force=True)
            stop = asyncio.Event()
            task = asyncio.create_task(worker.watch(stop, poll_ms=1))
            await asyncio.sleep(0.05)
            stop.set()
            await task  # errors were logged, none escaped
            assert held["home"].version == 0  # the models in use are untouched
        finally:
            await dead.aclose()

    run(redis_url, body)


def test_prepare_installs_nothing_until_install(redis_url: str) -> None:
    async def body(redis: AsyncRedisClient) -> None:
        registry = BanditRegistry(redis)
        old = await registry.load(plan_with("epsilon 0.1"))
        await publish(redis, "shop", "home", trained(9))
        prepared = await registry.prepare(plan_with("epsilon 0.2"))
        assert registry.bandits("shop") is old
        assert old["home"].version == 0
        new = registry.install(prepared)
        assert registry.bandits("shop") is new
        # The published state, with the new plan's exploration rate.
        assert new["home"].version == 9
        assert new["home"].exploration == Exploration("epsilon", 0.2)

    run(redis_url, body)


def test_state_that_cannot_be_used_is_a_rules_error_at_the_bandit(redis_url: str) -> None:
    async def body(redis: AsyncRedisClient) -> None:
        registry = BanditRegistry(redis)
        old = await registry.load(plan_with("epsilon 0.1"))
        await publish(redis, "shop", "home", trained(9))
        with pytest.raises(dsl.RulesError) as info:
            await registry.prepare(plan_with("softmax 2"))
        [diag] = info.value.diagnostics
        assert diag.code == "bandit-state"
        assert diag.span.line == 9
        assert diag.message.startswith(
            "bandit 'home' cannot use its published model: bandit 'home' was saved with epsilon"
        )
        assert registry.bandits("shop") is old

    run(redis_url, body)


def test_exploration_of_refuses_what_vw_cannot_do() -> None:
    decl = plan_with("softmax 0").checked.bandits["home"]
    with pytest.raises(dsl.RulesError) as info:
        exploration_of(decl)
    assert info.value.first.code == "bad-rate"
    assert exploration_of(plan_with("squarecb 10").checked.bandits["home"]) == Exploration(
        "squarecb", 10.0
    )


def test_state_survives_a_restart_of_the_server_and_of_redis(tmp_path: Path) -> None:
    server = EmbeddedRedis(tmp_path / "redis", persistent=True)
    server.start()
    try:
        run(server.url, lambda redis: publish(redis, "shop", "home", trained(42)))
        server.stop()
        server.start()

        async def body(redis: AsyncRedisClient) -> None:
            bandits = await BanditRegistry(redis).load(plan_with())
            assert bandits["home"].version == 42
            pmf = bandits["home"].pmf(SHARED, ARMS)
            assert pmf.index(max(pmf)) == 2

        run(server.url, body)
    finally:
        server.stop()


def test_publish_and_hot_swap_on_redis_cluster(redis_cluster_url: str) -> None:
    async def body(redis: AsyncRedisClient) -> None:
        clock = FakeClock()
        worker = BanditRegistry(redis, clock=clock)
        held = await worker.load(plan_with())
        k = bandit_keys("shop", "home")
        await redis.set(k.leader, "me")
        assert await publish(redis, "shop", "home", trained(5), lease_token="me") == 1
        clock.now += 1.0
        assert await worker.refresh() == [("shop", "home")]
        assert held["home"].version == 5

    run(redis_cluster_url, body)

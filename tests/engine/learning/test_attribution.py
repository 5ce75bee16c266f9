"""engine.learning.attribution on real Redis: rewards from events, windows that close with 0.

Decisions are made by engine.decision.decide and logged by the real DecisionLog
(which opens the exposures), events go through ProfileStore.add_events (which
appends rewarded types to the outcome stream), the Attributor turns them into
rewards, and the real Learner learns them.
"""

from __future__ import annotations

import asyncio
from typing import Any
from unittest.mock import patch

import msgspec
import pytest
from support.redis import run_with_client as run

from arbiter import dsl
from arbiter.engine.codegen.compiler import compile_plan
from arbiter.engine.decision.decide import decide
from arbiter.engine.decision.oracle import LiveOracle
from arbiter.engine.learning import attribution
from arbiter.engine.learning.attribution import (
    DEFAULT_WINDOW_SECONDS,
    Attributor,
    exposures_of,
    known_outcome_types,
    outcome_types,
    publish_outcome_types,
)
from arbiter.engine.learning.bandit import Exploration
from arbiter.engine.learning.learner import Learner, LearnerConfig
from arbiter.engine.learning.reward_writer import Reward, append_rewards
from arbiter.engine.log.writer import DecisionLog
from arbiter.engine.plan import Plan
from arbiter.engine.records import DecideRequest, DecisionRecord, Inputs
from arbiter.engine.store import keys
from arbiter.engine.store.client import AsyncRedisClient
from arbiter.engine.store.profiles import Event, ProfileStore

RULES = """ruleset shop
context { device: string }
event purchase { amount: number }
event click
action a1 { value 1 }
action a2 { value 1 }
action a3 { value 1 }
action b1 { value 1 }
action b2 { value 1 }
when true offer a1
when true offer a2
when true offer a3
when true offer b1
when true offer b2
bandit home over [a1, a2, a3] features (context.device) explore epsilon 0.1
  reward purchase within 1h value amount
bandit other over [b1, b2] features (context.device) reward click
"""
T0 = 1.7e9
HOUR = 3600.0


@pytest.fixture(scope="module")
def plan() -> Plan:
    return compile_plan(dsl.check(dsl.parse(RULES, "shop.rules")))


class Clock:
    """A settable wall clock for closing windows."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class Site:
    """Decides and logs as the server does; sends events as a site does."""

    def __init__(self, redis: AsyncRedisClient, plan: Plan) -> None:
        self.redis = redis
        self.plan = plan
        self.store = ProfileStore(redis)
        self.log = DecisionLog(redis, self.store)
        self.types = outcome_types(plan.checked.bandits.values())
        self.n = 0

    async def decide(self, customer: str, at: float, device: str = "mobile") -> DecisionRecord:
        self.n += 1
        _, record = decide(
            self.plan,
            DecideRequest(customer, {"device": device}, limit=3),
            Inputs(),
            decision_id=f"d{self.n:05d}",
            now=at,
            oracle=LiveOracle({}, {}),
        )
        self.log.submit(record, (), exposures_of(self.plan.checked.bandits, record))
        await self.log.flush()
        return record

    async def event(self, customer: str, kind: str, at: float, **props: Any) -> None:
        await self.store.add_events([Event(customer, kind, at, props)], now=at, outcomes=self.types)


def attributor(redis: AsyncRedisClient, clock: Clock) -> Attributor:
    return Attributor(redis, grace=0, clock=clock)


async def rewards(redis: AsyncRedisClient) -> list[dict[str, str]]:
    entries = await redis.xrange(keys.REWARD_STREAM)
    return [{k.decode(): v.decode() for k, v in fields.items()} for _, fields in entries]


def chosen(record: DecisionRecord, bandit: str = "home") -> str:
    return next(b.chosen for b in record.bandits if b.bandit == bandit)


def test_reward_clause_parses_checks_and_formats() -> None:
    checked = dsl.check(dsl.parse(RULES, "shop.rules"))
    home = checked.bandits["home"]
    assert (home.reward, home.reward_within, home.reward_value) == ("purchase", HOUR, "amount")
    other = checked.bandits["other"]
    assert (other.reward, other.reward_within, other.reward_value) == ("click", None, None)
    assert "reward purchase within 1h value amount" in dsl.format_ruleset(
        dsl.parse(RULES, "shop.rules")
    )
    bad = RULES.replace("value amount", "value amout").replace("within 1h", "within 0s")
    assert error_codes(bad) == ["bad-window", "unknown-field"]
    assert error_codes(RULES.replace("reward click", "reward click value amount")) == [
        "unknown-field"
    ]


def error_codes(text: str) -> list[str]:
    with pytest.raises(dsl.RulesError) as info:
        dsl.check(dsl.parse(text, "shop.rules"))
    return [d.code for d in info.value.diagnostics if d.severity == "error"]


def test_an_event_in_the_window_rewards_the_decision_with_its_value(
    redis_url: str, plan: Plan
) -> None:
    async def body(redis: AsyncRedisClient) -> None:
        site, clock = Site(redis, plan), Clock(T0)
        record = await site.decide("c1", T0)
        [exp, click_exp] = exposures_of(plan.checked.bandits, record)
        assert (exp.event, exp.deadline, exp.value) == ("purchase", T0 + HOUR, "amount")
        assert click_exp.deadline == T0 + DEFAULT_WINDOW_SECONDS
        await site.event("c1", "purchase", T0 + 600, amount=42.5)
        await site.event("c1", "page_view", T0 + 700)  # not an outcome type: not on the stream
        assert await redis.xlen(keys.OUTCOME_STREAM) == 1
        stats = await attributor(redis, clock).run_once()
        assert (stats.events, stats.rewarded, stats.closed) == (1, 1, 0)
        assert await rewards(redis) == [
            {
                "decision_id": record.decision_id,
                "action": chosen(record),
                "reward": "42.5",
                "ts": repr(T0 + 600),
                "source": "event",
            }
        ]
        # The learner learns it like explicit feedback.
        learner = Learner(
            redis, "shop", "home", Exploration("epsilon", 0.1), config=LearnerConfig(lease_ms=1000)
        )
        learned = await learner.run_once()
        assert learned.learned == 1
        # The click bandit's exposure is still open; its window closes with reward 0.
        clock.now = T0 + DEFAULT_WINDOW_SECONDS + 1
        stats = await attributor(redis, clock).run_once()
        assert stats.closed == 1
        last = (await rewards(redis))[-1]
        assert (last["action"], last["reward"], last["source"]) == (
            chosen(record, "other"),
            "0.0",
            "window",
        )
        assert await redis.zcard(keys.EXPOSURES_DUE) == 0
        assert await redis.zcard(keys.exposures("c1")) == 0

    run(redis_url, body)


def test_no_event_means_reward_zero_when_the_window_closes_and_not_before(
    redis_url: str, plan: Plan
) -> None:
    async def body(redis: AsyncRedisClient) -> None:
        site, clock = Site(redis, plan), Clock(T0 + HOUR - 1)
        record = await site.decide("c1", T0)
        # An event before the decision and one after the window reward nothing.
        await site.event("c1", "purchase", T0 - 10, amount=5)
        await site.event("c1", "purchase", T0 + HOUR + 10, amount=5)
        stats = await attributor(redis, clock).run_once()
        assert (stats.events, stats.rewarded, stats.closed) == (2, 0, 0)
        assert await rewards(redis) == []
        clock.now = T0 + HOUR + 1
        stats = await attributor(redis, clock).run_once()
        assert stats.closed == 1
        [reward] = await rewards(redis)
        assert (reward["decision_id"], reward["action"], reward["reward"]) == (
            record.decision_id,
            chosen(record),
            "0.0",
        )

    run(redis_url, body)


def test_every_open_decision_is_rewarded_once_by_the_first_event(
    redis_url: str, plan: Plan
) -> None:
    async def body(redis: AsyncRedisClient) -> None:
        site, clock = Site(redis, plan), Clock(T0)
        first = await site.decide("c1", T0)
        second = await site.decide("c1", T0 + 60)
        other = await site.decide("c2", T0 + 60)
        await site.event("c1", "purchase", T0 + 30, amount=1)  # after the first decision only
        await site.event("c1", "purchase", T0 + 120, amount=2)
        await site.event("c1", "purchase", T0 + 180, amount=3)  # both already rewarded
        stats = await attributor(redis, clock).run_once()
        assert stats.rewarded == 2
        got = {r["decision_id"]: r["reward"] for r in await rewards(redis)}
        assert got == {first.decision_id: "1.0", second.decision_id: "2.0"}
        clock.now = T0 + 2 * HOUR
        await attributor(redis, clock).run_once()
        got = {
            r["decision_id"]: r["reward"]
            for r in await rewards(redis)
            if r["action"].startswith("a")
        }
        assert got[other.decision_id] == "0.0"  # c2 bought nothing

    run(redis_url, body)


def test_explicit_feedback_first_wins_and_a_missing_value_rewards_nothing(
    redis_url: str, plan: Plan
) -> None:
    async def body(redis: AsyncRedisClient) -> None:
        site, clock = Site(redis, plan), Clock(T0)
        fed = await site.decide("c1", T0)
        await site.decide("c2", T0)
        # The site sent feedback for c1's decision (POST /v1/feedback sets this marker).
        await redis.set(keys.feedback_seen(fed.decision_id, chosen(fed)), b"1", nx=True)
        await site.event("c1", "purchase", T0 + 5, amount=9)
        await site.event("c2", "purchase", T0 + 5)  # no amount: nothing to reward with
        stats = await attributor(redis, clock).run_once()
        assert (stats.rewarded, stats.duplicate, stats.no_value) == (0, 1, 1)
        assert await rewards(redis) == []
        assert await redis.zcard(keys.exposures("c2")) == 2  # still open, both bandits

    run(redis_url, body)


def test_an_erased_customer_gets_no_reward_at_the_window_end(redis_url: str, plan: Plan) -> None:
    async def body(redis: AsyncRedisClient) -> None:
        site = Site(redis, plan)
        await site.decide("c1", T0)
        await site.store.erase("c1")
        stats = await attributor(redis, Clock(T0 + 2 * DEFAULT_WINDOW_SECONDS)).run_once()
        assert stats.closed == 0
        assert await rewards(redis) == []
        assert await redis.zcard(keys.EXPOSURES_DUE) == 0

    run(redis_url, body)


async def _many_customers_two_attributors(redis: AsyncRedisClient, plan: Plan) -> None:
    """40 customers, half buy; two attributors (two workers) race on every event and window."""
    site = Site(redis, plan)
    records = [await site.decide(f"c{i}", T0 + i) for i in range(40)]
    for i in range(0, 40, 2):
        await site.event(f"c{i}", "purchase", T0 + i + 30, amount=i + 1)
    clock = Clock(T0 + 10 * DEFAULT_WINDOW_SECONDS)
    a, b = attributor(redis, clock), attributor(redis, clock)
    a.batch = b.batch = 3  # many small batches, so the two interleave
    await asyncio.gather(a.run_once(), b.run_once())
    got: dict[tuple[str, str], list[str]] = {}
    for r in await rewards(redis):
        got.setdefault((r["decision_id"], r["action"]), []).append(r["reward"])
    print(
        "DBG",
        a.stats,
        b.stats,
        [(r["decision_id"], r["reward"], r["source"]) for r in await rewards(redis)],
    )
    # Exactly one reward per exposure: 40 decisions x 2 rewarded bandits.
    assert len(got) == 80 and all(len(v) == 1 for v in got.values())
    for i, record in enumerate(records):
        expected = repr(float(i + 1)) if i % 2 == 0 else "0.0"
        assert got[(record.decision_id, chosen(record))] == [expected]
    assert a.stats.events + b.stats.events == 20
    assert a.stats.rewarded + b.stats.rewarded == 20
    assert a.stats.closed + b.stats.closed == 60


def test_two_workers_reward_each_decision_exactly_once(redis_url: str, plan: Plan) -> None:
    run(redis_url, lambda redis: _many_customers_two_attributors(redis, plan))


def test_two_workers_on_redis_cluster(redis_cluster_url: str, plan: Plan) -> None:
    run(redis_cluster_url, lambda redis: _many_customers_two_attributors(redis, plan))


def test_an_exposure_written_after_its_event_is_rewarded_by_the_second_pass(
    redis_url: str, plan: Plan
) -> None:
    async def body(redis: AsyncRedisClient) -> None:
        site = Site(redis, plan)
        # The decision is made before the purchase, but the write-behind log stores it after
        # the attributor first saw the purchase.
        _, record = decide(
            plan,
            DecideRequest("c1", {"device": "mobile"}, limit=5),
            Inputs(),
            decision_id="late",
            now=T0,
            oracle=LiveOracle({}, {}),
        )
        await site.event("c1", "purchase", T0 + 1, amount=3)
        attributor = Attributor(redis, grace=3600, clock=Clock(T0))
        assert await attributor.attribute_once() == 1  # first pass: nothing open yet
        assert await rewards(redis) == []
        assert await redis.xpending(keys.OUTCOME_STREAM, "attribution") is not None
        site.log.submit(record, (), exposures_of(plan.checked.bandits, record))
        await site.log.flush()
        attributor.grace = 0
        assert await attributor.attribute_once() == 1  # the second pass, then acknowledged
        [reward] = await rewards(redis)
        assert (reward["decision_id"], reward["reward"]) == ("late", "3.0")
        assert (await redis.xpending(keys.OUTCOME_STREAM, "attribution"))["pending"] == 0
        assert attributor.stats.events == 1  # counted once, though handled twice


def test_outcome_types_are_published_for_ingesters(redis_url: str, plan: Plan) -> None:
    async def body(redis: AsyncRedisClient) -> None:
        await publish_outcome_types(redis, outcome_types(plan.checked.bandits.values()))
        assert await known_outcome_types(redis) == {"purchase", "click"}

    run(redis_url, body)


def test_a_window_with_an_unhandled_event_waits_for_it(redis_url: str, plan: Plan) -> None:
    async def body(redis: AsyncRedisClient) -> None:
        site, clock = Site(redis, plan), Clock(T0 + HOUR + 5)
        record = await site.decide("c1", T0)
        await site.event("c1", "purchase", T0 + 60, amount=7)  # in the window, not yet handled
        late = Attributor(redis, grace=0, clock=clock, max_defer=30)
        await late.close_due()
        assert (late.stats.deferred, late.stats.closed) == (1, 0)
        assert await rewards(redis) == []
        await late.attribute_once()  # the attributor catches up: the purchase is rewarded
        [reward] = await rewards(redis)
        assert (reward["decision_id"], reward["reward"]) == (record.decision_id, "7.0")
        # A window closed long after its end (the workers were down) still waits for the
        # attributors; past the longest wait, it closes with 0 though an event is unhandled.
        other = await site.decide("c2", T0)
        await site.event("c2", "purchase", T0 + 60, amount=8)
        clock.now = T0 + 2 * HOUR
        gone = Attributor(redis, grace=0, clock=clock, max_defer=30)
        await gone.close_due()
        assert (gone.stats.deferred, gone.stats.closed) == (1, 0)
        clock.now += 29
        await gone.close_due()  # still waiting: 29 s after it first found the window
        assert (gone.stats.deferred, gone.stats.closed) == (2, 0)
        clock.now += 2
        await Attributor(redis, grace=0, clock=clock, max_defer=30).close_due()  # a restart
        assert (await rewards(redis))[-1] == {
            "decision_id": other.decision_id, "action": chosen(other), "reward": "0.0",
            "ts": repr(T0 + HOUR), "source": "window",
        }  # fmt: skip
        assert await redis.hlen(keys.EXPOSURES_DEFERRED) == 0

    run(redis_url, body)


def test_a_closing_window_with_an_unmatched_valueless_event_rewards_one(
    redis_url: str, plan: Plan
) -> None:
    async def body(redis: AsyncRedisClient) -> None:
        site = Site(redis, plan)
        record = await site.decide("c1", T0)
        await site.event("c1", "click", T0 + 60)  # never handled by an attributor
        closer = Attributor(redis, grace=0, clock=Clock(T0 + DEFAULT_WINDOW_SECONDS + 1))
        await closer.close_due()
        got = {(r["action"], r["reward"], r["source"]) for r in await rewards(redis)}
        # The click bandit's exposure: 1, the event proven by last_seen; the purchase one: 0.
        assert (chosen(record, "other"), "1.0", "event") in got
        assert (chosen(record), "0.0", "window") in got

    run(redis_url, body)


class Killed(Exception):
    """The injected death of an attributor's process at one point of its work."""


async def _killed_then_two_workers_finish(
    redis: AsyncRedisClient, plan: Plan, path: str, point: str
) -> None:
    """An attributor dies mid-settlement; two others, racing, finish: every reward exactly once.

    ``path``: where it dies, rewarding events ("event") or closing windows
    ("window"). ``point``: just before its batch of rewards is appended, or
    just after (the exposures are still open). The mocks only inject the death.
    """
    site = Site(redis, plan)
    records = [await site.decide(f"c{i}", T0 + i) for i in range(20)]
    for i in range(0, 20, 2):
        await site.event(f"c{i}", "purchase", T0 + i + 30, amount=i + 1)
    before_windows, after_windows = Clock(T0 + 100), Clock(T0 + 10 * DEFAULT_WINDOW_SECONDS)
    if path == "window":
        await attributor(redis, before_windows).run_once()  # events rewarded, windows open
    doomed = Attributor(redis, grace=0, clock=before_windows if path == "event" else after_windows)
    doomed.batch = 3
    appended_before = len(await rewards(redis))
    if point == "before-append":
        crash = patch.object(attribution, "append_rewards", side_effect=Killed("before append"))
        with crash, pytest.raises(Killed):
            await doomed.run_once()
        assert len(await rewards(redis)) == appended_before  # it wrote nothing
    else:
        with (
            patch.object(doomed, "_close", side_effect=Killed("after append")),
            pytest.raises(Killed),
        ):
            await doomed.run_once()
        left = await rewards(redis)
        assert len(left) > appended_before  # it appended rewards ...
        open_ = await redis.zrange(keys.EXPOSURES_DUE, 0, -1)
        rewarded = {r["decision_id"] for r in left[appended_before:]}
        assert any(exposure_decision(m) in rewarded for m in open_)  # ... and closed none
    # The survivors take over what it held: its unacknowledged events at once
    # (claim_idle_ms=0), its leased windows when the lease ends.
    clock = Clock(after_windows.now + 31)
    a, b = (Attributor(redis, grace=0, clock=clock, claim_idle_ms=0) for _ in range(2))
    a.batch = b.batch = 3
    await asyncio.gather(a.run_once(), b.run_once())
    got: dict[tuple[str, str], list[str]] = {}
    for r in await rewards(redis):
        got.setdefault((r["decision_id"], r["action"]), []).append(r["reward"])
    assert len(got) == 40 and all(len(v) == 1 for v in got.values()), got
    for i, record in enumerate(records):
        expected = repr(float(i + 1)) if i % 2 == 0 else "0.0"
        assert got[(record.decision_id, chosen(record))] == [expected]
        assert got[(record.decision_id, chosen(record, "other"))] == ["0.0"]
    assert await redis.zcard(keys.EXPOSURES_DUE) == 0
    assert (await redis.xpending(keys.OUTCOME_STREAM, "attribution"))["pending"] == 0


def exposure_decision(member: bytes) -> str:
    return msgspec.json.decode(member)[1]  # type: ignore[no-any-return]


@pytest.mark.parametrize("point", ["before-append", "after-append"])
@pytest.mark.parametrize("path", ["event", "window"])
def test_a_killed_worker_loses_no_reward_and_duplicates_none(
    redis_url: str, plan: Plan, path: str, point: str
) -> None:
    run(redis_url, lambda redis: _killed_then_two_workers_finish(redis, plan, path, point))


def test_a_killed_worker_on_redis_cluster(redis_cluster_url: str, plan: Plan) -> None:
    run(
        redis_cluster_url,
        lambda redis: _killed_then_two_workers_finish(redis, plan, "window", "after-append"),
    )


def test_rewards_are_appended_in_a_batch_once_each_after_a_script_cache_flush(
    redis_url: str,
) -> None:
    async def body(redis: AsyncRedisClient) -> None:
        batch = [Reward(f"d{i}", "a1", float(i), T0, "event") for i in range(5)]
        await redis.script_flush()  # a restarted Redis: the script must be loaded again
        first = await append_rewards(redis, batch[:3], marker_ttl_s=60, stream_maxlen=100)
        assert [o.appended for o in first] == [True] * 3
        again = await append_rewards(redis, batch, marker_ttl_s=60, stream_maxlen=100)
        assert [(o.appended, o.reward) for o in again] == [
            (False, 0.0),
            (False, 1.0),
            (False, 2.0),
            (True, 3.0),
            (True, 4.0),
        ]
        got = [(r["decision_id"], r["reward"], r["source"]) for r in await rewards(redis)]
        assert got == [(f"d{i}", repr(float(i)), "event") for i in range(5)]

    run(redis_url, body)

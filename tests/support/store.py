"""Helpers for tests of the profile store: windows, events and decisions at chosen times."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

import redis

from arbiter import dsl
from arbiter.engine.codegen.compiler import compile_plan
from arbiter.engine.decision.decide import decide
from arbiter.engine.decision.oracle import LiveOracle
from arbiter.engine.log.writer import DecisionLog
from arbiter.engine.plan import AggregateSpec, Plan
from arbiter.engine.records import DecideRequest, DecisionRecord
from arbiter.engine.store import windows
from arbiter.engine.store.profiles import Event, ProfileStore
from support.redis import run_with_client
from support.server import CASES

HOUR = windows.HOUR
DAY = windows.DAY

T = TypeVar("T")


def run(url: str, body: Callable[[ProfileStore], Awaitable[T]]) -> T:
    """Run `body(store)` on a fresh client of `url` in its own event loop."""
    return run_with_client(url, lambda client: body(ProfileStore(client)))


async def web_record(
    s: ProfileStore, plan: Plan, customer: str, decision_id: str, now: float
) -> DecisionRecord:
    """The record of one web decision for ``customer``, read from ``s``, no model or bandit."""
    inputs = await s.fetch(customer, plan.needs, now)
    _, record = decide(
        plan,
        DecideRequest(customer, {"channel": "web"}),
        inputs,
        decision_id=decision_id,
        now=now,
        oracle=LiveOracle({}, {}),
    )
    return record


def hour_floor(t: float) -> int:
    return int(t // HOUR) * HOUR


def ev(customer: str, type_: str, ts: float, eid: str | None = None, **props: Any) -> Event:
    return Event(customer, type_, ts, props, eid)


def count(event: str, window: int) -> AggregateSpec:
    return AggregateSpec("count", event, None, window)


def aggregates(url: str, customer: str, specs: Sequence[AggregateSpec], now: float) -> list[Any]:
    values = run(url, lambda s: s.aggregates(customer, specs, now))
    return [values[spec.key] for spec in specs]


def ingest(url: str, events: Sequence[Event], now: float) -> int:
    return run(url, lambda s: s.add_events(events, now=now))


def shop_plan() -> Plan:
    return compile_plan(dsl.load_checked(CASES / "shop.rules"))


class Decider:
    """Decisions through engine.decision.decide and the decision log, at chosen times."""

    def __init__(self, store: ProfileStore, plan: Plan) -> None:
        self.store = store
        self.plan = plan
        self.log = DecisionLog(store.redis, store)
        self.n = 0

    async def __call__(self, customer: str, now: float, **context: Any) -> str | None:
        inputs = await self.store.fetch(customer, self.plan.needs, now)
        self.n += 1
        decision, record = decide(
            self.plan,
            DecideRequest(customer, context),
            inputs,
            decision_id=f"d{self.n:06d}",
            now=now,
            oracle=LiveOracle({}, {}),
        )
        contacts = []
        for out in decision.actions:
            spec = self.plan.action(out.action)
            if spec.cap is not None:
                contacts.append((spec.name, spec.cap.window_seconds))
        self.log.submit(record, contacts)
        await self.log.flush()  # the write-behind, made synchronous for the test
        return decision.actions[0].action if decision.actions else None


def everything(client: redis.Redis) -> dict[bytes, bytes]:
    """Every key with its whole content flattened to bytes, for searching."""
    out: dict[bytes, bytes] = {}
    for key in client.scan_iter(count=1000):
        kind = client.type(key)
        parts: list[Any]
        if kind == b"string":
            parts = [client.get(key)]
        elif kind == b"hash":
            parts = [x for kv in client.hgetall(key).items() for x in kv]
        elif kind == b"list":
            parts = client.lrange(key, 0, -1)
        elif kind == b"set":
            parts = list(client.smembers(key))
        elif kind == b"zset":
            parts = [m for m, _ in client.zrange(key, 0, -1, withscores=True)]
        elif kind == b"stream":
            parts = [x for _, fields in client.xrange(key) for kv in fields.items() for x in kv]
        else:
            raise AssertionError(f"unexpected key type {kind!r} of {key!r}")
        out[key] = b"\x00".join(p if isinstance(p, bytes) else str(p).encode() for p in parts)
    return out

"""Trigger timing: how long after its due time a firing is published, with two runners.

Schedules ``--firings`` firings (customers with email consent, one add-to-cart
each) due over ``--spread`` seconds starting two seconds from now, runs two
`TriggerRunner`s (two workers) on one embedded Redis until all are published,
and prints the due -> published delay (median, p90, p99, max) and the count
published (each must be exactly once).

    python -m benchmarks.trigger_latency [--firings 2000] [--spread 4] [--poll 0.1]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from arbiter import dsl
from arbiter.engine.codegen.compiler import compile_plan
from arbiter.engine.log.writer import DecisionLog
from arbiter.engine.plan import Plan
from arbiter.engine.store import keys
from arbiter.engine.store.client import connect
from arbiter.engine.store.embedded import EmbeddedRedis
from arbiter.engine.store.profiles import Event, ProfileStore
from arbiter.engine.triggers.runner import TriggerRunner
from arbiter.engine.triggers.schedule import schedule_triggers

RULES = """ruleset cart
context { channel: one of [web, email] }
profile { consents: set<string> }
event add_to_cart
event purchase
action cart_reminder { value 15 channels [email] requires consent "email" }
when count(add_to_cart within 1d) > 0 offer cart_reminder
trigger recovery on add_to_cart after 1s unless purchase decide for channel email
"""


@dataclass
class Live:
    plan: Plan
    models: dict[str, Any] = field(default_factory=dict)
    bandits: dict[str, Any] = field(default_factory=dict)


async def run(firings: int, spread: float, poll: float, url: str) -> None:
    plan = compile_plan(dsl.check(dsl.parse(RULES, "cart.rules")))
    specs = [("cart", d) for d in plan.checked.triggers.values()]
    setup = connect(url, socket_timeout=10)
    store = ProfileStore(setup)
    for i in range(firings):
        await store.put_profile(f"c{i}", {"consents": ["email"]})
    start = time.time() + 1.0  # due = event + 1s, so the first is due in ~2 s
    events = [
        Event(f"c{i}", "add_to_cart", start + spread * i / firings, {}, f"e{i}")
        for i in range(firings)
    ]
    await store.add_events(events, now=time.time())
    await schedule_triggers(setup, specs, events, time.time())
    stop = asyncio.Event()
    runners, clients, tasks = [], [], []
    for _ in range(2):
        client = connect(url, socket_timeout=10)
        log = DecisionLog(client, ProfileStore(client))
        log.start()
        runner = TriggerRunner(
            client, ProfileStore(client), log, {"cart": Live(plan)}.get, poll_interval=poll
        )
        runners.append(runner)
        clients.append((client, log))
        tasks.append(asyncio.create_task(runner.run_forever(stop)))
    deadline = time.monotonic() + spread + 60
    while time.monotonic() < deadline and sum(r.stats.published for r in runners) < firings:
        await asyncio.sleep(0.1)
    stop.set()
    await asyncio.gather(*tasks)
    delays = sorted(d for r in runners for d in (r.stats.delays or []))
    out = await setup.xlen(keys.TRIGGER_STREAM)
    for client, log in clients:
        await log.close()
        await client.aclose()
    await setup.aclose()
    q = lambda p: delays[min(len(delays) - 1, int(p * len(delays)))] * 1000  # noqa: E731
    print(
        f"{firings} firings over {spread:g}s, 2 runners, poll {poll * 1000:.0f} ms: "
        f"published {len(delays)} (stream entries {out}); due -> published "
        f"median {statistics.median(delays) * 1000:.0f} ms, p90 {q(0.9):.0f} ms, "
        f"p99 {q(0.99):.0f} ms, max {delays[-1] * 1000:.0f} ms; "
        f"per runner {[r.stats.published for r in runners]}"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--firings", type=int, default=2000)
    ap.add_argument("--spread", type=float, default=4.0)
    ap.add_argument("--poll", type=float, default=0.1)
    args = ap.parse_args()
    if not 1 <= args.firings <= 20_000:
        ap.error("--firings must be between 1 and 20000")
    with tempfile.TemporaryDirectory() as tmp:
        redis = EmbeddedRedis(Path(tmp) / "redis", persistent=False)
        redis.start()
        try:
            asyncio.run(run(args.firings, args.spread, args.poll, redis.url))
        finally:
            redis.stop()


if __name__ == "__main__":
    main()

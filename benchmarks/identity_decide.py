"""The added cost of a decision for a linked (anonymous) id, against an ordinary id.

Prints, in one run against a real Redis on 127.0.0.1 (embedded, TCP):
median and p99 of `--decisions` sequential decisions (store read + rules +
log submit, in process) for an ordinary customer and for an anonymous id
linked to it, interleaved so that both see the same machine, and the ratio.
A linked id's read is answered with its customer id by the first command and
repeated for the customer: one more round trip.

    python -m benchmarks.identity_decide [--decisions 2000]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time

from arbiter import dsl
from arbiter.engine.codegen.compiler import compile_plan
from arbiter.engine.decision.decide import decide
from arbiter.engine.decision.oracle import LiveOracle
from arbiter.engine.log.writer import DecisionLog
from arbiter.engine.records import DecideRequest
from arbiter.engine.store.client import connect
from arbiter.engine.store.embedded import EmbeddedRedis
from arbiter.engine.store.profiles import Event, ProfileStore
from benchmarks._harness import ROOT

RULES = ROOT / "tests" / "cases" / "server" / "shop.rules"


async def measure(url: str, n: int) -> dict[str, list[float]]:
    plan = compile_plan(dsl.load_checked(RULES))
    client = connect(url, socket_timeout=None)
    store = ProfileStore(client)
    log = DecisionLog(client, store)
    log.start()
    now = time.time()
    await store.put_profile("customer", {"visits": 3, "consents": ["email"]})
    events = [Event("customer", "add_to_cart", now - i * 600, {}, f"e{i}") for i in range(50)]
    await store.add_events(events, now=now)
    actions = [a.name for a in plan.actions]
    await store.identities.identify("anonymous", "customer", actions, now)
    times: dict[str, list[float]] = {"ordinary": [], "linked": []}
    oracle = LiveOracle({}, {})
    for i in range(n + 100):
        for who, label in (("customer", "ordinary"), ("anonymous", "linked")):
            started = time.perf_counter()
            inputs = await store.fetch(who, plan.needs, now)
            _, record = decide(
                plan,
                DecideRequest(who, {"channel": "web"}),
                inputs,
                decision_id=f"{label}-{i}",
                now=now,
                oracle=oracle,
            )
            log.submit(record)
            elapsed = time.perf_counter() - started
            if i >= 100:  # warm-up: connections, scripts, caches
                times[label].append(elapsed)
            assert (inputs.resolved_id == "customer") == (label == "linked")
    await log.close()
    await client.aclose()
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--decisions", type=int, default=2000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        redis = EmbeddedRedis(tmp)
        redis.start()
        try:
            times = asyncio.run(measure(redis.url, args.decisions))
        finally:
            redis.stop()
    rows = {}
    for label, values in times.items():
        values.sort()
        rows[label] = (statistics.median(values) * 1e6, values[int(len(values) * 0.99)] * 1e6)
        print(f"{label:8} median {rows[label][0]:7.1f} µs   p99 {rows[label][1]:7.1f} µs")
    added = rows["linked"][0] - rows["ordinary"][0]
    ratio = rows["linked"][0] / rows["ordinary"][0]
    print(f"linked/ordinary median: {ratio:.2f} (+{added:.1f} µs: one more round trip)")


if __name__ == "__main__":
    main()

"""Soak: decide, feedback and events mixed, at ~80% of measured saturation, 2 workers.

On 127.0.0.1 only, bounded in time: `arbiter serve --workers 2` on the shop
ruleset and a real Redis; first `--probe` seconds flat out to measure
saturation, then `--seconds` at `--load` of it (open loop). Prints throughput,
p50/p99/p99.9, errors (target 0), and afterwards checks in Redis that every
accepted event, feedback and decision is there (nothing lost).

    python -m benchmarks.soak [--seconds 60] [--load 0.8] [--probe 5]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
from pathlib import Path
from typing import Any

from arbiter.engine.store import keys
from arbiter.engine.store.client import connect_sync
from arbiter.engine.store.embedded import EmbeddedRedis
from benchmarks import _load
from benchmarks._harness import Client, arbiter_argv, free_port, server

ADMIN = {"Authorization": "Bearer soak-admin"}
RULES = "tests/cases/server/shop.rules"


def seed_profiles(port: int, customers: int) -> None:
    client = Client(port, ADMIN)
    for i in range(customers):
        status, _ = client.call(
            "PUT",
            f"/v1/profiles/c{i}",
            {"visits": i % 5, "lifetime_value": i * 7.0, "orders_90d": i % 6},
        )
        assert status == 200, status


def stream_lengths(redis_url: str) -> tuple[int, int]:
    """(rewards, decisions) on the streams now."""
    r = connect_sync(redis_url)
    try:
        return r.xlen(keys.REWARD_STREAM), r.xlen(keys.DECISION_STREAM)
    finally:
        r.close()


def lost(redis_url: str, tally: _load.Tally, before: tuple[int, int]) -> dict[str, Any]:
    """What was accepted but is not in Redis (every figure should be 0)."""
    r = connect_sync(redis_url)
    try:
        # Event ids are kept per customer: look each accepted one up in its customer's set.
        pipe = r.pipeline(transaction=False)
        for eid, customer in tally.events_accepted.items():
            pipe.zscore(keys.event_ids(customer), eid)
        missing_events = sum(score is None for score in pipe.execute())
        rewards = r.xlen(keys.REWARD_STREAM) - before[0]
        decisions = r.xlen(keys.DECISION_STREAM) - before[1]
    finally:
        r.close()
    return {
        "events_accepted": len(tally.events_accepted),
        "events_missing": missing_events,
        "feedback_accepted": tally.feedback_accepted,
        "feedback_missing": tally.feedback_accepted - rewards,
        "decisions_answered": tally.decided,
        "decisions_missing_from_log": tally.decided - decisions,
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=60)
    ap.add_argument("--probe", type=float, default=5)
    ap.add_argument("--load", type=float, default=0.8)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--connections", type=int, default=32)
    ap.add_argument("--customers", type=int, default=2000)
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp, EmbeddedRedis(Path(tmp) / "redis") as redis:
        port = free_port()
        env = {
            "ARBITER_REDIS_URL": redis.url,
            "ARBITER_ADMIN_KEY": "soak-admin",
            "ARBITER_DATA_DIR": str(Path(tmp) / "data"),
            "ARBITER_ACCESS_LOG_SAMPLE": "0",
        }
        mix = _load.Mix(customers=args.customers)
        with server(arbiter_argv(RULES, port, workers=args.workers), port, env):
            seed_profiles(port, args.customers)
            saturation = asyncio.run(
                _load.saturation(
                    port, args.probe, connections=args.connections, mix=mix, headers=ADMIN
                )
            )
            rate = saturation * args.load
            asyncio.run(asyncio.sleep(1))  # the probe's write-behind drains
            before = stream_lengths(redis.url)
            tally = _load.Tally()
            asyncio.run(
                _load.run(
                    port,
                    rate,
                    args.seconds,
                    connections=args.connections,
                    mix=mix,
                    headers=ADMIN,
                    tally=tally,
                    seed=11,
                )
            )
        # The server stopped (SIGTERM): its decision log was flushed on the way out.
        result = {
            "workers": args.workers,
            "saturation_rps": round(saturation, 1),
            "target_rps": round(rate, 1),
            **_load.report(tally, args.seconds),
            **lost(redis.url, tally, before),
        }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()

"""Soak: decide, feedback and events mixed, at ~80% of measured saturation, 2 workers.

On 127.0.0.1 only, bounded in time: `arbiter serve --workers 2` on the shop
ruleset and a real Redis; first `--probe` seconds flat out to measure
saturation, then `--seconds` at `--load` of it (open loop). Prints throughput,
p50/p99/p99.9, errors (target 0), and afterwards checks in Redis that every
accepted event, feedback and decision is there (nothing lost).

    python -m benchmarks.soak [--seconds 60] [--load 0.8] [--probe 5] [--out soak.json]

Latency is reported three ways (see `_load.report`): from each request's
schedule (queueing included), from its send (service time), and as the
server measured it (`/metrics` histograms, summed over the workers, bucket
upper bounds); `send_lag` and the load average before and after say whether
the machine was quiet enough for the figures to mean anything.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import tempfile
import time
from collections import defaultdict
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


Buckets = dict[tuple[str, str], dict[float, float]]  # (metric, route) -> le -> count


def histograms(port: int) -> Buckets:
    """The server's latency histograms now (every worker's, summed by /metrics)."""
    from prometheus_client.parser import text_string_to_metric_families

    status, body = Client(port).call("GET", "/metrics")
    assert status == 200, status
    out: Buckets = defaultdict(dict)
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            if sample.name in (
                "arbiter_http_request_seconds_bucket",
                "arbiter_decide_seconds_bucket",
            ):
                key = (sample.name.removesuffix("_bucket"), sample.labels.get("route", ""))
                le = float(sample.labels["le"])
                out[key][le] = out[key].get(le, 0.0) + sample.value
    return out


def server_latency(before: Buckets, after: Buckets) -> dict[str, Any]:
    """Quantiles of what the server timed during the run, as bucket upper bounds (ms)."""
    figures: dict[str, Any] = {}
    for key, buckets in sorted(after.items()):
        counts = sorted((le, n - before.get(key, {}).get(le, 0.0)) for le, n in buckets.items())
        total = counts[-1][1] if counts else 0.0
        if total <= 0:
            continue

        def upto(q: float, counts: list[tuple[float, float]] = counts, total: float = total) -> str:
            for le, n in counts:
                if n >= q * total:
                    return "+Inf" if math.isinf(le) else f"<= {le * 1000:g}"
            return "+Inf"

        name = key[0] + (f" {key[1]}" if key[1] else "")
        figures[name] = {"count": int(total), "p50_ms": upto(0.5), "p99_ms": upto(0.99),
                         "p999_ms": upto(0.999)}  # fmt: skip
    return figures


def markdown_row(result: dict[str, Any]) -> str:
    """The row of benchmarks/RESULTS.md's soak table."""
    return (
        f"| {result['saturation_rps']:,} | {result['target_rps']:,} | {result['throughput_rps']:,} "
        f"| {result['p50_ms']:,} | {result['p99_ms']:,} | {result['p999_ms']:,} "
        f"| {result['service']['p50_ms']:,} / {result['service']['p99_ms']:,} "
        f"| {result['send_lag']['p99_ms']:,} | {result['status_5xx']} | {result['status_4xx']} "
        f"| {result['connection_errors']} "
        f"| {result['events_missing']} of {result['events_accepted']:,} "
        f"| {result['feedback_missing']} of {result['feedback_accepted']:,} "
        f"| {result['decisions_missing_from_log']} of {result['decisions_answered']:,} "
        f"| {result['load_average_before']} / {result['load_average_after']} |"
    )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=60)
    ap.add_argument("--probe", type=float, default=5)
    ap.add_argument("--load", type=float, default=0.8)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--connections", type=int, default=32)
    ap.add_argument("--customers", type=int, default=2000)
    ap.add_argument("--out", default=None, help="also write the figures to this JSON file")
    args = ap.parse_args()
    load_before = round(os.getloadavg()[0], 2)
    started_at = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())

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
            timed_before = histograms(port)
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
            asyncio.run(asyncio.sleep(1.5))  # every worker's state reaches the metrics files
            timed = server_latency(timed_before, histograms(port))
        # The server stopped (SIGTERM): its decision log was flushed on the way out.
        result = {
            "started": started_at,
            "seconds": args.seconds,
            "workers": args.workers,
            "saturation_rps": round(saturation, 1),
            "target_rps": round(rate, 1),
            **_load.report(tally, args.seconds),
            **lost(redis.url, tally, before),
            "server_timed": timed,
            "load_average_before": load_before,
            "load_average_after": round(os.getloadavg()[0], 2),
            "cores": os.cpu_count(),
        }
    result["markdown_row"] = markdown_row(result)
    text = json.dumps(result, indent=2)
    if args.out:
        Path(args.out).write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()

"""A serving worker's garbage collector tuned (start-up frozen, young collections rarer) or not.

    python -m benchmarks.gc_pauses [--rounds 4] [--seconds 10] [--learner]

Two `arbiter serve` processes (one worker each) on the reference workload
(`benchmarks.http`'s cached RDB, one `redis-server`): `ARBITER_GC_TUNING=true`
(what `arbiter serve` does by default, `server.gc_pauses`) and `false`. Each
gets, alternately for `--rounds` rounds, `wrk` at saturation (feedback for
10% of decisions) and then the same load paced at half the rate the first
round measured. The learner is off in both unless `--learner` (see its
help). From `/metrics` (`arbiter_gc_pause_seconds`) it prints, per second of
saturated load, the young and full collections and their mean pauses, and
the share of the worker's time spent collecting; then throughput, server
CPU per decision, and the paced p99 and p99.9 (medians of the rounds).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import urllib.request
from contextlib import ExitStack
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from benchmarks.http import (
    ADMIN_KEY,
    CONNECTIONS,
    Load,
    arbiter,
    redis_server,
    reference_inputs,
    run_wrk,
    warm,
)

GENERATIONS = ("0", "1", "2")


def pauses(port: int) -> dict[str, tuple[float, float]]:
    """(count, seconds) of the worker's collections so far, by generation."""
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/metrics", headers={"Authorization": f"Bearer {ADMIN_KEY}"}
    )
    text = urllib.request.urlopen(request, timeout=10).read().decode()
    found = {
        (s.name, s.labels.get("generation", "")): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name.startswith("arbiter_gc_pause_seconds")
    }
    return {
        g: (
            found[("arbiter_gc_pause_seconds_count", g)],
            found[("arbiter_gc_pause_seconds_sum", g)],
        )
        for g in GENERATIONS
    }


def main() -> None:
    """Run both servers alternately and print the comparison."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument(
        "--learner",
        action="store_true",
        help="run the in-process learner (the first server to start takes its lease and "
        "learns for both, which costs it CPU the other does not pay)",
    )
    opts = ap.parse_args()
    learner = {} if opts.learner else {"ARBITER_LEARNER": "off"}
    rdb, bodies = reference_inputs()
    names = {"default collector": "false", "tuned (serve's default)": "true"}
    saturated: dict[str, list[tuple[Load, dict[str, tuple[float, float]]]]] = {n: [] for n in names}
    paced: dict[str, list[Load]] = {n: [] for n in names}
    with tempfile.TemporaryDirectory() as tmp_name, ExitStack() as stack:
        tmp = Path(tmp_name)
        redis_port = stack.enter_context(redis_server(tmp, rdb))
        ports = {
            name: stack.enter_context(
                arbiter(
                    redis_port,
                    tmp / flag,
                    "uvicorn",
                    extra_env={**learner, "ARBITER_GC_TUNING": flag},
                )
            )
            for name, flag in names.items()
        }
        for port in ports.values():
            warm(port, "/v1/decide", bodies)
        pace_ms = 0
        for r in range(opts.rounds):
            order = list(ports.items()) if r % 2 == 0 else list(ports.items())[::-1]
            for name, port in order:
                before = pauses(port)
                load = run_wrk(port, "/v1/decide", bodies, opts.seconds, feedback_every=10)
                after = pauses(port)
                delta = {g: (after[g][0] - before[g][0], after[g][1] - before[g][1]) for g in after}
                saturated[name].append((load, delta))
                if not pace_ms:
                    pace_ms = round(CONNECTIONS / (load.rps / 2) * 1000)
                paced[name].append(
                    run_wrk(
                        port, "/v1/decide", bodies, opts.seconds, feedback_every=10, pace_ms=pace_ms
                    )
                )
    med = statistics.median
    s = opts.seconds
    print(
        f"reference workload, 1 worker, {opts.rounds} rounds of {s} s alternating (medians); "
        f"paced at {CONNECTIONS / pace_ms * 1000:,.0f} req/s"
    )
    print(
        "| collector | young (gen 0) / s, mean | full (gen 2) / s, mean | time collecting "
        "| decide req/s | server CPU / decision | paced p99 | paced p99.9 |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for name in names:
        runs = saturated[name]

        def rate_and_mean(
            g: str, runs: list[tuple[Load, dict[str, tuple[float, float]]]] = runs
        ) -> str:
            per_s = med(d[g][0] / s for _, d in runs)
            mean = med(d[g][1] / d[g][0] * 1000 if d[g][0] else 0.0 for _, d in runs)
            return f"{per_s:.1f}, {mean:.2f} ms"

        share = med(sum(sec for _, sec in d.values()) / s for _, d in runs)
        print(
            f"| {name} | {rate_and_mean('0')} | {rate_and_mean('2')} | {share:.1%} "
            f"| {med(x.rps for x, _ in runs):,.0f} | {med(x.server_cpu_us for x, _ in runs):.0f} µs "
            f"| {med(x.p99 for x in paced[name]):.1f} ms | {med(x.p999 for x in paced[name]):.1f} ms |"
        )


if __name__ == "__main__":
    main()

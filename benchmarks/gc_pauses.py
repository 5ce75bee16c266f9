"""Full garbage collections in a serving worker, with start-up's objects frozen and without.

    python -m benchmarks.gc_pauses [--rounds 3] [--seconds 10]

Two `arbiter serve` processes (one worker each) on the reference workload
(`benchmarks.http`'s cached RDB, one `redis-server`): `ARBITER_GC_FREEZE=true`
(what `arbiter serve` does by default, `server.gc_pauses`) and `false`. Each
gets, alternately for `--rounds` rounds, `wrk` at saturation (feedback for
10% of decisions) and then the same load paced at half the rate the first
round measured. The learner is off in both unless `--learner` (see its help). From `/metrics` (`arbiter_gc_pause_seconds`) it prints the
full collections (generation 2) per second and their mean pause, the share
of the worker's time spent in them, throughput, server CPU per decision,
and the paced p99 and p99.9 (medians of the rounds).
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


def full_collections(port: int) -> tuple[float, float]:
    """(count, seconds) of the worker's full collections so far."""
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/metrics", headers={"Authorization": f"Bearer {ADMIN_KEY}"}
    )
    text = urllib.request.urlopen(request, timeout=10).read().decode()
    found = {
        s.name: s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name.startswith("arbiter_gc_pause_seconds") and s.labels.get("generation") == "2"
    }
    return found["arbiter_gc_pause_seconds_count"], found["arbiter_gc_pause_seconds_sum"]


def main() -> None:
    """Run both servers alternately and print the comparison."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
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
    names = {"not frozen": "false", "frozen": "true"}
    saturated: dict[str, list[tuple[Load, float, float]]] = {n: [] for n in names}
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
                    extra_env={**learner, "ARBITER_GC_FREEZE": flag},
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
                count0, seconds0 = full_collections(port)
                load = run_wrk(port, "/v1/decide", bodies, opts.seconds, feedback_every=10)
                count1, seconds1 = full_collections(port)
                saturated[name].append((load, count1 - count0, seconds1 - seconds0))
                if not pace_ms:
                    pace_ms = round(CONNECTIONS / (load.rps / 2) * 1000)
                paced[name].append(
                    run_wrk(
                        port, "/v1/decide", bodies, opts.seconds, feedback_every=10, pace_ms=pace_ms
                    )
                )
    med = statistics.median
    print(
        f"reference workload, 1 worker, {opts.rounds} rounds of {opts.seconds} s alternating "
        f"(medians); paced at {CONNECTIONS / pace_ms * 1000:,.0f} req/s"
    )
    print(
        "| gc | full collections / s | mean pause | share of the time | decide req/s "
        "| server CPU / decision | paced p99 | paced p99.9 |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for name in names:
        runs = saturated[name]
        per_s = med(n / opts.seconds for _, n, _ in runs)
        pause = med(s / n * 1000 if n else 0.0 for _, n, s in runs)
        share = med(s / opts.seconds for _, _, s in runs)
        print(
            f"| {name} | {per_s:.2f} | {pause:.1f} ms | {share:.1%} "
            f"| {med(x.rps for x, _, _ in runs):,.0f} | {med(x.server_cpu_us for x, _, _ in runs):.0f} µs "
            f"| {med(x.p99 for x in paced[name]):.1f} ms | {med(x.p999 for x in paced[name]):.1f} ms |"
        )


if __name__ == "__main__":
    main()

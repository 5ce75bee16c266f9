"""Decide on the reference workload: another commit's server against this one, alternately.

    python -m benchmarks.ab_commits [--base 088a09d] [--rounds 4] [--seconds 5] [--feedback-every 10]

Exports `--base` with `git archive` into a temporary directory and starts its
`arbiter serve` from there (its `.ci/typecheck/arbiter` link makes the
exported tree importable as `arbiter`, ahead of this checkout's editable
install), next to this checkout's server, against the same `redis-server`
loaded with the reference workload (`benchmarks.http`'s cached RDB). Both
get the same `wrk` load (feedback for 10% of decisions, or one in
`--feedback-every`), alternately, and it
prints per server the Redis CPU per decision (`INFO cpu` deltas over its
runs: reads, write-behind, feedback, learner), the server's CPU per
decision, and the throughput, medians of the rounds. Both layouts must read
the workload as loaded (true while `windows.LAYOUT_VERSION` is the same).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

from benchmarks._harness import baseline_tree
from benchmarks.http import arbiter, redis_cpu, redis_server, reference_inputs, run_wrk, warm


def main() -> None:
    """Run both servers alternately and print the comparison."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--base", default="088a09d", help="the commit to compare against")
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--seconds", type=int, default=5)
    ap.add_argument("--feedback-every", type=int, default=10, help="feedback for 1 decision in N")
    opts = ap.parse_args()
    rdb, bodies = reference_inputs()
    got: dict[str, list[tuple[float, float, float]]] = {"base": [], "this": []}
    with tempfile.TemporaryDirectory() as tmp_name, ExitStack() as stack:
        tmp = Path(tmp_name)
        base = baseline_tree(opts.base, tmp / "base")
        redis_port = stack.enter_context(redis_server(tmp, rdb))
        ports = {"base": stack.enter_context(arbiter(redis_port, tmp / "b", "uvicorn", code=base))}
        ports["this"] = stack.enter_context(arbiter(redis_port, tmp / "t", "uvicorn"))
        for port in ports.values():
            warm(port, "/v1/decide", bodies)
        for r in range(opts.rounds):
            order = list(ports.items()) if r % 2 == 0 else list(ports.items())[::-1]
            for name, port in order:
                cpu0 = redis_cpu(redis_port)
                load = run_wrk(
                    port, "/v1/decide", bodies, opts.seconds, feedback_every=opts.feedback_every
                )
                time.sleep(0.6)  # the write-behind lingers: let it land
                redis_us = (redis_cpu(redis_port) - cpu0) / max(1, load.decisions) * 1e6
                got[name].append((redis_us, load.server_cpu_us, load.rps))
    print(f"{opts.base} (base) against this checkout, {opts.rounds} rounds alternating:")
    print("| server | Redis CPU per decision | server CPU per decision | decide req/s |")
    print("|---|---:|---:|---:|")
    med = {}
    for name, runs in got.items():
        med[name] = [statistics.median(x[i] for x in runs) for i in range(3)]
        redis_us, server_us, rps = med[name]
        print(f"| {name} | {redis_us:.1f} µs | {server_us:.0f} µs | {rps:,.0f} |")
    print(
        f"this / base: Redis {med['this'][0] / med['base'][0]:.2f}x, "
        f"server CPU {med['this'][1] / med['base'][1]:.2f}x"
    )
    print(
        "Redis per round (base; this): "
        + "; ".join(", ".join(f"{x[0]:.0f}" for x in got[name]) for name in ("base", "this"))
    )
    print(
        "server CPU per round (base; this): "
        + "; ".join(", ".join(f"{x[1]:.0f}" for x in got[name]) for name in ("base", "this"))
    )


if __name__ == "__main__":
    main()

"""Decision logging on against off over HTTP, and on as another commit had it, alternately.

    python -m benchmarks.log_onoff [--base 8282fc7] [--rounds 4] [--seconds 5]

Target 5 of issue 11 (logging on >= 0.95x off). Three `arbiter serve`
processes against the same `redis-server` loaded with the reference workload
(`benchmarks.http`'s cached RDB): this checkout with `ARBITER_DECISION_LOG=off`,
this checkout with it on, and `--base` (exported with `git archive`, as
`benchmarks.ab_commits` does) with it on. Each gets the same `wrk` load
without feedback (feedback needs the log, so it would not be like for like),
in turn, the order reversed every round; it prints per server the medians of
the rounds: the server's CPU per decision, Redis' CPU per decision, req/s and
p99, and the ratios against logging off.
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
    """Run the three servers alternately and print the comparison."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--base", default="8282fc7", help="the commit whose logging is compared")
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--seconds", type=int, default=5)
    opts = ap.parse_args()
    rdb, bodies = reference_inputs()
    names = ("off", "on", f"on, {opts.base}")
    got: dict[str, list[tuple[float, float, float, float]]] = {n: [] for n in names}
    with tempfile.TemporaryDirectory() as tmp_name, ExitStack() as stack:
        tmp = Path(tmp_name)
        base = baseline_tree(opts.base, tmp / "base")
        redis_port = stack.enter_context(redis_server(tmp, rdb))
        ports = {
            names[2]: stack.enter_context(arbiter(redis_port, tmp / "b", "uvicorn", code=base))
        }
        ports[names[0]] = stack.enter_context(arbiter(redis_port, tmp / "f", "uvicorn", log="off"))
        ports[names[1]] = stack.enter_context(arbiter(redis_port, tmp / "t", "uvicorn"))
        for port in ports.values():
            warm(port, "/v1/decide", bodies)
        for r in range(opts.rounds):
            order = [(n, ports[n]) for n in names]
            for name, port in order if r % 2 == 0 else order[::-1]:
                cpu0 = redis_cpu(redis_port)
                load = run_wrk(port, "/v1/decide", bodies, opts.seconds)
                time.sleep(0.6)  # the write-behind lingers: let it land
                redis_us = (redis_cpu(redis_port) - cpu0) / max(1, load.decisions) * 1e6
                got[name].append((load.server_cpu_us, redis_us, load.rps, load.p99))
    print(
        f"decision log off / on / on at {opts.base}, reference workload, no feedback, "
        f"{opts.rounds} rounds of {opts.seconds} s alternating (medians):"
    )
    print("| log | server CPU per decision | Redis CPU per decision | decide req/s | p99 |")
    print("|---|---:|---:|---:|---:|")
    med = {}
    for name, runs in got.items():
        med[name] = [statistics.median(x[i] for x in runs) for i in range(4)]
        cpu, red, rps, p99 = med[name]
        print(f"| {name} | {cpu:.0f} µs | {red:.1f} µs | {rps:,.0f} | {p99:.1f} ms |")
    off = med["off"]
    for name in names[1:]:
        m = med[name]
        print(
            f"{name}: server CPU off/on {off[0] / m[0]:.2f}x, throughput on/off "
            f"{m[2] / off[2]:.2f}x, p99 on/off {m[3] / off[3]:.2f}x"
        )
    print(
        "server CPU per round ("
        + "; ".join(names)
        + "): "
        + "; ".join(", ".join(f"{x[0]:.0f}" for x in got[n]) for n in names)
    )


if __name__ == "__main__":
    main()

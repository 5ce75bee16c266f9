"""Decide on the reference workload: another commit's server against this one, alternately.

    python -m benchmarks.ab_commits [--base 088a09d] [--rounds 4] [--seconds 5] [--feedback 10]
                                    [--workers 1]

Exports `--base` with `git archive` into a temporary directory and starts its
`arbiter serve` from there (its `.ci/typecheck/arbiter` link makes the
exported tree importable as `arbiter`, ahead of this checkout's editable
install), next to this checkout's server, against the same `redis-server`
loaded with the reference workload (`benchmarks.http`'s cached RDB). Both
get the same `wrk` load (feedback for 10% of decisions, or `--feedback N`: for one
in N, 0 none), alternately, and it
prints per server the Redis CPU per decision (`INFO cpu` deltas over its
runs: reads, write-behind, feedback, learner), the server's CPU per
decision, and the throughput, medians of the rounds. `--workers 2` serves
each with two workers (prometheus_client's multiprocess mode, as in
production).

When the base stores windows in another layout (its `windows.LAYOUT_VERSION`
differs), each server gets a `redis-server` of its own, loaded with the
cached workload of its own layout (both must have been built by
`benchmarks.http`, or converted with `arbiter migrate`): the same events,
stored each version's way, side by side.
"""

from __future__ import annotations

import argparse
import re
import statistics
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

from arbiter.engine.store import windows
from benchmarks import reference
from benchmarks._harness import baseline_tree
from benchmarks.http import (
    CACHE,
    arbiter,
    redis_cpu,
    redis_server,
    reference_inputs,
    run_wrk,
    warm,
)


def layout_of(tree: Path) -> int:
    """`windows.LAYOUT_VERSION` of an exported version's tree."""
    text = (tree / "arbiter" / "engine" / "store" / "windows.py").read_text()
    found = re.search(r"^LAYOUT_VERSION = (\d+)", text, re.M)
    assert found is not None
    return int(found.group(1))


def rdb_of(layout: int) -> Path:
    """The cached reference workload stored by window layout `layout`."""
    w = reference.Workload()
    path = CACHE / f"reference-v{layout}-{w.customers}x{w.events_per_customer}-s{w.seed}.rdb"
    if not path.exists():
        raise SystemExit(f"{path} missing: build it with that version's `benchmarks.http`")
    return path


def main() -> None:
    """Run both servers alternately and print the comparison."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--base", default="088a09d", help="the commit to compare against")
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--seconds", type=int, default=5)
    ap.add_argument(
        "--feedback",
        "--feedback-every",
        dest="feedback",
        type=int,
        default=10,
        help="feedback for 1 decision in N (0: none)",
    )
    ap.add_argument("--workers", type=int, default=1, help="workers of each server")
    opts = ap.parse_args()
    rdb, bodies = reference_inputs()
    got: dict[str, list[tuple[float, float, float]]] = {"base": [], "this": []}
    with tempfile.TemporaryDirectory() as tmp_name, ExitStack() as stack:
        tmp = Path(tmp_name)
        base = baseline_tree(opts.base, tmp / "base")
        redis_port = stack.enter_context(redis_server(tmp, rdb))
        redis_ports = {"this": redis_port, "base": redis_port}
        if layout_of(base) != windows.LAYOUT_VERSION:
            (tmp / "rb").mkdir()
            redis_ports["base"] = stack.enter_context(
                redis_server(tmp / "rb", rdb_of(layout_of(base)))
            )
            print(f"base on window layout {layout_of(base)}: a redis-server of its own")
        ports = {
            "base": stack.enter_context(
                arbiter(redis_ports["base"], tmp / "b", "uvicorn", workers=opts.workers, code=base)
            )
        }
        ports["this"] = stack.enter_context(
            arbiter(redis_port, tmp / "t", "uvicorn", workers=opts.workers)
        )
        for port in ports.values():
            warm(port, "/v1/decide", bodies)
        for r in range(opts.rounds):
            order = list(ports.items()) if r % 2 == 0 else list(ports.items())[::-1]
            for name, port in order:
                cpu0 = redis_cpu(redis_ports[name])
                load = run_wrk(
                    port, "/v1/decide", bodies, opts.seconds, feedback_every=opts.feedback
                )
                time.sleep(0.6)  # the write-behind lingers: let it land
                redis_us = (redis_cpu(redis_ports[name]) - cpu0) / max(1, load.decisions) * 1e6
                got[name].append((redis_us, load.server_cpu_us, load.rps))
    print(
        f"{opts.base} (base) against this checkout, {opts.workers} worker(s) each, "
        f"{opts.rounds} rounds alternating:"
    )
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

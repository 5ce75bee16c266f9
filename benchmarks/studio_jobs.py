"""What a big studio simulation costs the live decisions of the same server:
before (a git ref, default `main`, where simulate ran in a thread of the
serving process) and after (this tree, where it runs in the studio's worker
process pool), side by side in one run.

For each version in turn, one `arbiter serve` of `rulesets/retail.rules` on
127.0.0.1 (one Redis for both, embedded): sequential `/v1/decide` calls alone,
then the same calls while a second client posts `/v1/studio/simulate` back to
back (generated population of `--sample` customers, every channel, compared
with the live version: 2 x sample x 3 decisions each). The baseline's code is
taken with `git archive <ref>` into a temporary folder and imported from
there. Bounded in count.

    python -m benchmarks.studio_jobs [--requests 1000] [--sample 2000] [--before main]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from arbiter.engine.store.embedded import EmbeddedRedis
from benchmarks._harness import (
    ROOT,
    Client,
    arbiter_argv,
    baseline_tree,
    free_port,
    server,
    summary,
    timed_loop,
)

ADMIN = {"Authorization": "Bearer bench-admin"}
RULES = "rulesets/retail.rules"
#: The longest the decisions-while-simulating loop runs.
MAX_BUSY_S = 300


def measure(
    port: int, env: dict[str, str], requests: int, simulate: bytes, decide: list[bytes]
) -> dict[str, Any]:
    """Decide alone, then while simulations run back to back, on one server.

    The busy figures count only decisions made while a simulation was in flight:
    at least `requests` of them and at least one whole simulation (bounded in time).
    """
    with server(arbiter_argv(RULES, port), port, env):
        client = Client(port, ADMIN)
        warm = Client(port, ADMIN)
        warm.conn.timeout = 300  # one simulation is seconds
        timed_loop(warm, "/v1/studio/simulate", [simulate], 1)  # warm up (models, workers)
        timed_loop(client, "/v1/decide", decide, 200)
        alone = summary(timed_loop(client, "/v1/decide", decide, requests))
        stop = threading.Event()
        sims: list[float] = []

        def simulate_without_pause() -> None:
            studio = Client(port, ADMIN)  # a fresh connection (the warm one may have idled out)
            studio.conn.timeout = 300
            while not stop.is_set():
                sims.extend(timed_loop(studio, "/v1/studio/simulate", [simulate], 1))

        runner = threading.Thread(target=simulate_without_pause)
        runner.start()
        busy_samples: list[float] = []
        deadline = time.monotonic() + MAX_BUSY_S
        try:
            time.sleep(0.5)  # the simulation has started
            while (len(busy_samples) < requests or not sims) and time.monotonic() < deadline:
                busy_samples += timed_loop(
                    client, "/v1/decide", decide[len(busy_samples) % 200 :], 1
                )
        finally:
            stop.set()
            runner.join()
    if not sims:
        raise RuntimeError("no simulation finished while decisions were measured")
    return {
        "alone": alone,
        "busy": summary(busy_samples),
        "decisions": len(busy_samples),
        "simulations": len(sims),
        "sim": summary(sims),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=1000)
    ap.add_argument("--sample", type=int, default=2000)
    ap.add_argument("--before", default="main", help="git ref of the baseline")
    args = ap.parse_args()
    text = (ROOT / RULES).read_text(encoding="utf-8")
    simulate = json.dumps(
        {
            "text": text,
            "context": {"channel": "web", "page": "/", "device": "mobile"},
            "population": "generated",
            "sample": args.sample,
            "by_channel": True,
            "compare_live": True,
        }
    ).encode()
    context = {"channel": "web", "page": "/account", "device": "mobile"}
    decide = [json.dumps({"customer_id": f"c{i}", "context": context}).encode() for i in range(200)]
    results: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory() as tmp, EmbeddedRedis(Path(tmp) / "redis") as redis:
        env = {
            "ARBITER_REDIS_URL": redis.url,
            "ARBITER_ADMIN_KEY": "bench-admin",
            "ARBITER_DATA_DIR": str(Path(tmp) / "data"),
            "ARBITER_LEARNER": "off",
        }
        old = baseline_tree(args.before, Path(tmp) / "before")
        path = os.pathsep.join(p for p in (str(old), os.environ.get("PYTHONPATH", "")) if p)
        results[f"before ({args.before})"] = measure(
            free_port(), {**env, "PYTHONPATH": path}, args.requests, simulate, decide
        )
        results["after (this tree)"] = measure(free_port(), env, args.requests, simulate, decide)
    print(f"{'/v1/decide':40}{'median ms':>10}{'p99 ms':>10}")
    for label, r in results.items():
        print(
            f"{label + ', alone':40}{r['alone']['median_ms']:>10.2f}{r['alone']['p99_ms']:>10.2f}"
        )
        busy = f"{label}, simulating ({r['decisions']})"
        print(f"{busy:40}{r['busy']['median_ms']:>10.2f}{r['busy']['p99_ms']:>10.2f}")
    for label, r in results.items():
        print(
            f"{label}: decide while simulating / alone: "
            f"median {r['busy']['median_ms'] / r['alone']['median_ms']:.2f}x, "
            f"p99 {r['busy']['p99_ms'] / r['alone']['p99_ms']:.2f}x; "
            f"one simulation median {r['sim']['median_ms'] / 1000:.1f} s"
        )


if __name__ == "__main__":
    main()

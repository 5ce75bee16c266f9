"""What one reward costs the in-process learner: another commit's learner against this one.

    python -m benchmarks.learner_cost [--base 66d9e57] [--rounds 4] [--rewards 3000] [--batch 20]

In a real server the learner shares the worker's CPU with decide, so its
cost per reward is server CPU. In `benchmarks.ab_commits` both servers share
one Redis, and the bandit's lease lets only one of them learn, so the
learner's cost lands on whichever took the lease first: it is measured here
instead. Each round, for each version in turn (the other one exported with
`git archive`, as `ab_commits` does), a child process fills a fresh Redis
with `--rewards` decisions of a bandit (records stored as the decision log
stores them) and one reward each on the reward stream, then runs a
`Learner` over them (`run_once`: reads of `--batch` entries, the join of
each reward to its record, VW learning, a publish every 100 rewards, the
acknowledgements) and reports its process CPU per reward. `--batch 20` is
about what a read finds at 200 rewards a second and the server's 100 ms
poll. Medians of the rounds; Redis CPU per reward (`INFO cpu`) beside it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks._harness import ROOT, baseline_tree, free_port

RULES = """ruleset bench
context { device: string, page: string }
action a1 { value 1 }
action a2 { value 1 }
action a3 { value 1 }
action a4 { value 1 }
when true offer a1
when true offer a2
when true offer a3
when true offer a4
bandit hero over [a1, a2, a3, a4] features (context.device, context.page) explore epsilon 0.1
"""


async def _child(url: str, rewards: int, batch: int) -> dict[str, float]:
    from arbiter import dsl
    from arbiter.engine.codegen.compiler import compile_plan
    from arbiter.engine.decision.decide import decide
    from arbiter.engine.decision.oracle import LiveOracle
    from arbiter.engine.learning.bandit import Exploration
    from arbiter.engine.learning.learner import Learner, LearnerConfig
    from arbiter.engine.records import ENCODER, DecideRequest, Inputs
    from arbiter.engine.store import keys
    from arbiter.engine.store.client import connect

    plan = compile_plan(dsl.check(dsl.parse(RULES, "bench.rules")))
    redis = connect(url, socket_timeout=5.0)
    try:
        await redis.flushall()
        oracle = LiveOracle({}, {})
        pipe = redis.pipeline(transaction=False)
        for i in range(rewards):
            context = {"device": ("mobile", "desktop")[i % 2], "page": f"/p{i % 7}"}
            _, record = decide(
                plan,
                DecideRequest(f"c{i}", context),
                Inputs(),
                decision_id=f"d{i:08d}",
                now=1.7e9 + i,
                oracle=oracle,
            )
            pipe.set(keys.decision(record.decision_id), ENCODER.encode(record), ex=3600)
            fields = {
                "decision_id": record.decision_id,
                "action": record.bandits[0].chosen,
                "reward": repr(float(i % 3 == 0)),
                "ts": "1700000000.0",
                "source": "feedback",
            }
            pipe.xadd(keys.REWARD_STREAM, fields)  # type: ignore[arg-type]
        await pipe.execute()
        learner = Learner(
            redis,
            "bench",
            "hero",
            Exploration("epsilon", 0.1),
            config=LearnerConfig(batch=batch, publish_every=100, publish_interval=60.0),
        )
        redis_cpu0 = await _redis_cpu(redis)
        cpu0 = time.process_time()
        stats = await learner.run_once()
        cpu = time.process_time() - cpu0
        redis_cpu = await _redis_cpu(redis) - redis_cpu0
        if stats.learned != rewards:
            raise SystemExit(f"learned {stats.learned} of {rewards} rewards")
        return {"cpu_us": cpu / rewards * 1e6, "redis_us": redis_cpu / rewards * 1e6}
    finally:
        await redis.aclose()


async def _redis_cpu(redis: object) -> float:
    info = await redis.info("cpu")  # type: ignore[attr-defined]
    return float(info["used_cpu_sys"]) + float(info["used_cpu_user"])


def _run(code: Path | None, url: str, rewards: int, batch: int) -> dict[str, float]:
    env = dict(os.environ)
    if code is not None:
        env["PYTHONPATH"] = str(code)
    argv = [sys.executable, "-m", "benchmarks.learner_cost", "--child", url]
    argv += ["--rewards", str(rewards), "--batch", str(batch)]
    out = subprocess.run(argv, cwd=ROOT, env=env, check=True, capture_output=True, text=True)
    result: dict[str, float] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def main() -> None:
    """Run both learners alternately and print the comparison."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--base", default="66d9e57", help="the commit to compare against")
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--rewards", type=int, default=3000)
    ap.add_argument("--batch", type=int, default=20)
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    opts = ap.parse_args()
    if opts.child:
        print(json.dumps(asyncio.run(_child(opts.child, opts.rewards, opts.batch))))
        return
    got: dict[str, list[dict[str, float]]] = {"base": [], "this": []}
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        codes = {"base": baseline_tree(opts.base, tmp / "base"), "this": None}
        port = free_port()
        argv = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", ""]
        argv += ["--appendonly", "no", "--dir", str(tmp)]
        redis = subprocess.Popen(argv, stdout=subprocess.DEVNULL)
        try:
            time.sleep(0.5)
            url = f"redis://127.0.0.1:{port}/0"
            for r in range(opts.rounds):
                order = ["base", "this"] if r % 2 == 0 else ["this", "base"]
                for name in order:
                    got[name].append(_run(codes[name], url, opts.rewards, opts.batch))
        finally:
            redis.terminate()
            redis.wait(timeout=10)
    print(
        f"{opts.base} (base) against this checkout, {opts.rounds} rounds alternating, "
        f"{opts.rewards} rewards, reads of {opts.batch}:"
    )
    print("| learner | worker CPU per reward | Redis CPU per reward |")
    print("|---|---:|---:|")
    med = {}
    for name, runs in got.items():
        med[name] = [statistics.median(x[k] for x in runs) for k in ("cpu_us", "redis_us")]
        print(f"| {name} | {med[name][0]:.1f} µs | {med[name][1]:.1f} µs |")
    print(
        f"this / base: worker {med['this'][0] / med['base'][0]:.2f}x, "
        f"Redis {med['this'][1] / med['base'][1]:.2f}x"
    )
    per_round = "; ".join(
        ", ".join(f"{x['cpu_us']:.0f}" for x in got[name]) for name in ("base", "this")
    )
    print(f"worker µs per round (base; this): {per_round}")


if __name__ == "__main__":
    main()

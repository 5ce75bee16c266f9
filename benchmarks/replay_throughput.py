"""Replay throughput: records per second on one core and with ``--jobs 2``, side by side.

Writes a decision log of ``--records`` records (default 100,000) from the
reference ruleset `rulesets/retail.rules` -- three ONNX models, the
`homepage_hero` bandit (a trained VW model, so its pmf is VW's, not the
cold-start uniform), an experiment, the holdout, event aggregates -- by
calling the engine's `decide` with a `LiveOracle`, as the server does after
its Redis read. Then it replays the log with `engine.log.parallel.replay_log`
over `split_logs` pieces (what `arbiter replay LOG` runs, minus the progress
bar), same rules, every record checked for exact reproduction:

- ``1 process``;
- ``--jobs 2``: two workers forked after the rules are compiled, each reading
  its own pieces of the file;
- ``--jobs 2, previous design`` (unless ``--no-previous``): workers spawned
  (fresh interpreters compiling the rules), the parent reading every line and
  sending chunks of 2,000 records -- what `arbiter replay` did before.

The configurations alternate within each round. For each run: wall-clock
records/s, and CPU seconds per record of this process and its workers
together (user + system; on a shared machine the CPU cost is the steadier
figure). Prints medians and the ratio of each ``--jobs 2`` to one process.

    python -m benchmarks.replay_throughput [--records 100000] [--rounds 3] [--gzip]
"""

from __future__ import annotations

import argparse
import gzip
import os
import random
import resource
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from arbiter import dsl
from arbiter.engine.codegen.compiler import compile_plan
from arbiter.engine.decision.decide import decide
from arbiter.engine.decision.oracle import LiveOracle
from arbiter.engine.learning.bandit import BanditModel
from arbiter.engine.learning.bandit_store import exploration_of
from arbiter.engine.log.files import RotatingFiles
from arbiter.engine.log.parallel import ReplaySetup, chunks_from_files, replay_log, split_logs
from arbiter.engine.records import ENCODER, DecideRequest, Inputs
from arbiter.engine.scoring.loading import load_models

ROOT = Path(__file__).resolve().parent.parent
RULES = ROOT / "rulesets" / "retail.rules"
DEVICES = ("desktop", "mobile", "tablet")


def _inputs(rng: random.Random, now: float) -> Inputs:
    profile: dict[str, Any] = {
        "lifetime_value": round(rng.choice([0, 80, 600, 2500]) * rng.random(), 2),
        "orders_90d": rng.randint(0, 6),
        "visits_30d": rng.randint(0, 20),
        "last_purchase_at": now - rng.randint(1, 200) * 86400,
        "loyalty_tier": rng.choice(["none", "silver", "gold"]),
        "consents": rng.choice([["email"], [], ["email", "sms"]]),
    }
    aggregates = {
        "count(purchase within 31536000s)": float(rng.randint(0, 9)),
        "count(product_view within 86400s)": float(rng.randint(0, 6)),
        "count(add_to_cart within 86400s)": float(rng.randint(0, 2)),
        "count(purchase within 86400s)": float(rng.randint(0, 1)),
        "count(purchase within 2592000s)": float(rng.randint(0, 3)),
        "count(add_to_cart within 604800s)": float(rng.randint(0, 3)),
        "last(add_to_cart within 0s)": now - rng.randint(60, 90000),
        "last(page_view within 0s)": now - rng.randint(1, 900000),
    }
    return Inputs(profile, aggregates, {}, {})


def write_log(path: Path, n: int, seed: int = 11) -> float:
    """``n`` records of retail.rules to JSONL files under ``path``; seconds taken."""
    plan = compile_plan(dsl.load_checked(RULES))
    decl = plan.checked.bandits["homepage_hero"]
    bandit = BanditModel("homepage_hero", exploration_of(decl))
    oracle = LiveOracle(load_models(plan, RULES.parent), {"homepage_hero": bandit})
    rng = random.Random(seed)
    files = RotatingFiles(path, max_bytes=64 * 1024 * 1024)
    started = time.perf_counter()
    now = 1.796e9
    batch: list[bytes] = []
    for i in range(n):
        context = {
            "channel": rng.choice(["web", "web", "web", "app", "email"]),
            "page": rng.choice(["/", "/", "/cart", "/product/7", "/account"]),
            "device": rng.choice(DEVICES),
            "cart_value": rng.choice([0, 20, 45, 120]),
        }
        oracle.scores = {}
        _, record = decide(
            plan,
            DecideRequest(f"c{i % 20000}", context, limit=2),
            _inputs(rng, now),
            decision_id=f"bench-{seed}-{i}",
            now=now + i * 0.01,
            oracle=oracle,
        )
        batch.append(ENCODER.encode(record))
        for choice in record.bandits:
            if i < 3000:  # learn a little, so later pmfs come from VW and vary
                reward = float(choice.arms.index(choice.chosen) == DEVICES.index(context["device"]))
                bandit.learn(
                    choice.shared,
                    choice.arm_features,
                    choice.arms.index(choice.chosen),
                    reward,
                    choice.probability,
                )
        if len(batch) >= 1000:
            files.write(batch)
            batch = []
    files.write(batch)
    files.close()
    return time.perf_counter() - started


def _cpu() -> float:
    """CPU seconds of this process and its reaped children (the pool joins its workers)."""
    me = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def machine() -> str:
    """CPUs, load, and whether the kernel shares CPU time by session (autogroup)."""
    try:
        autogroup = Path("/proc/sys/kernel/sched_autogroup_enabled").read_text().strip() == "1"
    except OSError:
        autogroup = False
    return (
        f"CPUs: os.cpu_count()={os.cpu_count()}, usable by this process="
        f"{len(os.sched_getaffinity(0))}; load average {os.getloadavg()[0]:.1f}; "
        f"sched_autogroup {'on (CPU shared per session, not per process)' if autogroup else 'off'}"
    )


CONFIGS = {
    "1 process": (1, None, "pieces"),
    "--jobs 2": (2, None, "pieces"),
    "--jobs 2, previous design": (2, "spawn", "chunks"),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--gzip", action="store_true", help="replay a gzipped copy of the log")
    parser.add_argument(
        "--no-previous", action="store_true", help="skip the previous design (spawn, chunks)"
    )
    args = parser.parse_args()
    configs = {k: v for k, v in CONFIGS.items() if not (args.no_previous and "previous" in k)}
    print(machine())
    with tempfile.TemporaryDirectory() as tmp:
        log = Path(tmp) / "log"
        took = write_log(log, args.records)
        if args.gzip:
            for f in list(log.iterdir()):
                with f.open("rb") as src, gzip.open(f.with_name(f.name + ".gz"), "wb") as dst:
                    shutil.copyfileobj(src, dst, 1 << 20)
                f.unlink()
        size = sum(p.stat().st_size for p in log.iterdir())
        print(
            f"log: {args.records:,} records of {RULES.name}, {size / 1e6:.0f} MB"
            f"{' gzipped' if args.gzip else ''}, written in {took:.1f}s"
        )
        setup = ReplaySetup((str(RULES),))
        rates: dict[str, list[float]] = {k: [] for k in configs}
        cpus: dict[str, list[float]] = {k: [] for k in configs}
        for r in range(args.rounds):
            order = list(configs) if r % 2 == 0 else list(reversed(configs))
            for name in order:
                jobs, method, kind = configs[name]
                cpu0, started = _cpu(), time.perf_counter()
                tasks = (
                    split_logs([log], jobs=jobs) if kind == "pieces" else chunks_from_files([log])
                )
                report = replay_log(setup, tasks, jobs=jobs, method=method)
                elapsed = time.perf_counter() - started
                cpu = _cpu() - cpu0
                assert report.total == args.records, report.total
                assert report.reproduced == args.records, (report.mismatches[:3], report.total)
                rates[name].append(args.records / elapsed)
                cpus[name].append(cpu / args.records * 1e6)
                print(
                    f"  round {r + 1}, {name:<26} {args.records / elapsed:>8,.0f} records/s, "
                    f"{cpu / args.records * 1e6:>5.0f} CPU-us/record "
                    f"(load {os.getloadavg()[0]:.1f})"
                )
        one = statistics.median(rates["1 process"])
        one_cpu = statistics.median(cpus["1 process"])
        print(f"medians of {args.rounds} rounds:")
        for name in configs:
            rate, cpu = statistics.median(rates[name]), statistics.median(cpus[name])
            print(
                f"  {name:<26} {rate:>8,.0f} records/s ({rate / one:.2f}x wall-clock), "
                f"{cpu:>5.0f} CPU-us/record ({cpu / one_cpu:.2f}x CPU)"
            )
        print("every record reproduced exactly in every run")


if __name__ == "__main__":
    main()

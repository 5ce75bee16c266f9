"""`arbiter evaluate` on one core and with ``--jobs 2``, side by side.

Writes the decision log of `benchmarks.replay_throughput` (``--records``
decisions of `rulesets/retail.rules`, default 50,000) and a reward for every
decision's first action (seeded coin flips), then evaluates the same rules
as the candidate with `engine.log.evaluate_jobs.EvaluatePool` (what
`arbiter evaluate LOG --jobs N` runs, minus the progress bar): collecting the
rounds (each record replayed once per combination of bandit draws), the
cross-fitted reward model, and 1,000 bootstrap resamples for the candidate
and for the uniform baseline. One process and two workers alternate within
each round; for each run: wall-clock seconds and CPU seconds (this process
and its workers); the two runs' numbers must be identical.

    python -m benchmarks.evaluate_throughput [--records 50000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import tempfile
import time
from pathlib import Path

from arbiter.engine.log.evaluate import evaluate
from arbiter.engine.log.evaluate_jobs import EvaluatePool, EvaluateSetup
from arbiter.engine.log.files import read_records
from arbiter.engine.log.parallel import split_logs
from benchmarks.replay_throughput import RULES, _cpu, machine, write_log


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=50_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--resamples", type=int, default=1000)
    args = parser.parse_args()
    print(machine())
    with tempfile.TemporaryDirectory() as tmp:
        log = Path(tmp) / "log"
        write_log(log, args.records)
        rng = random.Random(5)
        rewards = {
            (r.decision_id, r.actions[0].action): float(rng.random() < 0.1)
            for r in read_records([log])
            if r.actions
        }
        setup = EvaluateSetup((str(RULES),), rewards)
        walls: dict[int, list[float]] = {1: [], 2: []}
        cpus: dict[int, list[float]] = {1: [], 2: []}
        answers = set()
        for r in range(args.rounds):
            for jobs in (1, 2) if r % 2 == 0 else (2, 1):
                cpu0, started = _cpu(), time.perf_counter()
                with EvaluatePool(setup, jobs) as pool:
                    rounds, counts, _notes = pool.collect(split_logs([log], jobs=jobs))
                    collected = time.perf_counter() - started
                    result = evaluate(
                        rounds, counts, resamples=args.resamples, resampler=pool.bootstrap
                    )
                elapsed = time.perf_counter() - started
                cpu = _cpu() - cpu0
                answers.add(repr((result.estimates, result.uniform)))
                walls[jobs].append(elapsed)
                cpus[jobs].append(cpu)
                print(
                    f"  round {r + 1}, jobs {jobs}: {elapsed:6.1f} s wall "
                    f"(collecting {collected:.1f} s), {cpu:6.1f} CPU-s "
                    f"(load {os.getloadavg()[0]:.1f})"
                )
        assert len(answers) == 1, "jobs 1 and 2 gave different numbers"
        one, two = statistics.median(walls[1]), statistics.median(walls[2])
        c1, c2 = statistics.median(cpus[1]), statistics.median(cpus[2])
        print(f"medians of {args.rounds} rounds, {args.records:,} decisions:")
        print(f"  1 process: {one:6.1f} s wall, {c1:6.1f} CPU-s")
        print(
            f"  --jobs 2:  {two:6.1f} s wall ({one / two:.2f}x faster), {c2:6.1f} CPU-s "
            f"({c2 / c1:.2f}x CPU)"
        )
        print("identical estimates and intervals in every run")


if __name__ == "__main__":
    main()

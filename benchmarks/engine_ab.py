"""Engine work per decision (target 6 of issue 11): another commit's engine against this one.

    python -m benchmarks.engine_ab --base 66d9e57 [--rounds 3]

Runs `benchmarks.http`'s engine measurement (`engine_figures`: `decide` on
retail.rules with its ONNX models and a trained bandit, inputs read from the
cached reference workload, no I/O timed; and the same with a 50-arm bandit)
in a fresh process per round, once with `--base`'s package tree first on
`PYTHONPATH` (`_harness.baseline_tree`) and once with this checkout,
alternately, and prints each side's medians per round. The measuring code is
this checkout's for both, so only the engine differs.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from benchmarks._harness import ROOT, baseline_tree

_CHILD = """
import json, sys, tempfile
from pathlib import Path
from benchmarks import http, reference
rdb, _ = http.reference_inputs()
with tempfile.TemporaryDirectory() as tmp:
    with http.redis_server(Path(tmp), rdb) as port:
        print(json.dumps(http.engine_figures(port, reference.Workload(), Path(tmp))))
"""


def measure(code: Path | None) -> dict[str, float]:
    """One `engine_figures` run in a fresh process, with `code`'s engine if given."""
    env = dict(os.environ)
    if code is not None:
        env["PYTHONPATH"] = str(code)
    out = subprocess.run(
        [sys.executable, "-c", _CHILD], env=env, cwd=ROOT, capture_output=True, text=True
    )
    if out.returncode != 0:
        raise SystemExit(f"engine measurement failed:\n{out.stderr[-2000:]}")
    figures: dict[str, float] = json.loads(out.stdout.strip().splitlines()[-1])
    return figures


def main() -> None:
    """Measure both engines alternately and print the comparison."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--base", required=True, help="the commit to compare against")
    ap.add_argument("--rounds", type=int, default=3)
    opts = ap.parse_args()
    got: dict[str, list[dict[str, float]]] = {"base": [], "this": []}
    with tempfile.TemporaryDirectory() as tmp:
        base = baseline_tree(opts.base, Path(tmp) / "base")
        for r in range(opts.rounds):
            order = ["base", "this"] if r % 2 == 0 else ["this", "base"]
            for name in order:
                got[name].append(measure(base if name == "base" else None))
                print(f"round {r + 1} {name}: {got[name][-1]}", file=sys.stderr)
    print(f"{opts.base} (base) against this checkout, {opts.rounds} rounds alternating:")
    print("| engine | retail.rules, median µs per decision | with a 50-arm bandit |")
    print("|---|---:|---:|")
    for name, runs in got.items():
        one = statistics.median(x["engine_us"] for x in runs)
        fifty = statistics.median(x["engine50_us"] for x in runs)
        rounds = ", ".join(f"{x['engine_us']:.1f}" for x in runs)
        print(f"| {name} | {one:.1f} ({rounds}) | {fifty:.1f} |")
    ratio = statistics.median(x["engine_us"] for x in got["this"]) / statistics.median(
        x["engine_us"] for x in got["base"]
    )
    print(f"this / base: {ratio:.2f}x")


if __name__ == "__main__":
    main()

"""What an explanation costs: `decide` with and without `explain`, and building the probes.

Run from the repository root::

    .venv/bin/python -m benchmarks.explain_cost [--sizes 1000] [--decisions 200] [--repeat 5]

For `rulesets/retail.rules` (inputs: its own scenarios) and for generated
rulesets of the rule-scaling benchmark's shape (`rules_scaling.generate`,
random profiles and contexts), it reports, side by side in one run, the
median per-decision time of `engine.decide` without `explain` (the hot path)
and with it, their ratio, and — where the plan has probes (`Plan.probes`,
generated the first time a plan explains) — how long generating them took,
next to how long compiling the plan took. The script uses only public APIs,
so the same file runs against an older tree for a before/after comparison.
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from arbiter import dsl
from arbiter.engine.codegen.compiler import compile_plan
from arbiter.engine.decision.decide import decide
from arbiter.engine.decision.literal_inputs import literal_inputs
from arbiter.engine.decision.scenarios import DEFAULT_NOW, ScenarioOracle, scenario_inputs
from arbiter.engine.plan import Plan
from arbiter.engine.records import DecideRequest, Inputs
from benchmarks.rules_scaling import generate, per_call_median, random_inputs

ROOT = Path(__file__).resolve().parent.parent
RETAIL = ROOT / "rulesets" / "retail.rules"


def _calls(
    plan: Plan, cases: Sequence[tuple[dict[str, Any], Inputs, dict[str, Any], float]], explain: bool
) -> list[Callable[[], object]]:
    out: list[Callable[[], object]] = []
    for i, (context, inputs, scores, now) in enumerate(cases):
        request = DecideRequest(f"c{i}", context, limit=3, explain=explain)

        def call(r: DecideRequest = request, x: Inputs = inputs, s: Any = scores, t: float = now):
            return decide(plan, r, x, decision_id="d-1", now=t, oracle=ScenarioOracle(s, plan))

        out.append(call)
    return out


def measure(
    name: str, compile_: Callable[[], Plan], cases_of: Callable[[Plan], Any], a: Any
) -> str:
    t0 = time.perf_counter()
    plan = compile_()
    compile_s = time.perf_counter() - t0
    cases = cases_of(plan)
    build = "—"
    if hasattr(plan, "probes"):
        t0 = time.perf_counter()
        plan.probes()
        build = f"{time.perf_counter() - t0:.2f}"
    plain = per_call_median(_calls(plan, cases, False), a.repeat)
    explained = per_call_median(_calls(plan, cases, True), a.repeat)
    return (
        f"| {name} | {compile_s:.2f} | {build} | {plain:.1f} | {explained:.1f} "
        f"| {explained / plain:.1f}x |"
    )


def retail_cases(plan: Plan) -> list[tuple[dict[str, Any], Inputs, dict[str, Any], float]]:
    out = []
    for sc in plan.checked.scenarios:
        now = sc.now if sc.now is not None else DEFAULT_NOW
        out.append((dict(sc.context), scenario_inputs(plan, sc, now), dict(sc.scores), now))
    return out


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sizes", default="1000", help="generated rule counts, comma-separated")
    p.add_argument("--decisions", type=int, default=200, help="inputs per generated ruleset")
    p.add_argument("--repeat", type=int, default=5, help="calls per input")
    a = p.parse_args(argv)
    print(f"Python {platform.python_version()} on {platform.machine()}")
    print()
    print("| ruleset | compile s | probes s | decide µs | decide + explain µs | ratio |")
    print("|---|---:|---:|---:|---:|---:|")
    checked = dsl.load_checked(RETAIL)
    print(measure("retail.rules", lambda: compile_plan(checked), retail_cases, a), flush=True)
    for size in (int(s) for s in a.sizes.split(",") if s):
        rs = generate(size)
        text = rs.text
        # Outside the plan cache: each compile is timed for real.
        gen_checked = dsl.check(dsl.parse(text, f"generated-{size}.rules"))

        def cases(plan: Plan, rs: Any = rs) -> Any:
            return [
                (context, literal_inputs(plan, profile, [], DEFAULT_NOW), {}, DEFAULT_NOW)
                for profile, context in random_inputs(rs, a.decisions)
            ]

        name = f"generated {size:,} rules"
        print(measure(name, lambda c=gen_checked: compile_plan(c), cases, a), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Where a serving worker's CPU goes, from py-spy's raw (collapsed) samples.

    python -m benchmarks.cpu_breakdown samples.txt [--us 320]

`benchmarks.http --profile` records the decide runs twice: a flame graph for
a person to look at, and the raw stacks this module sorts into a few parts
of a decision (the HTTP server, the engine, the models, the Redis read, the
decision log, ...). With `--us` (server CPU per decision, from the same run)
each share is also given in µs per decision. py-spy sees only Python frames:
time in C (onnxruntime, hiredis, orjson, the kernel's socket calls) counts
towards the Python function that called it, and a function that makes a
system call is over-sampled (`os.urandom` shows as ~3% of a decision in the
samples and costs 0.5 µs of its ~300), so read the parts as a shape, not to
the microsecond.
"""

from __future__ import annotations

import argparse
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path

# A sample belongs to the first of these whose marker is on its stack, anywhere: the
# work a request or a background task does is its own, whatever it calls.
BY_TASK: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("feedback requests", ("feedback_asgi", "routes/feedback.py")),
    ("decision log, write-behind", ("engine/log/",)),
    # The task that sends the decisions' batched reads (and feedback's writes riding them).
    ("Redis read (client, parsing)", ("engine/store/batcher",)),
    ("learner", ("learning/learner.py", "server/learning")),
)
# Otherwise, to the first of these that marks its innermost frame that has one.
BY_FRAME: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("metrics", ("prometheus_client", "server/telemetry/")),
    ("models (onnxruntime)", ("onnxruntime", "engine/scoring/")),
    ("bandit (VW)", ("engine/learning/bandit", "vowpal_wabbit")),
    ("Redis read (client, parsing)", ("engine/store/", "redis/", "hiredis")),
    ("engine: rules, arbitration, record", ("engine/", "<arbiter plan")),
    ("decide route: body, answer", ("server/routes/", "server/fast_path", "server/state.py")),
    ("edge: access, limits, CORS", ("server/security/",)),
    ("HTTP server and event loop", ("uvicorn/", "asyncio/", "Runner.run", "server/app.py")),
    ("threads", ("threading.py", "concurrent/")),
)
REQUEST = "RequestResponseCycle.run_asgi"
BACKGROUND = "background tasks (pollers, timers)"


def part_of(frames: Sequence[str]) -> str:
    """The part of the server one sample's stack (outermost frame first) belongs to."""
    for part, markers in BY_TASK:
        if any(m in f for f in frames for m in markers):
            return part
    in_request = any(REQUEST in f for f in frames)
    for frame in reversed(frames):
        for part, markers in BY_FRAME:
            if any(m in frame for m in markers):
                if not in_request and part not in ("HTTP server and event loop", "threads"):
                    return BACKGROUND
                return part
    return "other"


def breakdown(lines: Iterable[str]) -> dict[str, float]:
    """Share of the samples per part, largest first, from py-spy `--format raw` lines."""
    counts: Counter[str] = Counter()
    for line in lines:
        stack, _, n = line.rstrip().rpartition(" ")
        if not stack or not n.isdigit():
            continue
        counts[part_of(stack.split(";"))] += int(n)
    total = sum(counts.values())
    return {part: n / total for part, n in counts.most_common()} if total else {}


def read(path: Path) -> dict[str, float]:
    """`breakdown` of a raw samples file."""
    with path.open() as f:
        return breakdown(f)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("samples", type=Path, help="py-spy record --format raw output")
    ap.add_argument("--us", type=float, default=None, help="server CPU µs per decision")
    args = ap.parse_args()
    for part, share in read(args.samples).items():
        us = f"  {share * args.us:6.1f} µs" if args.us else ""
        print(f"{share:6.1%}{us}  {part}")


if __name__ == "__main__":
    main()

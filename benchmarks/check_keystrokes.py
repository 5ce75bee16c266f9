"""`POST /v1/check` as a marketer types: before (a git ref, default `main`) and after
(this tree), side by side in one run.

For each version in turn, one `arbiter serve` of `rulesets/retail.rules` on
127.0.0.1 and sequential checks of texts that differ as successive keystrokes
do: a number edited in one segment (`vip`'s threshold, a new value each time),
then a new line typed in the middle of the file (every later line moves). The
baseline's code is taken with `git archive <ref>` and imported from there.
Bounded in count.

    python -m benchmarks.check_keystrokes [--checks 60] [--before main]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path

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
LINE = "segment vip = profile.lifetime_value > 1000 and profile.orders_90d >= 3"


def keystrokes(text: str, n: int) -> tuple[list[bytes], list[bytes]]:
    """`n` texts edited within one line, and `n` with a new line typed mid-file."""
    assert LINE in text
    edits = [text.replace(LINE, LINE.replace("1000", str(1001 + i))) for i in range(n)]
    lines = [text.replace(LINE, LINE + "\n" * (i + 1)) for i in range(n)]
    return [json.dumps({"text": t}).encode() for t in edits], [
        json.dumps({"text": t}).encode() for t in lines
    ]


def measure(
    port: int, env: dict[str, str], edits: list[bytes], lines: list[bytes]
) -> dict[str, dict[str, float]]:
    with server(arbiter_argv(RULES, port), port, env):
        client = Client(port, ADMIN)
        client.conn.timeout = 60
        timed_loop(client, "/v1/check", edits[:1] + lines[-1:], 4)  # warm up the worker
        return {
            "edit": summary(timed_loop(client, "/v1/check", edits, len(edits))),
            "line": summary(timed_loop(client, "/v1/check", lines, len(lines))),
        }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--checks", type=int, default=60)
    ap.add_argument("--before", default="main", help="git ref of the baseline")
    args = ap.parse_args()
    edits, lines = keystrokes((ROOT / RULES).read_text(encoding="utf-8"), args.checks)
    results = {}
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
            free_port(), {**env, "PYTHONPATH": path}, edits, lines
        )
        results["after (this tree)"] = measure(free_port(), env, edits, lines)
    print(f"{'POST /v1/check (retail.rules)':52}{'median ms':>10}{'p99 ms':>10}")
    for label, r in results.items():
        for key, what in (("edit", "a number edited"), ("line", "a new line typed")):
            s = r[key]
            print(f"{label + ', ' + what:52}{s['median_ms']:>10.2f}{s['p99_ms']:>10.2f}")
    (before, after) = results.values()
    for key in ("edit", "line"):
        print(
            f"{key}: median before / after {before[key]['median_ms'] / after[key]['median_ms']:.2f}x"
        )


if __name__ == "__main__":
    main()

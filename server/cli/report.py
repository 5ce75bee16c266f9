"""`arbiter report NAME`: an experiment's or holdout's report from the logs in Redis."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path
from typing import IO, Any

from arbiter import dsl
from arbiter.server.cli.common import redis_url, rule_paths
from arbiter.server.routes.experiments import parse_goal, parse_range


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser], rules: str) -> None:
    """Register `arbiter report`."""
    p = sub.add_parser("report", help="an experiment's or holdout's results, with significance")
    p.add_argument("name", help="an experiment's name, or the holdout's (or 'holdout')")
    p.add_argument("--rules", default=rules, help="a .rules file or a folder of them")
    p.add_argument("--ruleset", default=None, help="which ruleset, if the folder has several")
    p.add_argument(
        "--goal", default=None, help="measure on this event (default: the declared goal)"
    )
    p.add_argument("--within", default=None, help="goal window after first exposure, e.g. 7d")
    p.add_argument("--value", default=None, help="event property summed as the reward")
    p.add_argument(
        "--since",
        default=None,
        help="count decisions made from then on: epoch seconds, an ISO date or time "
        "(UTC unless it says), or a duration before now (7d); reads only that part of the logs",
    )
    p.add_argument("--until", default=None, help="count decisions made until then (as --since)")
    p.add_argument("--format", choices=["text", "json", "html"], default="text")
    p.add_argument("--output", "-o", default=None, help="write here instead of stdout")
    p.add_argument("--min-customers", type=int, default=1000)
    p.add_argument("--min-conversions", type=int, default=20)
    p.add_argument("--alpha", type=float, default=0.05)
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.add_argument(
        "--progress", action="store_true", help="a progress bar even when stderr is no terminal"
    )
    p.set_defaults(func=cmd_report)


class _Bars:
    """One progress bar per stream read, drawn on stderr once a read lasts half a second.

    ``enabled`` None draws only on a terminal (logs and pipes stay clean).
    """

    def __init__(self, enabled: bool | None, err: IO[str]) -> None:
        self.enabled = enabled
        self.err = err
        self.bars: dict[str, Any] = {}

    def __call__(self, label: str, fraction: float) -> None:
        from tqdm import tqdm

        bar = self.bars.get(label)
        if bar is None:
            bar = self.bars[label] = tqdm(
                total=100,
                desc=f"reading {label}",
                bar_format="{desc}: {percentage:3.0f}%|{bar}| {elapsed}",
                file=self.err,
                disable=None if self.enabled is None else not self.enabled,
                # Short reads draw nothing; a forced bar draws at once.
                delay=0.0 if self.enabled else 0.5,
                mininterval=0.25,
            )
        done = round(100 * fraction)
        if done > bar.n:
            bar.update(done - bar.n)

    def close(self) -> None:
        for bar in self.bars.values():
            bar.close()


def cmd_report(args: argparse.Namespace) -> int:
    """Print (or write) the report; exit 1 on an unknown experiment or a bad goal."""
    from arbiter.engine.log.experiment_reads import load_report
    from arbiter.engine.log.experiment_render import render_html, render_text

    checked_all = [dsl.load_checked(p) for p in rule_paths([args.rules])]
    candidates = [
        c
        for c in checked_all
        if (args.ruleset is None or c.name == args.ruleset)
        and (
            args.name in c.experiments
            or (c.holdout is not None and args.name in (c.holdout.name, "holdout"))
        )
    ]
    if len(candidates) != 1:
        what = "no ruleset" if not candidates else "several rulesets"
        print(
            f"arbiter report: {what} in {args.rules} declare '{args.name}'"
            + ("; pick one with --ruleset" if candidates else ""),
            file=sys.stderr,
        )
        return 1
    checked = candidates[0]
    try:
        goal = parse_goal(checked, args.goal, args.within, args.value)
        since, until = parse_range(args.since, args.until, time.time())
    except ValueError as exc:
        print(f"arbiter report: {exc}", file=sys.stderr)
        return 2
    url, embedded = redis_url()

    async def run() -> str:
        from arbiter.engine.store.client import connect

        client = connect(url, socket_timeout=30)
        bars = _Bars(False if args.quiet else (True if args.progress else None), sys.stderr)
        try:
            report = await load_report(
                client,
                checked,
                args.name,
                goal=goal,
                since=since,
                until=until,
                progress=bars,
                min_customers=args.min_customers,
                min_conversions=args.min_conversions,
                alpha=args.alpha,
            )
        finally:
            bars.close()
            await client.aclose()
        if args.format == "json":
            return json.dumps(report.to_json(), indent=2) + "\n"
        return render_html(report) if args.format == "html" else render_text(report)

    try:
        text = asyncio.run(run())
    finally:
        if embedded is not None:
            embedded.stop()
    if args.output:
        Path(args.output).write_text(text)
        print(f"arbiter report: written to {args.output}", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return 0

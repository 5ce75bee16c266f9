"""`arbiter report NAME`: an experiment's or holdout's report from the logs in Redis."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path

from arbiter import dsl
from arbiter.server.cli.common import redis_url, rule_paths
from arbiter.server.routes.experiments import parse_goal


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
    p.add_argument("--format", choices=["text", "json", "html"], default="text")
    p.add_argument("--output", "-o", default=None, help="write here instead of stdout")
    p.add_argument("--min-customers", type=int, default=1000)
    p.add_argument("--min-conversions", type=int, default=20)
    p.add_argument("--alpha", type=float, default=0.05)
    p.set_defaults(func=cmd_report)


def cmd_report(args: argparse.Namespace) -> int:
    """Print (or write) the report; exit 1 on an unknown experiment or a bad goal."""
    from arbiter.engine.log.experiments import load_report, render_html, render_text

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
    except ValueError as exc:
        print(f"arbiter report: {exc}", file=sys.stderr)
        return 2
    url, embedded = redis_url()

    async def run() -> str:
        from arbiter.engine.store.client import connect

        client = connect(url, socket_timeout=30)
        try:
            report = await load_report(
                client,
                checked,
                args.name,
                goal=goal,
                min_customers=args.min_customers,
                min_conversions=args.min_conversions,
                alpha=args.alpha,
            )
        finally:
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

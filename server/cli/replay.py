"""The `arbiter` commands that decide from rules: decide (one decision), replay (logged ones)."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from arbiter.engine.plan import Plan
from arbiter.server.cli.common import compile_rules, redis_url, rule_paths

if TYPE_CHECKING:
    from arbiter.engine.log.parallel import Chunk, Task

__all__ = ["add_replay_parser", "cmd_decide", "cmd_replay"]


# ------------------------------------------------------------------ decide


def cmd_decide(args: argparse.Namespace) -> int:
    """One decision from the command line, against Redis or a literal profile.

    The context, profile and events are validated and converted exactly as
    `POST /v1/decide`, `PUT /v1/profiles` and `POST /v1/events` do
    (`engine.validate`): a value outside its enum or an unreadable time is an
    error naming the field, and with `--profile` the aggregates are those of the
    given `--events` (none: every count is 0).
    """
    from arbiter.engine.decision.decide import decide
    from arbiter.engine.decision.literal_inputs import (
        events_from_json,
        literal_inputs,
        normalize_values,
    )
    from arbiter.engine.decision.oracle import LiveOracle
    from arbiter.engine.records import ENCODER, DecideRequest
    from arbiter.engine.scoring.loading import load_models
    from arbiter.engine.validate import ValueProblem, validate_request

    path = rule_paths([args.rules])[0]
    plan = compile_rules(path)
    now = time.time()
    context = _json_object(args.context, "--context")
    request = DecideRequest(args.customer, context, limit=args.limit, explain=args.explain)
    validate_request(request, plan.checked.context)
    if args.profile is not None:
        profile = normalize_values(
            plan.checked.profile, _json_object(args.profile, "--profile"), "profile."
        )
        events = events_from_json(plan, _json(args.events or "[]", "--events"), now)
        inputs = literal_inputs(plan, profile, events, now)
    elif args.events is not None:
        raise ValueProblem("events", "--events needs --profile (without it, Redis is read)")
    else:
        inputs = asyncio.run(_fetch(plan, args.customer, now))
    oracle = LiveOracle(load_models(plan, path.parent), {})
    decision, _ = decide(
        plan, request, inputs, decision_id=f"cli-{int(now * 1000)}", now=now, oracle=oracle
    )
    print(json.dumps(json.loads(ENCODER.encode(decision)), indent=2))
    return 0


def _json(text: str, option: str) -> Any:
    """A command-line JSON value; unreadable JSON is a usage error (exit 2) naming the option."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{option}: not valid JSON: {exc}") from None


def _json_object(text: str, option: str) -> dict[str, Any]:
    """A command-line JSON object, or a `ValueProblem` naming the option."""
    from arbiter.engine.validate import ValueProblem

    value = _json(text, option)
    if not isinstance(value, dict):
        raise ValueProblem(option, "expected a JSON object")
    return value


async def _fetch(plan: Plan, customer_id: str, now: float) -> Any:
    from arbiter.engine.store.client import connect
    from arbiter.engine.store.profiles import ProfileStore

    url, embedded = redis_url()
    client = connect(url, socket_timeout=5)
    try:
        return await ProfileStore(client).fetch(customer_id, plan.needs, now)
    finally:
        await client.aclose()
        if embedded is not None:
            embedded.stop()


# ------------------------------------------------------------------ replay

_REDIS_SCHEMES = ("redis://", "rediss://", "unix://", "redis+cluster://", "rediss+cluster://")


def cmd_replay(args: argparse.Namespace) -> int:
    """Replay logged decisions against the rules; report; exit 1 on a failed gate.

    Exit 1 when a record differs under the same ruleset version, and, with
    ``--fail-on-change``, when a new ruleset changes a decision in a way the
    ``--allow`` patterns do not expect.
    """
    from tqdm import tqdm

    from arbiter.engine.log.parallel import (
        ReplayPool,
        ReplaySetup,
        chunks_from_files,
        chunks_from_stream,
        plan_files,
        split_logs,
    )
    from arbiter.engine.log.report import to_html, to_json, to_text
    from arbiter.engine.store import keys
    from arbiter.engine.store.client import connect_sync

    setup = ReplaySetup(
        plan_files(rule_paths([args.rules])),
        plan_files(rule_paths(args.baseline)) if args.baseline else (),
    )
    for path in (*setup.rules, *setup.baselines):
        compile_rules(Path(path))  # report rules errors here, once, not from every worker
    sources = list(args.source)
    urls = [s for s in sources if s.startswith(_REDIS_SCHEMES)]
    if urls and len(sources) > 1:
        raise SystemExit("arbiter: replay either log files or one Redis URL, not both")
    embedded = client = None
    try:
        tasks: Iterable[Task]
        if sources and not urls:
            if args.limit is not None:
                tasks = _limited(chunks_from_files(sources), args.limit)
            else:
                # Each worker reads its own pieces of the files.
                tasks = split_logs(sources, jobs=args.jobs)
            total = None
        else:
            url = urls[0] if urls else None
            if url is None:
                url, embedded = redis_url()
            client = connect_sync(url)
            tasks = chunks_from_stream(client, keys.DECISION_STREAM, args.limit)
            total = client.xlen(keys.DECISION_STREAM)
            if args.limit is not None:
                total = min(total, args.limit)
        started = time.perf_counter()
        # The pool before the bar: workers are forked before the bar starts its thread.
        with (
            ReplayPool(setup, args.jobs) as pool,
            tqdm(
                total=total, unit="rec", desc="replay", disable=args.quiet or None, file=sys.stderr
            ) as bar,
        ):
            report = pool.run(tasks, progress=bar.update)
        elapsed = time.perf_counter() - started
    finally:
        if client is not None:
            client.close()
        if embedded is not None:
            embedded.stop()
    if args.format == "json":
        body = json.dumps(to_json(report), indent=2) + "\n"
    elif args.format == "html":
        body = to_html(report)
    else:
        body = to_text(report)
    if args.output:
        Path(args.output).write_text(body, encoding="utf-8")
        print(f"arbiter: report written to {args.output}", file=sys.stderr)
    else:
        sys.stdout.write(body)
    replayed = report.total - report.skipped
    if not args.quiet:
        rate = replayed / elapsed if elapsed > 0 else 0.0
        print(f"arbiter: {replayed} records in {elapsed:.2f}s ({rate:,.0f}/s)", file=sys.stderr)
    if replayed == 0:
        print("no decisions to replay", file=sys.stderr)
    if report.mismatch_count:
        return 1
    if args.fail_on_change:
        unexpected = report.unexpected(args.allow)
        if unexpected:
            kinds = ", ".join(f"{k} ({n})" for k, n in sorted(unexpected.items()))
            print(f"arbiter: unexpected changes: {kinds}", file=sys.stderr)
            return 1
    return 0


def _limited(chunks: Iterator[Chunk], limit: int) -> Iterator[Chunk]:
    left = limit
    for where, lines in chunks:
        if left <= 0:
            return
        yield where, lines[:left]
        left -= len(lines)


def add_replay_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """The `replay` verb."""
    p = sub.add_parser(
        "replay",
        help="recompute logged decisions: exact under the same rules, a what-if under new ones",
    )
    p.add_argument(
        "source",
        nargs="*",
        default=[],
        help="log files (.jsonl, .jsonl.gz), directories of them, or a Redis URL "
        "(default: the server's Redis stream)",
    )
    p.add_argument("--rules", default="rulesets", help="the rules to replay against")
    p.add_argument(
        "--baseline",
        action="append",
        default=[],
        help="the rules the log was written with (only to name the rules of old traces)",
    )
    p.add_argument("--jobs", "-j", type=int, default=1, help="worker processes")
    p.add_argument("--format", choices=["text", "json", "html"], default="text")
    p.add_argument("--output", "-o", default=None, help="write the report to this file")
    p.add_argument(
        "--fail-on-change",
        action="store_true",
        help="exit 1 when the new rules change a decision (beyond --allow)",
    )
    p.add_argument(
        "--allow",
        action="append",
        default=[],
        metavar="OLD->NEW",
        help="an expected change of first action; * matches any; '(nothing)' is no action",
    )
    p.add_argument("--limit", type=int, default=None, help="replay at most this many records")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar or timing")
    p.add_argument("-v", "--verbose", action="store_true", help="(kept for compatibility)")
    p.set_defaults(func=cmd_replay)

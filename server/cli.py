"""The `arbiter` command: serve, check, test, fmt, decide, replay, learn, ingest."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import dsl
from engine.compiler import compile_plan
from engine.plan import Plan

DEFAULT_RULES = "rulesets"


def _paths(args_paths: Sequence[str]) -> list[Path]:
    from server.rulesets import rule_files

    out: list[Path] = []
    for raw in args_paths:
        p = Path(raw)
        if not p.exists():
            raise SystemExit(f"arbiter: {raw}: no such file or directory")
        out.extend(rule_files(p))
    if not out:
        raise SystemExit(f"arbiter: no .rules files in {', '.join(args_paths)}")
    return out


def _compile(path: Path) -> Plan:
    return compile_plan(dsl.load_checked(path))


# ------------------------------------------------------------------- check


def cmd_check(args: argparse.Namespace) -> int:
    """Check files; print diagnostics; exit 1 on errors."""
    from engine.models import check_models

    failed = False
    report: list[dict[str, Any]] = []
    for path in _paths(args.paths):
        diags: list[dsl.Diagnostic] = []
        sources: dict[str, str] = {}
        try:
            ruleset, sources = dsl.load(path)
            checked = dsl.check(ruleset, sources)
            diags.extend(checked.warnings)
            diags.extend(check_models(checked, path.parent))
        except dsl.RulesError as exc:
            diags.extend(exc.diagnostics)
            sources = sources or exc.sources
        errors = [d for d in diags if d.severity == "error"]
        failed |= bool(errors)
        if args.format == "json":
            report.append(
                {"file": str(path), "ok": not errors, "diagnostics": [d.to_json() for d in diags]}
            )
            continue
        for d in diags:
            print(d.format(sources.get(d.span.file)))
        warnings = len(diags) - len(errors)
        status = "FAILED" if errors else "ok"
        print(f"{path}: {status} ({len(errors)} errors, {warnings} warnings)")
    if args.format == "json":
        print(json.dumps(report, indent=2))
    return 1 if failed else 0


# -------------------------------------------------------------------- test


def cmd_test(args: argparse.Namespace) -> int:
    """Run the scenario blocks of rules files, like pytest."""
    from engine.scenarios import format_report, run_scenarios

    results = []
    for path in _paths(args.paths):
        try:
            plan = _compile(path)
        except dsl.RulesError as exc:
            print(exc.format())
            return 1
        results.extend(run_scenarios(plan))
    print(format_report(results))
    return 0 if all(r.passed for r in results) else 1


# --------------------------------------------------------------------- fmt


def cmd_fmt(args: argparse.Namespace) -> int:
    """Print (or write, or check) the canonical form of rules files."""
    from dsl.formatter import format_ruleset

    changed = False
    for path in _paths(args.paths):
        text = path.read_text(encoding="utf-8")
        try:
            formatted = format_ruleset(dsl.parse(text, str(path)))
        except dsl.RulesError as exc:
            print(exc.format(), file=sys.stderr)
            return 1
        if formatted == text:
            continue
        changed = True
        if args.write:
            path.write_text(formatted, encoding="utf-8")
            print(f"reformatted {path}")
        elif args.check:
            print(f"would reformat {path}")
        else:
            sys.stdout.write(formatted)
    return 1 if (args.check and changed) else 0


# ------------------------------------------------------------------ decide


def cmd_decide(args: argparse.Namespace) -> int:
    """One decision from the command line, against Redis or a literal profile."""
    from engine.decide import decide
    from engine.models import load_models
    from engine.oracle import LiveOracle
    from engine.records import ENCODER, DecideRequest, Inputs

    path = _paths([args.rules])[0]
    plan = _compile(path)
    context = json.loads(args.context)
    request = DecideRequest(args.customer, context, limit=args.limit, explain=args.explain)
    now = time.time()
    if args.profile is not None:
        inputs = Inputs(profile=json.loads(args.profile))
    else:
        inputs = asyncio.run(_fetch(plan, args.customer, now))
    oracle = LiveOracle(load_models(plan, path.parent), {})
    decision, _ = decide(
        plan, request, inputs, decision_id=f"cli-{int(now * 1000)}", now=now, oracle=oracle
    )
    print(json.dumps(json.loads(ENCODER.encode(decision)), indent=2))
    return 0


async def _fetch(plan: Plan, customer_id: str, now: float) -> Any:
    from engine.redis_client import connect
    from engine.store import ProfileStore

    url, embedded = _redis_url()
    client = connect(url, socket_timeout=5)
    try:
        return await ProfileStore(client).fetch(customer_id, plan.needs, now)
    finally:
        await client.aclose()
        if embedded is not None:
            embedded.stop()


def _redis_url() -> tuple[str, Any]:
    """ARBITER_REDIS_URL, or the embedded Redis of the data dir (started if not running)."""
    from engine.redis_server import EmbeddedRedis
    from server.settings import Settings

    settings = Settings.from_env()
    if settings.redis_url:
        return settings.redis_url, None
    embedded = EmbeddedRedis.attach_or_start(Path(settings.data_dir) / "redis")
    return embedded.url, embedded


# ------------------------------------------------------------------ replay


def cmd_replay(args: argparse.Namespace) -> int:
    """Replay logged decisions against the rules; exit 1 if a same-version replay differs."""
    from engine.redis_client import connect_sync
    from engine.replay import read_jsonl, read_stream, replay

    plans = {}
    for path in _paths([args.rules]):
        plan = _compile(path)
        plans[plan.name] = plan
    embedded = None
    client = None
    if args.source and not args.source.startswith(
        ("redis://", "rediss://", "unix://", "redis+cluster://")
    ):
        records = read_jsonl(args.source)
    else:
        url = args.source
        if url is None:
            url, embedded = _redis_url()
        client = connect_sync(url)
        from engine import keys

        records = read_stream(client, keys.DECISION_STREAM, args.limit)
    total = identical = mismatched = changed = skipped = 0
    try:
        for record in records:
            found = plans.get(record.ruleset.name)
            if found is None:
                skipped += 1
                continue
            result = replay(found, record)
            total += 1
            if result.identical:
                identical += 1
            elif result.same_plan:
                mismatched += 1
            else:
                changed += 1
            if args.verbose or not result.identical:
                tag = "" if result.same_plan else " [new ruleset version]"
                print(result.describe() + tag)
    finally:
        if client is not None:
            client.close()
        if embedded is not None:
            embedded.stop()
    print(
        f"replayed {total}: {identical} identical, {mismatched} differ under the same ruleset version, "
        f"{changed} changed by a new ruleset version; {skipped} skipped (ruleset not loaded)"
    )
    if total == 0:
        print("no decisions to replay", file=sys.stderr)
    return 1 if mismatched else 0


# ------------------------------------------------------------------ ingest


def cmd_ingest(args: argparse.Namespace) -> int:
    """Stream events from a JSON-lines file into Redis (see server/ingest.py)."""
    from server.ingest import ingest_main

    return ingest_main(
        args.file,
        redis_url=_redis_url,
        batch=args.batch,
        skip_invalid=args.skip_invalid,
        rules=args.rules,
    )


# ------------------------------------------------------------------- learn


def cmd_learn(args: argparse.Namespace) -> int:
    """Learn the bandits of the rules from the reward stream until Ctrl-C or SIGTERM.

    For deployments with many servers: run the servers with
    ``ARBITER_LEARNER=off`` and one or more ``arbiter learn`` beside them (a
    Redis lease keeps exactly one learner active per bandit; the others stand
    by). On a signal the active learners publish what they learned and
    release their leases, so a standby takes over at once.
    """
    import logging

    from engine.learner import LearnerConfig, learn_main

    files = [p for p in _paths([args.rules]) if dsl.load_checked(p).bandits]
    if not files:
        print(f"arbiter: no bandits declared in {args.rules}: nothing to learn", file=sys.stderr)
        return 1
    # The learners log when they take over or stand down: an operator wants to see that.
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    config = LearnerConfig(publish_every=args.publish_every, publish_interval=args.publish_interval)
    url, embedded = _redis_url()

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        names = ", ".join(map(str, files))
        print(f"arbiter: learning the bandits of {names}; Ctrl-C stops", flush=True)
        await asyncio.gather(*(learn_main(url, f, stop, config=config) for f in files))

    try:
        asyncio.run(run())
    finally:
        if embedded is not None:
            embedded.stop()
    print("arbiter: learner stopped")
    return 0


# ------------------------------------------------------------------- serve


def cmd_serve(args: argparse.Namespace) -> int:
    """Start the HTTP server (embedded Redis unless ARBITER_REDIS_URL is set)."""
    import uvicorn

    from engine.redis_server import EmbeddedRedis
    from server.settings import Settings, SettingsError

    os.environ["ARBITER_RULES"] = args.rules
    if args.dev:
        os.environ["ARBITER_DEV"] = "true"
        if not os.environ.get("ARBITER_ADMIN_KEY"):
            key = "dev-" + secrets.token_urlsafe(18)
            os.environ["ARBITER_ADMIN_KEY"] = key
            print(f"arbiter: --dev admin key (send as 'Authorization: Bearer {key}'):\n  {key}")
    try:
        settings = Settings.from_env()
        _paths([args.rules])
    except SettingsError as exc:
        print(f"arbiter: {exc}", file=sys.stderr)
        return 2
    embedded = None
    if settings.redis_url is None:
        # One embedded Redis for all workers, owned by this process.
        embedded = EmbeddedRedis.attach_or_start(Path(settings.data_dir) / "redis")
        os.environ["ARBITER_REDIS_URL"] = embedded.url
        print(f"arbiter: embedded Redis at {embedded.url}")
    print(f"arbiter: serving {args.rules} on http://{args.host}:{args.port} (docs at /docs)")
    try:
        uvicorn.run(
            "server.app:create_app",
            factory=True,
            host=args.host,
            port=args.port,
            workers=args.workers,
            loop="uvloop",
            http="httptools",
            log_level=args.log_level,
            access_log=False,
        )
    finally:
        if embedded is not None:
            embedded.stop()
    return 0


# -------------------------------------------------------------------- main


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every verb."""
    parser = argparse.ArgumentParser(prog="arbiter", description="Next-best-action decisioning.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("serve", help="start the decision server")
    p.add_argument("--rules", default=DEFAULT_RULES, help="a .rules file or a folder of them")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--dev", action="store_true", help="generate and print an admin key")
    p.add_argument("--log-level", default="info")
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("check", help="check rules files for errors")
    p.add_argument("paths", nargs="+")
    p.add_argument("--format", choices=["text", "json"], default="text")
    p.set_defaults(func=cmd_check)

    p = sub.add_parser("test", help="run the scenario blocks of rules files")
    p.add_argument("paths", nargs="+")
    p.set_defaults(func=cmd_test)

    p = sub.add_parser("fmt", help="print rules files in canonical form")
    p.add_argument("paths", nargs="+")
    group = p.add_mutually_exclusive_group()
    group.add_argument("--check", action="store_true", help="exit 1 if a file would change")
    group.add_argument("--write", action="store_true", help="rewrite files in place")
    p.set_defaults(func=cmd_fmt)

    p = sub.add_parser("decide", help="make one decision from the command line")
    p.add_argument("--rules", default=DEFAULT_RULES)
    p.add_argument("--customer", required=True)
    p.add_argument("--context", default="{}", help="JSON object")
    p.add_argument("--profile", default=None, help="JSON object; skips Redis")
    p.add_argument("--limit", type=int, default=1)
    p.add_argument("--explain", action="store_true")
    p.set_defaults(func=cmd_decide)

    p = sub.add_parser("replay", help="recompute logged decisions and compare")
    p.add_argument(
        "source",
        nargs="?",
        default=None,
        help="a .jsonl log or a Redis URL (default: the server's Redis)",
    )
    p.add_argument("--rules", default=DEFAULT_RULES)
    p.add_argument("--limit", type=int, default=None)
    p.add_argument("-v", "--verbose", action="store_true")
    p.set_defaults(func=cmd_replay)

    p = sub.add_parser("ingest", help="load events from a JSON-lines file into Redis")
    p.add_argument(
        "file", help="one event per line: {customer_id, type, ts?, event_id?, properties?}"
    )
    p.add_argument("--batch", type=int, default=500, help="events per Redis pipeline")
    p.add_argument(
        "--skip-invalid",
        action="store_true",
        help="write the valid lines and report the others (default: write nothing if any is invalid)",
    )
    p.add_argument("--rules", default=None, help="check properties against these rules' events")
    p.set_defaults(func=cmd_ingest)

    p = sub.add_parser("learn", help="learn the bandits from the reward stream (for many servers)")
    p.add_argument("--rules", default=DEFAULT_RULES, help="a .rules file or a folder of them")
    p.add_argument(
        "--publish-every", type=int, default=100, help="publish after this many rewards ..."
    )
    p.add_argument(
        "--publish-interval",
        type=float,
        default=1.0,
        help="... or this many seconds after the first unpublished one (match the servers' "
        "ARBITER_RELOAD_INTERVAL_MS)",
    )
    p.set_defaults(func=cmd_learn)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `arbiter` command."""
    args = build_parser().parse_args(argv)
    try:
        code: int = args.func(args)
    except dsl.RulesError as exc:
        print(exc.format(), file=sys.stderr)
        return 1
    except (json.JSONDecodeError, ValueError) as exc:
        print(f"arbiter: {exc}", file=sys.stderr)
        return 2
    return code


if __name__ == "__main__":
    sys.exit(main())

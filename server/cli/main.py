"""The `arbiter` command: serve, check, test, fmt, decide, replay, learn, ingest, consume,
migrate."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

from redis.exceptions import RedisError

from arbiter import dsl
from arbiter.dsl.errors import ArbiterError
from arbiter.server.cli import keys
from arbiter.server.cli import logs as logs_cli
from arbiter.server.cli.common import redis_url, rule_paths
from arbiter.server.cli.evaluate import add_evaluate_parser
from arbiter.server.cli.replay import add_replay_parser, cmd_decide
from arbiter.server.cli.rules import cmd_check, cmd_fmt, cmd_test
from arbiter.server.cli.signals import Stopped, die_of, stop_signals_raise

DEFAULT_RULES = "rulesets"


# ------------------------------------------------------------------ ingest


def cmd_ingest(args: argparse.Namespace) -> int:
    """Stream events from a JSON-lines file into Redis (see server/ingest.py)."""
    from arbiter.server.cli.ingest import ingest_main

    return ingest_main(
        args.file,
        redis_url=redis_url,
        batch=args.batch,
        skip_invalid=args.skip_invalid,
        rules=args.rules,
    )


# ----------------------------------------------------------------- consume


def cmd_consume(args: argparse.Namespace) -> int:
    """Read the intake streams into the windows until Ctrl-C or SIGTERM (see cli/consume.py)."""
    from arbiter.server.cli.consume import consume_main

    return consume_main(
        redis_url=redis_url,
        rules=args.rules,
        shards=args.shards,
        group=args.group,
        name=args.name,
        batch=args.batch,
        claim_idle_ms=args.claim_idle_ms,
    )


# ----------------------------------------------------------------- migrate


def cmd_migrate(args: argparse.Namespace) -> int:
    """Convert event windows stored by an older Arbiter to the current layout."""
    from arbiter.engine.store.client import connect
    from arbiter.engine.store.window_migration import migrate_windows

    url, embedded = redis_url()

    async def run() -> str:
        client = connect(url, socket_timeout=30.0)
        try:
            report = await migrate_windows(client, dry_run=args.dry_run)
        finally:
            await client.aclose()
        verb = "would convert" if args.dry_run else "converted"
        linked = (
            f"; {report.linked} of them linked ids, whose old windows went to their customers"
            if report.linked
            else ""
        )
        return (
            f"arbiter: {verb} the event windows of {report.customers} customers "
            f"({report.old_keys} old keys, {report.series} series){linked}"
        )

    try:
        print(asyncio.run(run()))
    finally:
        if embedded is not None:
            embedded.stop()
    return 0


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

    from arbiter.engine.learning.learner import LearnerConfig, learn_main

    files = [p for p in rule_paths([args.rules]) if dsl.load_checked(p).bandits]
    if not files:
        print(f"arbiter: no bandits declared in {args.rules}: nothing to learn", file=sys.stderr)
        return 1
    # The learners log when they take over or stand down: an operator wants to see that.
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    config = LearnerConfig(publish_every=args.publish_every, publish_interval=args.publish_interval)
    url, embedded = redis_url()

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
    import uvicorn.config

    from arbiter.engine.store.embedded import EmbeddedRedis
    from arbiter.server.security.access import logging_config
    from arbiter.server.settings import Settings, SettingsError

    os.environ["ARBITER_RULES"] = args.rules
    if args.dev:
        os.environ["ARBITER_DEV"] = "true"
        if not os.environ.get("ARBITER_ADMIN_KEY"):
            key = "dev-" + secrets.token_urlsafe(18)
            os.environ["ARBITER_ADMIN_KEY"] = key
            print(f"arbiter: --dev admin key (send as 'Authorization: Bearer {key}'):\n  {key}")
    try:
        settings = Settings.from_env()
        rule_paths([args.rules])
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
    stopped_by: int | None = None
    try:
        # uvicorn re-raises the stop signal after its shutdown; without this, SIGTERM
        # would end the process before the `finally` stops the embedded Redis.
        with stop_signals_raise():
            if args.server == "granian":
                _serve_granian(args)
            else:
                uvicorn.run(
                    "arbiter.server.app:create_app",
                    factory=True,
                    host=args.host,
                    port=args.port,
                    workers=args.workers,
                    loop="uvloop",
                    http="httptools",
                    log_level=args.log_level,
                    access_log=False,
                    # Arbiter's own JSON access log (server.security.access), set up in every worker.
                    log_config=logging_config(uvicorn.config.LOGGING_CONFIG),
                )
    except Stopped as stop:
        stopped_by = stop.signum
    finally:
        if embedded is not None:
            embedded.stop()  # SHUTDOWN SAVE
    if stopped_by is not None:
        die_of(stopped_by)
    return 0


def _serve_granian(args: argparse.Namespace) -> None:
    """The same app under Granian (a Rust HTTP server; `pip install granian`)."""
    try:
        from granian import Granian
        from granian.constants import Interfaces, Loops
        from granian.log import LogLevels

        from arbiter.server.security.access import logging_config
    except ImportError:
        raise SystemExit("arbiter: --server granian needs the granian package") from None
    Granian(
        "arbiter.server.app:create_app",
        factory=True,
        address=args.host,
        port=args.port,
        interface=Interfaces.ASGI,
        workers=args.workers,
        loop=Loops.uvloop,
        websockets=False,
        log_level=LogLevels(args.log_level.lower()),
        # Arbiter's own JSON access log (server.security.access), set up in every worker.
        log_dictconfig=logging_config({"version": 1, "disable_existing_loggers": False}),
    ).serve()


# --------------------------------------------------------------------- lsp


def cmd_lsp(args: argparse.Namespace) -> int:
    """Run the `.rules` language server on stdin/stdout (for editors)."""
    from arbiter.server.studio.lsp import main as lsp_main

    return lsp_main()


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
    p.add_argument(
        "--server",
        choices=["uvicorn", "granian"],
        default="uvicorn",
        help="the HTTP server (see benchmarks/RESULTS.md for how they compare)",
    )
    p.add_argument("--dev", action="store_true", help="generate and print an admin key")
    p.add_argument("--log-level", default="info")
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("lsp", help="language server for .rules files, on stdio (for editors)")
    p.set_defaults(func=cmd_lsp)

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
    p.add_argument(
        "--events",
        default=None,
        help="with --profile: JSON list of {type, ts?, properties?} (as POST /v1/events)",
    )
    p.add_argument("--limit", type=int, default=1)
    p.add_argument("--explain", action="store_true")
    p.set_defaults(func=cmd_decide)

    add_replay_parser(sub)
    add_evaluate_parser(sub)

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

    p = sub.add_parser("consume", help="read the intake streams (Redis Streams) into Redis")
    p.add_argument("--rules", default=DEFAULT_RULES, help="check events against these rules")
    p.add_argument("--shards", type=int, default=1, help="intake streams arb:in:{in0}..")
    p.add_argument("--group", default="arbiter", help="consumer group")
    p.add_argument("--name", default=None, help="consumer name (default: host-pid)")
    p.add_argument("--batch", type=int, default=500, help="messages per read")
    p.add_argument(
        "--claim-idle-ms",
        type=int,
        default=30_000,
        help="claim another consumer's messages unacknowledged this long",
    )
    p.set_defaults(func=cmd_consume)

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

    logs_cli.add_parser(sub)
    keys.add_parser(sub)
    p = sub.add_parser("migrate", help="convert stored event windows to this version's layout")
    p.add_argument("--dry-run", action="store_true", help="count what would be converted")
    p.set_defaults(func=cmd_migrate)

    from arbiter.server.cli.report import add_parser as add_report

    add_report(sub, DEFAULT_RULES)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `arbiter` command."""
    args = build_parser().parse_args(argv)
    try:
        code: int = args.func(args)
    except dsl.RulesError as exc:
        print(exc.format(), file=sys.stderr)
        return 1
    except ArbiterError as exc:
        # Every error raised on purpose: its stable code and message, never a traceback.
        print(f"arbiter: error[{exc.code}]: {exc}", file=sys.stderr)
        return 1
    except RedisError as exc:
        print(f"arbiter: error[redis-unavailable]: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    except (json.JSONDecodeError, ValueError) as exc:
        print(f"arbiter: {exc}", file=sys.stderr)
        return 2
    return code


if __name__ == "__main__":
    sys.exit(main())

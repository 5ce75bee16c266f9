"""The `arbiter` command: the parser of every verb and the dispatch.

Each group of verbs lives in its own module: `rules` (check, test, fmt),
`replay` (decide, replay), `evaluate`, `logs`, `report`, `data` (ingest,
consume, migrate), `serve` (serve, learn, lsp), `keys`. Every error Arbiter
raises on purpose is caught here once and printed with its code.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from redis.exceptions import RedisError

from arbiter import dsl
from arbiter.dsl.errors import ArbiterError
from arbiter.server.cli import keys
from arbiter.server.cli import logs as logs_cli
from arbiter.server.cli.data import cmd_consume, cmd_ingest, cmd_migrate
from arbiter.server.cli.evaluate import add_evaluate_parser
from arbiter.server.cli.replay import add_replay_parser, cmd_decide
from arbiter.server.cli.rules import cmd_check, cmd_fmt, cmd_test
from arbiter.server.cli.serve import cmd_learn, cmd_lsp, cmd_serve

DEFAULT_RULES = "rulesets"


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
    p = sub.add_parser(
        "migrate", help="convert stored event windows and contact caps to this version's layout"
    )
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

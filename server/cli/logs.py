"""`arbiter logs export`: the decision stream, by time range, to rotating JSON-lines files."""

from __future__ import annotations

import argparse
import sys
import time

from arbiter.dsl.errors import ArbiterError
from arbiter.server.cli.common import redis_url
from arbiter.server.times import parse_instant

__all__ = ["cmd_logs_export", "parse_time"]


class TimeArgumentError(ArbiterError):
    """A --since/--until value that is not a time."""

    code = "bad-time"


def parse_time(text: str, now: float | None = None) -> float:
    """Seconds since the epoch from a --since/--until value (`server.times.parse_instant`;
    a duration such as ``-24h`` counts back from now)."""
    try:
        return parse_instant(text, time.time() if now is None else now)
    except ValueError as exc:
        raise TimeArgumentError(str(exc)) from None


def cmd_logs_export(args: argparse.Namespace) -> int:
    """Copy the decision stream's records in [--since, --until) to files in --out."""
    from tqdm import tqdm

    from arbiter.engine.log.export import export_stream, stream_count
    from arbiter.engine.log.files import RotatingFiles
    from arbiter.engine.store import keys
    from arbiter.engine.store.client import connect_sync

    since = None if args.since is None else int(parse_time(args.since) * 1000)
    until = None if args.until is None else int(parse_time(args.until) * 1000)
    if since is not None and until is not None and until <= since:
        raise TimeArgumentError("--until must be after --since")
    files = RotatingFiles(
        args.out,
        prefix=args.prefix,
        max_bytes=int(args.max_mb * 1024 * 1024),
        max_seconds=float("inf") if args.max_seconds is None else args.max_seconds,
        gzip=args.gzip,
    )
    url, embedded = (args.source, None) if args.source else redis_url()
    client = connect_sync(url)
    try:
        total = stream_count(client, keys.DECISION_STREAM)
        with tqdm(
            total=total, unit="rec", desc="export", disable=args.quiet or None, file=sys.stderr
        ) as bar:
            written = export_stream(
                client,
                keys.DECISION_STREAM,
                files,
                since_ms=since,
                until_ms=until,
                progress=bar.update,
            )
    finally:
        files.close()
        client.close()
        if embedded is not None:
            embedded.stop()
    names = ", ".join(p.name for p in files.finished) or "no file"
    print(f"exported {written} records to {args.out}: {names}")
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """The `logs` verb and its `export` sub-verb."""
    p = sub.add_parser("logs", help="decision log files: export from the Redis stream")
    verbs = p.add_subparsers(dest="logs_command", required=True)
    e = verbs.add_parser("export", help="copy the decision stream, by time range, to files")
    e.add_argument(
        "source", nargs="?", default=None, help="a Redis URL (default: the server's Redis)"
    )
    e.add_argument("--out", required=True, help="directory to write the files into")
    e.add_argument("--since", default=None, help="from this time (epoch s, ISO, or -24h)")
    e.add_argument("--until", default=None, help="up to this time, excluded")
    e.add_argument("--gzip", action="store_true", help="compress each finished file")
    e.add_argument("--max-mb", type=float, default=256, help="start a new file after this size")
    e.add_argument("--max-seconds", type=float, default=None, help="... or after this many seconds")
    e.add_argument("--prefix", default="decisions", help="file name prefix")
    e.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    e.set_defaults(func=cmd_logs_export)

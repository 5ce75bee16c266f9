"""The `arbiter` commands that move customer data: ingest (a file), consume (the
streaming intake), migrate (windows stored by an older Arbiter)."""

from __future__ import annotations

import argparse
import asyncio

from arbiter.server.cli.common import redis_url

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
    """Convert event windows and contact histories stored by an older Arbiter to the current
    layouts."""
    from arbiter.engine.store.client import connect
    from arbiter.engine.store.history_migration import migrate_history
    from arbiter.engine.store.last_seen_migration import migrate_last_seen
    from arbiter.engine.store.window_migration import migrate_windows

    url, embedded = redis_url()

    async def run() -> str:
        client = connect(url, socket_timeout=30.0)
        try:
            report = await migrate_windows(client, dry_run=args.dry_run)
            # After the windows: layout 1 kept last-seen times in the same hash as layout 2.
            seen = await migrate_last_seen(client, dry_run=args.dry_run)
            history = await migrate_history(client, dry_run=args.dry_run)
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
            f"({report.old_keys} old keys, {report.series} series){linked}; "
            f"the last-seen times of {seen.customers} customers ({seen.times} times); "
            f"the contact caps and rejections of {history.customers} customers "
            f"({history.old_keys} old keys, {history.records} records)"
        )

    try:
        print(asyncio.run(run()))
    finally:
        if embedded is not None:
            embedded.stop()
    return 0

"""The `arbiter` commands that run a long-lived process: serve (HTTP), learn (the
bandit learners beside the servers), lsp (the language server for editors)."""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import shutil
import signal
import sys
from pathlib import Path

from arbiter import dsl
from arbiter.server.cli.common import redis_url, rule_paths
from arbiter.server.cli.signals import Stopped, die_of, stop_signals_raise

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
    from arbiter.server.telemetry import multiprocess

    os.environ["ARBITER_RULES"] = args.rules
    # A serving worker's garbage collector tuned (server.gc_pauses).
    os.environ.setdefault("ARBITER_GC_TUNING", "true")
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
    # Several workers: /metrics sums them all (server.telemetry.multiprocess).
    metrics_dir = multiprocess.prepare(args.workers)
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
        if metrics_dir is not None:
            os.environ.pop(multiprocess.ENV, None)  # a caller in this process is not a worker
            shutil.rmtree(metrics_dir, ignore_errors=True)
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

"""`arbiter consume`: read the intake streams into the windows until stopped.

Runs one consumer of the consumer group (`--group`, default `arbiter`) over
all `--shards` intake streams; start as many as the load needs, on as many
machines. Events are checked against the event declarations of `--rules`,
written, then acknowledged; invalid messages go to `arb:in:dead` with the
reason. SIGTERM or Ctrl-C finishes the batch in hand and exits; SIGKILL loses
nothing either: the batch is delivered again (to this consumer if it restarts
under the same `--name`, else to another once idle for `--claim-idle-ms`) and
counted once. On a terminal a progress line is redrawn twice a second.
"""

from __future__ import annotations

import asyncio
import signal
import sys
from collections.abc import Callable
from typing import IO, Any

from arbiter.dsl.nodes import TriggerDecl
from arbiter.engine.intake.consumer import IntakeConsumer
from arbiter.engine.intake.redis_streams import RedisStreamSource
from arbiter.engine.learning.attribution import tracked_types
from arbiter.engine.store.profiles import grouped_properties
from arbiter.server.background.intake import GROUP, consumer_name
from arbiter.server.cli.common import compile_rules, rule_paths, trigger_shards
from arbiter.server.cli.ingest import event_schema


def consume_main(
    *,
    redis_url: Callable[[], tuple[str, Any]],
    rules: str,
    shards: int,
    group: str = GROUP,
    name: str | None = None,
    batch: int = 500,
    claim_idle_ms: int = 30_000,
    progress: bool | None = None,
    err: IO[str] | None = None,
) -> int:
    """Run `arbiter consume`; the exit code (0 stopped by a signal, 2 usage)."""
    err = err or sys.stderr
    if shards < 1 or batch < 1 or claim_idle_ms < 1:
        print("arbiter consume: --shards, --batch and --claim-idle-ms must be positive", file=err)
        return 2
    schema = event_schema(rules)
    plans = [compile_rules(p) for p in rule_paths([rules])]
    actions = sorted({a.name for plan in plans for a in plan.actions})
    # What these rules reward or measure goes to the outcome stream; their triggers
    # are scheduled, as for events sent over HTTP.
    outcomes = {t for plan in plans for t in tracked_types(plan.checked)}
    triggers = [(plan.name, d) for plan in plans for d in plan.checked.triggers.values()]
    grouped = grouped_properties(plan.needs for plan in plans)
    url, embedded = redis_url()
    show = err.isatty() if progress is None else progress
    try:
        asyncio.run(
            _run(url, rules, shards, group, name or consumer_name(), batch, claim_idle_ms,
                 schema, actions, show, err, outcomes, triggers, grouped)
        )  # fmt: skip
    finally:
        if embedded is not None:
            embedded.stop()
    return 0


async def _run(
    url: str,
    rules: str,
    shards: int,
    group: str,
    name: str,
    batch: int,
    claim_idle_ms: int,
    schema: Any,
    actions: list[str],
    show: bool,
    err: IO[str],
    outcomes: set[str],
    triggers: list[tuple[str, TriggerDecl]],
    grouped: frozenset[str],
) -> None:
    from arbiter.engine.store.client import connect
    from arbiter.engine.store.profiles import ProfileStore

    client = connect(url, socket_timeout=30)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    source = RedisStreamSource(
        client, shards=shards, group=group, consumer=name, claim_idle_ms=claim_idle_ms
    )
    consumer = IntakeConsumer(
        source,
        ProfileStore(client),
        schema=lambda: schema,
        actions=lambda: actions,
        batch=batch,
        outcomes=lambda: outcomes,
        triggers=lambda: triggers,
        grouped=lambda: grouped,
        trigger_shards=trigger_shards(),
    )
    print(
        f"arbiter consume: {name} in group '{group}', {shards} shard(s), rules {rules}; "
        "Ctrl-C stops",
        file=err,
        flush=True,
    )
    task = loop.create_task(consumer.run(stop))
    try:
        while not task.done():
            await asyncio.wait({task}, timeout=0.5)
            if show:
                lags = await source.lag() if not task.done() else []
                behind = max((x.seconds for x in lags), default=0.0)
                print(
                    f"\r{consumer.stats.line()}, lag {behind:.1f}s ", end="", file=err, flush=True
                )
        await task
    finally:
        await client.aclose()
    if show:
        print(file=err)
    print(f"arbiter consume: {name} stopped after {consumer.stats.line()}", file=err, flush=True)

"""The event intake inside the server: an optional consumer task and the intake's metrics.

With `ARBITER_INTAKE_SHARDS=N`, `/metrics` reports each shard's lag, pending
and length, whoever consumes it; with `ARBITER_INTAKE_CONSUME=true` too, each
server process also runs a consumer (named after the host and process) and
counts what it did. `arbiter consume` is the same consumer as a process of its own.
"""

from __future__ import annotations

import asyncio
import os
import socket
from typing import Any

from redis.exceptions import RedisError

from arbiter.dsl.nodes import TriggerDecl
from arbiter.dsl.types import Type
from arbiter.engine.intake.consumer import IntakeConsumer
from arbiter.engine.intake.redis_streams import RedisStreamSource
from arbiter.engine.learning.attribution import tracked_types
from arbiter.engine.store.profiles import grouped_properties
from arbiter.server.state import AppState

GROUP = "arbiter"


def consumer_name() -> str:
    """Unique per process: a restarted process is a new consumer; the old one's messages
    are claimed once idle."""
    return f"{socket.gethostname()}-{os.getpid()}"


def event_schema(st: AppState) -> dict[str, dict[str, Type]]:
    """The event declarations of the live rulesets (first declaration of a name wins)."""
    schema: dict[str, dict[str, Type]] = {}
    for live in st.rulesets.live.values():
        for name, fields in live.plan.checked.events.items():
            schema.setdefault(name, dict(fields))
    return schema


def live_actions(st: AppState) -> list[str]:
    """Every action of the live rulesets: whose caps and rejections a merge carries over."""
    return sorted({a.name for live in st.rulesets.live.values() for a in live.plan.actions})


def start_intake(st: AppState) -> Any:
    """Start the in-server consumer when configured; its task (or None)."""
    if not st.settings.intake_consume:
        return None
    source = RedisStreamSource(
        st.admin_redis, shards=st.settings.intake_shards, group=GROUP, consumer=consumer_name()
    )
    consumer = IntakeConsumer(
        source,
        st.admin_store,
        schema=lambda: event_schema(st),
        actions=lambda: live_actions(st),
        on_count=lambda outcome, n: st.metrics.intake.labels(outcome).inc(n),
        outcomes=lambda: live_outcome_types(st),
        triggers=lambda: live_triggers(st),
        grouped=lambda: live_grouped(st),
        trigger_shards=st.settings.trigger_shards,
    )
    st.intake = consumer
    return asyncio.get_running_loop().create_task(consumer.run(st.stop), name="intake")


async def refresh_metrics(st: AppState) -> None:
    """Bring the shards' lag gauges up to date (called on each `/metrics` scrape)."""
    if st.settings.intake_shards < 1:
        return
    source = RedisStreamSource(st.admin_redis, shards=st.settings.intake_shards, group=GROUP)
    try:
        lags = await source.lag()
    except (RedisError, OSError):
        return  # /metrics still answers; the gauges keep their last values
    for lag in lags:
        st.metrics.intake_lag.labels(lag.stream).set(lag.seconds)
        st.metrics.intake_pending.labels(lag.stream).set(lag.pending)
        st.metrics.intake_length.labels(lag.stream).set(lag.length)


def live_outcome_types(st: AppState) -> set[str]:
    """Event types some live ruleset rewards a bandit on or measures a split by."""
    out: set[str] = set()
    for live in st.rulesets.live.values():
        out |= tracked_types(live.plan.checked)
    return out


def live_grouped(st: AppState) -> frozenset[str]:
    """`"<event>.<prop>"` of the string properties a live ruleset counts per value."""
    return grouped_properties(live.plan.needs for live in st.rulesets.live.values())


def live_triggers(st: AppState) -> list[tuple[str, TriggerDecl]]:
    """Every live `trigger` declaration, with the name of its ruleset."""
    return [
        (name, decl)
        for name, live in st.rulesets.live.items()
        for decl in live.plan.checked.triggers.values()
    ]

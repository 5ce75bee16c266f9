"""An experiment report's inputs read from Redis: decisions, goal events, rewards.

`load_report` reads the decision stream, the outcome stream and the reward
stream and hands them to `engine.log.experiments.build_report`.

**A time range.** With ``since`` and ``until`` (epoch seconds) only the
decisions made in that range are counted, and only that part of each stream
is read (XRANGE by stream ids, which are arrival times in milliseconds): the
decision stream from ``since`` to ``until`` plus :data:`LOG_SLACK_S` (the log
writes behind the decision), the goal events from ``since`` to ``until +
within`` plus the slack (to the end without ``within``), the rewards from
``since`` on. A customer's first exposure is then their first decision in
the range. ``progress`` is told, per stream, which fraction of its time range
has been read.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import AsyncIterator, Callable, Iterable
from typing import Any

from arbiter.dsl import nodes as n
from arbiter.dsl.checked import CheckedRuleset
from arbiter.engine.log.experiments import (
    ExperimentReport,
    Outcome,
    build_report,
    split_of,
)
from arbiter.engine.records import RECORD_DECODER, DecisionRecord
from arbiter.engine.store import keys
from arbiter.engine.store.compression import plain_record

__all__ = [
    "LOG_SLACK_S",
    "Progress",
    "load_report",
    "read_decisions",
    "read_goal_events",
    "read_rewards",
]

#: How long after its time a decision may reach the decision stream (the log writes behind).
LOG_SLACK_S = 60.0
#: Told (stream label, fraction of its time range read) as a long read goes on.
Progress = Callable[[str, float], None]


def _id_ms(entry_id: bytes | str) -> int:
    raw = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
    return int(raw.split("-")[0])


async def _xrange(
    redis: Any,
    stream: str,
    since: float | None = None,
    until: float | None = None,
    *,
    label: str = "",
    progress: Progress | None = None,
    chunk: int = 1000,
) -> AsyncIterator[Any]:
    """The entries of ``stream`` that arrived in [since, until] (epoch seconds), in chunks.

    Stream ids start with their arrival time in ms, and XRANGE takes a bare
    time as the first (for the start) or the last (for the end) id of that ms.
    """
    start = "-" if since is None else str(int(since * 1000))
    end = "+" if until is None else str(int(until * 1000))
    low = None if since is None else int(since * 1000)
    high = int(time.time() * 1000) if until is None else int(until * 1000)
    while True:
        batch = await redis.xrange(stream, min=start, max=end, count=chunk)
        if not batch:
            if progress is not None:
                progress(label, 1.0)
            return
        for entry in batch:
            yield entry
        last = batch[-1][0]
        if progress is not None:
            low = _id_ms(batch[0][0]) if low is None else low
            progress(label, min(1.0, max(0.0, (_id_ms(last) - low) / max(1, high - low))))
        start = "(" + (last.decode() if isinstance(last, bytes) else str(last))


def _later(ts: float | None, by: float | None) -> float | None:
    return None if ts is None or by is None else ts + by


async def read_decisions(
    redis: Any,
    ruleset: str,
    since: float | None = None,
    until: float | None = None,
    progress: Progress | None = None,
) -> list[DecisionRecord]:
    """The ruleset's decisions made in [since, until] from the decision stream, oldest first."""
    out: list[DecisionRecord] = []
    needle = ruleset.encode()
    low = -math.inf if since is None else since
    high = math.inf if until is None else until
    entries = _xrange(
        redis,
        keys.DECISION_STREAM,
        since,
        _later(until, LOG_SLACK_S),
        label="decisions",
        progress=progress,
    )
    async for _, fields in entries:
        blob = await plain_record(redis, fields.get(b"r"))
        if blob is None or needle not in blob:
            continue  # cheap pre-filter before decoding
        record = RECORD_DECODER.decode(blob)
        if record.ruleset.name == ruleset and low <= record.ts <= high:
            out.append(record)
    return out


async def read_goal_events(
    redis: Any,
    goal: n.Goal,
    since: float | None = None,
    until: float | None = None,
    progress: Progress | None = None,
) -> list[Outcome]:
    """The goal's events from the outcome stream, with their value (1 without ``value``).

    With a range: those that arrived from ``since`` to ``until + within``
    (plus the log's slack), the latest a decision's window may end.
    """
    out: list[Outcome] = []
    kind = goal.event.encode()
    end = _later(_later(until, goal.within), LOG_SLACK_S)
    entries = _xrange(redis, keys.OUTCOME_STREAM, since, end, label="events", progress=progress)
    async for _, fields in entries:
        if fields.get(b"type") != kind:
            continue
        try:
            props = json.loads(fields.get(b"properties", b"{}"))
            value = 1.0 if goal.value is None else float(props.get(goal.value, 0.0))
            out.append(Outcome(fields[b"customer_id"].decode(), float(fields[b"ts"]), value))
        except (KeyError, ValueError, TypeError):
            continue
    return out


async def read_rewards(
    redis: Any,
    decisions: Iterable[DecisionRecord],
    since: float | None = None,
    progress: Progress | None = None,
) -> list[Outcome]:
    """Rewards of the given decisions from the reward stream (the first per decision and action).

    With ``since``, only the rewards that arrived from then on (a reward
    follows its decision).
    """
    by_id = {r.decision_id: r for r in decisions}
    seen: set[tuple[bytes, bytes]] = set()
    out: list[Outcome] = []
    entries = _xrange(redis, keys.REWARD_STREAM, since, label="rewards", progress=progress)
    async for _, fields in entries:
        key = (fields.get(b"decision_id", b""), fields.get(b"action", b""))
        record = by_id.get(key[0].decode())
        if record is None or key in seen:
            continue
        seen.add(key)
        try:
            value = float(fields[b"reward"])
        except (KeyError, ValueError):
            continue
        out.append(Outcome(record.request.customer_id, record.ts, value))
    return out


async def load_report(
    redis: Any,
    checked: CheckedRuleset,
    name: str,
    *,
    goal: n.Goal | None = None,
    since: float | None = None,
    until: float | None = None,
    progress: Progress | None = None,
    **options: Any,
) -> ExperimentReport:
    """Read the logs from Redis and build the report of split ``name`` (see `build_report`).

    ``since`` and ``until`` (epoch seconds) count only the decisions made in
    that range, reading only that part of the streams (see the module).
    """
    split = split_of(checked, name)
    goal = goal or split.goal
    decisions = await read_decisions(redis, checked.name, since, until, progress)
    if goal is not None:
        outcomes = await read_goal_events(redis, goal, since, until, progress)
    else:
        outcomes = await read_rewards(redis, decisions, since, progress)
    report = build_report(checked, name, decisions, outcomes, goal=goal, **options)
    report.since, report.until = since, until
    if goal is not None and not outcomes:
        report.notes.append(
            f"no '{goal.event}' events recorded yet: events are recorded for goals and "
            "rewards of live rulesets from the time they went live"
        )
    return report


# ------------------------------------------------------------------ rendering

"""Replay logged decisions: bit-identical against the same plan, a diff against a new one.

Replay needs no Redis, no model files and no bandit state: the record holds
the inputs the plan read and every model score and bandit pmf, served back by
`ReplayOracle`. The exploration draw is recomputed from the seed.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from arbiter.engine.decision.decide import decide
from arbiter.engine.decision.oracle import ReplayOracle, Scorer, WhatIfOracle
from arbiter.engine.log.compare import first_difference
from arbiter.engine.plan import Plan
from arbiter.engine.records import ENCODER, RECORD_DECODER, ActionOut, DecisionRecord
from arbiter.engine.store.compression import plain_records_sync


@dataclass(frozen=True)
class ReplayResult:
    """One replayed record: what was answered then and what the plan answers now."""

    decision_id: str
    same_plan: bool
    original: list[ActionOut]
    replayed: list[ActionOut]
    errors: list[str] = field(default_factory=list)
    #: The first field where the recomputed record differs from the logged one (None: none).
    difference: str | None = None
    #: The logged record and the recomputed one (for reports; not compared).
    logged: DecisionRecord | None = None
    recomputed: DecisionRecord | None = None

    @property
    def identical(self) -> bool:
        """Bit for bit: same actions, scores, payloads and probabilities."""
        return ENCODER.encode(self.original) == ENCODER.encode(self.replayed)

    def describe(self) -> str:
        """One line for humans: `<id>: identical` or what changed."""
        if self.identical:
            return f"{self.decision_id}: identical"
        before = ", ".join(f"{a.action}({a.score:g})" for a in self.original) or "nothing"
        after = ", ".join(f"{a.action}({a.score:g})" for a in self.replayed) or "nothing"
        return f"{self.decision_id}: CHANGED {before} -> {after}"


def replay(
    plan: Plan, record: DecisionRecord, models: Mapping[str, Scorer] | None = None
) -> ReplayResult:
    """Recompute one logged decision with `plan`.

    Under the plan that made the decision, model scores are served from the
    record. Under another plan, ``models`` (the plan's loaded models), when
    given, score the rows the new plan asks for (`WhatIfOracle`); without
    them the logged scores are served in call order, which is right only
    where the new plan asks for the same rows.
    """
    same = plan.hash == record.ruleset.hash
    oracle = ReplayOracle(record) if same or models is None else WhatIfOracle(record, models)
    decision, new_record = decide(
        plan,
        record.request,
        record.inputs,
        decision_id=record.decision_id,
        now=record.ts,
        oracle=oracle,
    )
    return ReplayResult(
        record.decision_id,
        same,
        record.actions,
        decision.actions,
        new_record.errors,
        first_difference(record, new_record),
        record,
        new_record,
    )


def read_jsonl(path: str | Path) -> Iterator[DecisionRecord]:
    """Records from a JSONL decision log file (one record per line)."""
    with Path(path).open("rb") as fh:
        for line in fh:
            if line.strip():
                yield RECORD_DECODER.decode(line)


def read_stream(redis: Any, stream: str, count: int | None = None) -> Iterator[DecisionRecord]:
    """Records from the Redis decision stream, oldest first (a sync client)."""
    start = "-"
    seen = 0
    while True:
        batch = redis.xrange(stream, min=start, max="+", count=500)
        if not batch:
            return
        for blob in plain_records_sync(redis, [fields[b"r"] for _entry_id, fields in batch]):
            if blob is None:
                continue  # its dictionary is gone (logged): unreadable
            yield RECORD_DECODER.decode(blob)
            seen += 1
            if count is not None and seen >= count:
                return
        start = "(" + batch[-1][0].decode()


@dataclass
class ReplaySummary:
    """Totals of a replay run."""

    total: int = 0
    identical: int = 0
    changed: list[ReplayResult] = field(default_factory=list)
    mix_before: dict[str, int] = field(default_factory=dict)
    mix_after: dict[str, int] = field(default_factory=dict)


def replay_all(plan: Plan, records: Iterable[DecisionRecord]) -> ReplaySummary:
    """Replay many records; count identical ones and the action mix before and after."""
    summary = ReplaySummary()
    for record in records:
        result = replay(plan, record)
        summary.total += 1
        if result.identical:
            summary.identical += 1
        else:
            summary.changed.append(result)
        for bucket, actions in (
            (summary.mix_before, result.original),
            (summary.mix_after, result.replayed),
        ):
            name = actions[0].action if actions else "(nothing)"
            bucket[name] = bucket.get(name, 0) + 1
    return summary

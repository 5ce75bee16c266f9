"""What a replay found: exact-reproduction failures and, under a new ruleset, a what-if.

`ReplayReport` accumulates `ReplayResult`s one at a time and merges with
another report (each worker process of a parallel replay fills its own, the
parent merges them in log order, so examples are the same for any ``--jobs``).
It keeps counts, not results, so memory stays flat over millions of records:

- under the same ruleset version (same content hash) every record must
  reproduce exactly; each that does not is a *mismatch*, kept with its id and
  the first differing field;
- under a new ruleset it counts how many decisions change (the list of
  returned actions differs) or are only rescored, a matrix of old → new first
  action, the change per segment, per channel and per action, the decisions
  that newly get no action, the value before and after (the sum of the
  returned actions' scores, which the arbitration formula computed), and for
  each kind of change a few examples with both traces.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from arbiter.engine.log.replay import ReplayResult
from arbiter.engine.plan import Plan
from arbiter.engine.records import DecisionRecord

__all__ = ["NOTHING", "ExactSum", "Example", "ReplayReport", "transition"]

#: The name of "no action returned" in matrices and allow-lists.
NOTHING = "(nothing)"
EXAMPLES_PER_KIND = 3
MISMATCHES_KEPT = 1000


def _top(actions: Iterable[Any]) -> str:
    for a in actions:
        return str(a.action)
    return NOTHING


def transition(result: ReplayResult) -> str:
    """``old->new`` of the first returned action, the unit of matrices and allow-lists."""
    return f"{_top(result.original)}->{_top(result.replayed)}"


def rule_labels(plan: Plan | None, trace: Iterable[int]) -> list[str]:
    """The rules of a trace as ``file:line `text```, or ``rule #i`` without their plan."""
    out = []
    for i in trace:
        if plan is not None and 0 <= i < len(plan.rules):
            info = plan.rules[i]
            out.append(f"{info.span}: {info.text}")
        else:
            out.append(f"rule #{i}")
    return out


@dataclass
class Example:
    """One changed decision, both sides, for a person to read."""

    decision_id: str
    customer_id: str
    channel: str
    before: list[str]
    after: list[str]
    trace_before: list[str]
    trace_after: list[str]
    segments: list[str]


class ExactSum:
    """A sum of floats kept exactly (Shewchuk's non-overlapping partials, as `math.fsum`).

    A plain float sum depends on the order of additions, so summing parts of
    the log in workers and adding the part sums would give bits that depend
    on how the log was split; the exact sum of the same numbers does not.
    """

    __slots__ = ("nonfinite", "partials")

    def __init__(self) -> None:
        self.partials: list[float] = []
        self.nonfinite = 0.0  # inf and nan, which partials cannot hold

    def add(self, x: float) -> None:
        """Add one number."""
        if not math.isfinite(x):
            self.nonfinite += x
            return
        partials = self.partials
        i = 0
        for y in partials:
            if abs(x) < abs(y):
                x, y = y, x
            hi = x + y
            lo = y - (hi - x)
            if lo:
                partials[i] = lo
                i += 1
            x = hi
        partials[i:] = [x]

    def merge(self, other: ExactSum) -> None:
        """Add every number ``other`` holds."""
        for x in other.partials:
            self.add(x)
        self.nonfinite += other.nonfinite

    @property
    def value(self) -> float:
        """The sum, correctly rounded to a float."""
        return math.fsum(self.partials) + self.nonfinite

    def __getstate__(self) -> tuple[list[float], float]:
        return self.partials, self.nonfinite

    def __setstate__(self, state: tuple[list[float], float]) -> None:
        self.partials, self.nonfinite = state


@dataclass
class Slice:
    """Decisions and changed decisions in one segment or channel."""

    decisions: int = 0
    changed: int = 0


@dataclass
class ActionChange:
    """One action's count as first action before and after, and the flows in and out."""

    before: int = 0
    after: int = 0
    gained: int = 0
    lost: int = 0


@dataclass
class ReplayReport:
    """Totals of a replay run (see the module docstring); merge with `merge`."""

    total: int = 0
    skipped: int = 0  # records of a ruleset that is not loaded
    same_version: int = 0
    reproduced: int = 0
    mismatches: list[tuple[str, str]] = field(default_factory=list)  # (decision id, difference)
    mismatch_count: int = 0
    new_version: int = 0
    changed: int = 0
    rescored: int = 0  # same actions, different scores or probabilities
    newly_nothing: int = 0
    matrix: Counter[tuple[str, str]] = field(default_factory=Counter)
    segments: dict[str, Slice] = field(default_factory=dict)
    channels: dict[str, Slice] = field(default_factory=dict)
    actions: dict[str, ActionChange] = field(default_factory=dict)
    #: Exact running sums of the returned scores (see `ExactSum`): the same for any split of
    #: the log into parts, so the report does not depend on ``--jobs``.
    before_sum: ExactSum = field(default_factory=ExactSum)
    after_sum: ExactSum = field(default_factory=ExactSum)
    examples: dict[str, list[Example]] = field(default_factory=dict)
    kinds: Counter[str] = field(default_factory=Counter)  # transition -> changed decisions
    notes: list[str] = field(default_factory=list)  # what the reader must know (models missing)

    def add(self, result: ReplayResult, plan: Plan, baselines: Mapping[str, Plan]) -> None:
        """Count one replayed record; ``baselines`` maps a ruleset hash to its plan (traces)."""
        self.total += 1
        if result.same_plan:
            self.same_version += 1
            if result.difference is None:
                self.reproduced += 1
            else:
                self.mismatch_count += 1
                if len(self.mismatches) < MISMATCHES_KEPT:
                    self.mismatches.append((result.decision_id, result.difference))
            return
        self.new_version += 1
        logged, new = result.logged, result.recomputed
        assert logged is not None and new is not None
        before, after = _top(result.original), _top(result.replayed)
        self.matrix[(before, after)] += 1
        changed = [a.action for a in result.original] != [a.action for a in result.replayed]
        if changed:
            self.changed += 1
        elif not result.identical:
            self.rescored += 1
        if changed and result.original and not result.replayed:
            self.newly_nothing += 1
        for a in result.original:
            self.before_sum.add(a.score)
        for a in result.replayed:
            self.after_sum.add(a.score)
        channel = str(logged.request.context.get("channel", "(none)"))
        slices = [(self.channels, channel)]
        slices += [(self.segments, s) for s in new.segments or ["(no segment)"]]
        for bucket, key in slices:
            part = bucket.setdefault(key, Slice())
            part.decisions += 1
            part.changed += changed
        for name in (before, after):
            self.actions.setdefault(name, ActionChange())
        self.actions[before].before += 1
        self.actions[after].after += 1
        if before != after:
            self.actions[before].lost += 1
            self.actions[after].gained += 1
        if changed:
            kind = f"{before}->{after}"
            self.kinds[kind] += 1
            kept = self.examples.setdefault(kind, [])
            if len(kept) < EXAMPLES_PER_KIND:
                kept.append(_example(logged, new, result, plan, baselines))

    def merge(self, other: ReplayReport) -> None:
        """Add ``other`` (a later part of the log) into this report."""
        for name in (
            "total", "skipped", "same_version", "reproduced", "mismatch_count", "new_version",
            "changed", "rescored", "newly_nothing",
        ):  # fmt: skip
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.before_sum.merge(other.before_sum)
        self.after_sum.merge(other.after_sum)
        room = MISMATCHES_KEPT - len(self.mismatches)
        self.mismatches.extend(other.mismatches[: max(room, 0)])
        self.matrix.update(other.matrix)
        self.kinds.update(other.kinds)
        for mine, theirs in ((self.segments, other.segments), (self.channels, other.channels)):
            for key, part in theirs.items():
                acc = mine.setdefault(key, Slice())
                acc.decisions += part.decisions
                acc.changed += part.changed
        for key, change in other.actions.items():
            acc_a = self.actions.setdefault(key, ActionChange())
            acc_a.before += change.before
            acc_a.after += change.after
            acc_a.gained += change.gained
            acc_a.lost += change.lost
        self.notes.extend(n for n in other.notes if n not in self.notes)
        for kind, examples in other.examples.items():
            kept = self.examples.setdefault(kind, [])
            kept.extend(examples[: EXAMPLES_PER_KIND - len(kept)])

    @property
    def value_before(self) -> float:
        """The sum of the logged decisions' returned scores (correctly rounded)."""
        return self.before_sum.value

    @property
    def value_after(self) -> float:
        """The sum of the replayed decisions' returned scores (correctly rounded)."""
        return self.after_sum.value

    def unexpected(self, allowed: Iterable[str]) -> dict[str, int]:
        """Kinds of change not matched by an ``old->new`` pattern of ``allowed`` (``*`` any)."""
        patterns = [p.replace(" ", "").split("->", 1) for p in allowed]
        out: dict[str, int] = {}
        for kind, count in self.kinds.items():
            old, new = kind.split("->", 1)
            if not any(len(p) == 2 and p[0] in ("*", old) and p[1] in ("*", new) for p in patterns):
                out[kind] = count
        return out


def _example(
    logged: DecisionRecord,
    new: DecisionRecord,
    result: ReplayResult,
    plan: Plan,
    baselines: Mapping[str, Plan],
) -> Example:
    return Example(
        decision_id=logged.decision_id,
        customer_id=logged.request.customer_id,
        channel=str(logged.request.context.get("channel", "")),
        before=[f"{a.action}({a.score:g})" for a in result.original],
        after=[f"{a.action}({a.score:g})" for a in result.replayed],
        trace_before=rule_labels(baselines.get(logged.ruleset.hash), logged.trace),
        trace_after=rule_labels(plan, new.trace),
        segments=list(new.segments),
    )

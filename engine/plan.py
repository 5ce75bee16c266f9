"""The compiled, immutable form of a ruleset that decisions run against."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from arbiter.dsl import CheckedRuleset
from arbiter.dsl import nodes as n
from arbiter.engine.probes import Probes

#: The generated evaluator: (P, C, A, rt) -> (offers, suppressed action indices, segment values).
#: P profile dict, C context dict, A aggregates tuple (same order as `Needs.aggregates`).
Evaluator = Callable[[Mapping[str, Any], Mapping[str, Any], tuple[Any, ...], Any], Any]
#: The generated arbitration formula for one candidate.
Formula = Callable[..., Any]
#: A customer-level model's input row: (P, C, A, rt) -> row, or None when an input is missing.
ModelRow = Callable[[Mapping[str, Any], Mapping[str, Any], tuple[Any, ...], Any], Any]
#: A per-offer model's input row: (P, C, A, rt, value, attributes) -> row or None.
ActionModelRow = Callable[..., Any]
#: A bandit's shared (customer) features: (P, C, A, rt) -> feature dict.
BanditFeatures = Callable[[Mapping[str, Any], Mapping[str, Any], tuple[Any, ...], Any], Any]


@dataclass(frozen=True, slots=True)
class Offer:
    """One `when … offer …` that fired: which action, with what weight, from which rule."""

    action: int
    weight: float
    priority: int
    rule: int


@dataclass(frozen=True, slots=True)
class AggregateSpec:
    """An event-window read the store must serve: `fn(event[.prop] within window)`.

    `fn == "last"` is `last_seen(event)` (window 0: all time). A negative
    `window_seconds` is a number of calendar months (`engine.decision.window_span`).
    `max_count` and `distinct` read the string property `prop` grouped per value:
    the largest count of one value, and the number of values.
    """

    fn: str
    event: str
    prop: str | None
    window_seconds: int

    @property
    def key(self) -> str:
        prop = f".{self.prop}" if self.prop else ""
        w = self.window_seconds
        window = f"{-w}mo" if w < 0 else f"{w}s"
        return f"{self.fn}({self.event}{prop} within {window})"


@dataclass(frozen=True, slots=True)
class ActionSpec:
    """An action as arbitration sees it: everything prepared at compile time."""

    index: int
    name: str
    value: float
    channels: frozenset[str]
    cap: n.Cap | None
    consent: str | None
    valid_from: float | None
    valid_until: float | None
    tags: tuple[str, ...]
    fatigue: n.Fatigue | None
    payload: Mapping[str, Any]
    attributes: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class Needs:
    """What one decision reads from the store, so it can be fetched in one round trip."""

    profile_fields: tuple[str, ...]
    aggregates: tuple[AggregateSpec, ...]
    capped_actions: tuple[tuple[str, int], ...]  # (action, cap window seconds; -N: N months)
    fatigued_actions: tuple[tuple[str, int, int, int], ...]  # (action, rejections, window, period)
    reads_consent: bool


@dataclass(frozen=True, slots=True)
class RuleInfo:
    """What a rule id in a trace refers to."""

    id: int
    kind: str  # when, suppress, if, segment
    span: n.Span
    text: str


@dataclass(frozen=True)
class Plan:
    """A compiled ruleset. Immutable; swapped whole on reload."""

    name: str
    version: str  # short content hash, shown to users
    hash: str  # full content hash (sources + compiler version)
    checked: CheckedRuleset
    actions: tuple[ActionSpec, ...]
    action_index: Mapping[str, int]
    evaluate: Evaluator
    formula: Formula | None
    needs: Needs
    rules: tuple[RuleInfo, ...]
    segment_names: tuple[str, ...]
    model_names: tuple[str, ...]
    default: int | None
    top: int | None
    max_per_tag: int | None
    source: str  # the generated Python, for debugging and golden tests
    #: The name the generated code was compiled under (its frames show it).
    filename: str
    #: Per generated line (index = line - 1), the `.rules` span it was written for.
    line_spans: tuple[n.Span | None, ...]
    #: Input rows of customer-level models, by model index.
    model_inputs: Mapping[int, ModelRow]
    #: Input rows of per-offer models, by model index.
    action_model_inputs: Mapping[int, ActionModelRow]
    #: Shared features of each bandit, in declaration order.
    bandit_features: tuple[BanditFeatures, ...]
    #: Every action's features as a bandit arm (by action index); shared, never mutated.
    arm_features: tuple[dict[str, Any], ...]
    #: Every condition probed part by part, for explanations (`engine.probes`): built by
    #: the compiler's code generator the first time it is called, then the same object.
    probes: Callable[[], Probes]

    def action(self, name: str) -> ActionSpec:
        return self.actions[self.action_index[name]]

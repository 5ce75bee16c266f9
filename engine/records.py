"""The values that cross stage boundaries: request, inputs, decision, decision record.

All are msgspec Structs so that one reused encoder turns them into JSON with
no intermediate dicts. `DecisionRecord` is versioned (`v`): readers accept
older versions; writers always write the newest. Versions only add optional
fields, so one Struct reads them all:

- v1: no `v` in the JSON (the writer omitted the default).
- v2: `candidates`, `probabilities`, `segments` and `timings`; `v` written.
"""

from __future__ import annotations

from typing import Any

import msgspec

RECORD_VERSION = 2


class DecideRequest(msgspec.Struct, forbid_unknown_fields=True):
    """`POST /v1/decide` body."""

    customer_id: str
    context: dict[str, Any] = msgspec.field(default_factory=dict)
    ruleset: str | None = None
    limit: int = 1
    explain: bool = False


class Inputs(msgspec.Struct):
    """Everything a decision read from the store, so replay needs no Redis."""

    profile: dict[str, Any] = msgspec.field(default_factory=dict)
    aggregates: dict[str, Any] = msgspec.field(default_factory=dict)  # AggregateSpec.key -> value
    caps: dict[str, int] = msgspec.field(default_factory=dict)  # action -> contacts in cap window
    rejections: dict[str, int] = msgspec.field(default_factory=dict)  # action -> recent rejections
    degraded: bool = False
    # The customer the request's id is linked to (engine.store.identity), when it is one.
    resolved_id: str | None = None


class RulesetRef(msgspec.Struct):
    name: str
    version: str


class ActionOut(msgspec.Struct, omit_defaults=True):
    """One returned action. `probability` is present when a bandit chose it."""

    action: str
    score: float
    payload: dict[str, Any]
    probability: float | None = None


class Decision(msgspec.Struct, omit_defaults=True):
    """`POST /v1/decide` answer."""

    decision_id: str
    ruleset: RulesetRef
    actions: list[ActionOut]
    degraded: bool  # required, so it is always in the JSON
    explanation: dict[str, Any] | None = None


class BanditChoice(msgspec.Struct):
    """What a bandit saw and chose, enough to learn from later and to replay exactly."""

    bandit: str
    version: int
    arms: list[str]
    pmf: list[float]
    chosen: str
    probability: float
    shared: dict[str, Any]
    arm_features: list[dict[str, Any]]


class RecordedRuleset(msgspec.Struct):
    name: str
    version: str
    hash: str


class DecisionRecord(msgspec.Struct, omit_defaults=True):
    """One logged decision: the request, what was read, what was computed, what was answered."""

    decision_id: str
    ts: float
    ruleset: RecordedRuleset
    request: DecideRequest
    inputs: Inputs
    seed: int
    actions: list[ActionOut]
    scores: dict[str, list[float | None]] = msgspec.field(default_factory=dict)
    model_versions: dict[str, str] = msgspec.field(default_factory=dict)
    bandits: list[BanditChoice] = msgspec.field(default_factory=list)
    holdout: str | None = None
    variants: dict[str, str] = msgspec.field(default_factory=dict)
    trace: list[int] = msgspec.field(default_factory=list)
    errors: list[str] = msgspec.field(default_factory=list)
    # A record without `v` is v1 (v1 writers omitted it): the default must stay 1.
    # Writers pass `v=RECORD_VERSION`.
    v: int = 1
    # v2: every eligible candidate's formula score before bandits, ranking and top N.
    candidates: dict[str, float] = msgspec.field(default_factory=dict)
    # v2: per returned action, its probability of being served (the bandit's draw; 1.0
    # for an action the rules alone chose). Parallel to `actions`.
    probabilities: list[float] = msgspec.field(default_factory=list)
    # v2: the segments the customer was in, by name (part of the trace).
    segments: list[str] = msgspec.field(default_factory=list)
    # v2: where the time went, in milliseconds (`fetch`, `decide`); never compared by replay.
    timings: dict[str, float] = msgspec.field(default_factory=dict)


ENCODER = msgspec.json.Encoder()
RECORD_DECODER = msgspec.json.Decoder(DecisionRecord)
REQUEST_DECODER = msgspec.json.Decoder(DecideRequest)

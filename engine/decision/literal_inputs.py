"""Literal inputs: a profile, events and contacts given as values, turned into `Inputs`.

Scenarios and `arbiter decide --profile` decide without Redis; both hand
`decide` exactly what the store would read. Values are validated and converted
by `engine.validate` (the module HTTP uses), so an ISO time becomes epoch
seconds, a set a sorted list, and an enum value outside its list is refused
with the field's name. Aggregates are computed over the same hourly and daily
buckets the store uses (`window_events`): `count` and `sum` of no events are
0, `min`, `max`, `avg` and `last_seen` missing. `max_count` and `distinct` count
a string property per value with the store's cap on values per bucket
(`GROUP_CAP`, events past it counted in full as overflow), in the order the
events are given.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from arbiter.dsl import types as t
from arbiter.engine.decision.arbitrate import fatigued
from arbiter.engine.decision.policies import ContactKey, counters, counts_for
from arbiter.engine.decision.window_span import bucket_range, window_start
from arbiter.engine.plan import AggregateSpec, Plan
from arbiter.engine.records import Inputs
from arbiter.engine.validate import ValueProblem, normalize, normalize_all

#: Values a grouped series keeps per bucket (`engine.store.series.GROUP_CAP`; a test
#: keeps the two equal: this room may not import the store).
GROUP_CAP = 32


@dataclass(frozen=True, slots=True)
class LiteralEvent:
    """One event as the store keeps it: its type, time, numeric and string properties."""

    type: str
    ts: float
    props: Mapping[str, float] = field(default_factory=dict)
    labels: Mapping[str, str] = field(default_factory=dict)


def window_events(
    events: Sequence[LiteralEvent], spec: AggregateSpec, now: float
) -> list[LiteralEvent]:
    """The events a window covers, as the store's buckets do.

    Windows up to 7 days use hourly buckets, longer ones daily buckets; a window
    covers every bucket from the one containing `now - W` to the one containing
    `now`, so up to one bucket more than W is counted at the old edge, never less.
    """
    size, first, last = bucket_range(spec.window_seconds, now)
    return [e for e in events if e.type == spec.event and first <= int(e.ts // size) <= last]


def grouped(events: Sequence[LiteralEvent], spec: AggregateSpec, now: float) -> float:
    """`max_count` or `distinct` of a string property, as the store's grouped series count it.

    Each bucket keeps `GROUP_CAP` values in the order their events come; the
    events of further values count as overflow, added in full to either figure.
    """
    size = bucket_range(spec.window_seconds, now)[0]
    prop = spec.prop or ""
    per_key: dict[str, int] = {}
    kept: dict[int, set[str]] = {}
    overflow = 0
    for e in window_events(events, spec, now):
        value = e.labels.get(prop)
        if value is None:
            continue
        bucket = kept.setdefault(int(e.ts // size), set())
        if value not in bucket and len(bucket) >= GROUP_CAP:
            overflow += 1
            continue
        bucket.add(value)
        per_key[value] = per_key.get(value, 0) + 1
    if spec.fn == "distinct":
        return float(len(per_key) + overflow)
    return float(max(per_key.values(), default=0) + overflow)


def aggregate(events: Sequence[LiteralEvent], spec: AggregateSpec, now: float) -> float | None:
    """One aggregate of literal events: count and sum are 0 over no events,
    min, max and avg are missing (None)."""
    if spec.fn == "last":
        times = [e.ts for e in events if e.type == spec.event]
        return max(times) if times else None
    if spec.fn in ("max_count", "distinct"):
        return grouped(events, spec, now)
    covered = window_events(events, spec, now)
    if spec.fn == "count":
        return float(len(covered))
    prop = spec.prop or ""
    values = [e.props[prop] for e in covered if prop in e.props]
    if spec.fn == "sum":
        return float(sum(values))
    if not values:
        return None
    if spec.fn == "min":
        return min(values)
    if spec.fn == "max":
        return max(values)
    return sum(values) / len(values)  # avg: over the events that carry the property


def normalize_values(
    schema: Mapping[str, t.Type], values: Mapping[str, Any], prefix: str
) -> dict[str, Any]:
    """Validate and convert as HTTP does (`engine.validate`); a `null` value is left out."""
    return {k: v for k, v in normalize_all(schema, values, prefix).items() if v is not None}


def events_from_json(plan: Plan, raw: Any, now: float) -> list[LiteralEvent]:
    """`[{type, ts?, properties?}, …]` (the shape of `POST /v1/events`) as literal events."""
    if not isinstance(raw, list):
        raise ValueProblem("events", "expected a list of {type, ts?, properties?}")
    out = []
    for i, item in enumerate(raw):
        prefix = f"events.{i}"
        if not isinstance(item, Mapping) or not isinstance(item.get("type"), str):
            raise ValueProblem(prefix, "expected an object with a 'type'")
        ts_raw = item.get("ts")
        ts = now if ts_raw is None else normalize(f"{prefix}.ts", t.TIME, ts_raw)
        schema = plan.checked.events.get(item["type"], {})
        props = normalize_all(schema, item.get("properties") or {}, f"{prefix}.properties.")
        numeric = {
            k: float(v)
            for k, v in props.items()
            if isinstance(v, int | float) and not isinstance(v, bool)
        }
        labels = {k: v for k, v in props.items() if isinstance(v, str)}
        out.append(LiteralEvent(item["type"], float(ts), numeric, labels))
    return out


def literal_inputs(
    plan: Plan,
    profile: Mapping[str, Any],
    events: Sequence[LiteralEvent],
    now: float,
    contacts: Mapping[str, Sequence[float]] | None = None,
    rejections: Mapping[str, Sequence[float]] | None = None,
) -> Inputs:
    """What the store would read for a customer with this profile, these events and
    these contact and rejection times (per action), at `now`."""
    contacts = contacts or {}
    rejections = rejections or {}
    aggregates = {spec.key: aggregate(events, spec, now) for spec in plan.needs.aggregates}
    caps = {
        action: sum(1 for ts in contacts.get(action, ()) if ts > window_start(window, now))
        for action, window in plan.needs.capped_actions
        if not action.startswith("~")
    }
    # Policy and history counters: every past contact with an action counts on each of its
    # channels (the past request's channel is not known here), its tags and itself.
    for counter in counters(plan):
        since = window_start(counter.window_seconds, now)
        caps[counter.key] = sum(
            1
            for spec in plan.actions
            if counts_for(counter, spec, sorted(spec.channels))
            for ts in contacts.get(spec.name, ())
            if ts > since
        )
    fatigue: dict[str, int] = {}
    for action, limit, window, period in plan.needs.fatigued_actions:
        if action.startswith("~"):
            # Fatigue across offers: the rejections of every action the policy covers.
            scope, name = action[1:].split(":")
            counter = ContactKey(scope, name, 0)
            times = sorted(
                ts
                for spec in plan.actions
                if counts_for(counter, spec, sorted(spec.channels))
                for ts in rejections.get(spec.name, ())
            )
        else:
            times = sorted(rejections.get(action, ()))
        fatigue[action] = limit if fatigued(times, now, limit, window, period) else 0
    values = normalize_values(plan.checked.profile, profile, "profile.")
    return Inputs(values, aggregates, caps, fatigue)

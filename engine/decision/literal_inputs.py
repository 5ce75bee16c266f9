"""Literal inputs: a profile, events and contacts given as values, turned into `Inputs`.

Scenarios and `arbiter decide --profile` decide without Redis; both hand
`decide` exactly what the store would read. Values are validated and converted
by `engine.validate` (the module HTTP uses), so an ISO time becomes epoch
seconds, a set a sorted list, and an enum value outside its list is refused
with the field's name. Aggregates are computed over the same hourly and daily
buckets the store uses (`window_events`): `count` and `sum` of no events are
0, `min`, `max`, `avg` and `last_seen` missing.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from arbiter.dsl import types as t
from arbiter.engine.decision.arbitrate import fatigued
from arbiter.engine.decision.policies import ContactKey, counters, counts_for
from arbiter.engine.plan import AggregateSpec, Plan
from arbiter.engine.records import Inputs
from arbiter.engine.validate import ValueProblem, normalize, normalize_all

HOUR = 3600
DAY = 86400
#: Windows up to this long are served from hourly buckets, longer ones from daily buckets.
HOURLY_MAX_WINDOW = 7 * DAY


@dataclass(frozen=True, slots=True)
class LiteralEvent:
    """One event as the store keeps it: its type, time and numeric properties."""

    type: str
    ts: float
    props: Mapping[str, float] = field(default_factory=dict)


def window_events(
    events: Sequence[LiteralEvent], spec: AggregateSpec, now: float
) -> list[LiteralEvent]:
    """The events a window covers, as the store's buckets do.

    Windows up to 7 days use hourly buckets, longer ones daily buckets; a window
    covers every bucket from the one containing `now - W` to the one containing
    `now`, so up to one bucket more than W is counted at the old edge, never less.
    """
    size = HOUR if spec.window_seconds <= HOURLY_MAX_WINDOW else DAY
    first = int((now - spec.window_seconds) // size)
    last = int(now // size)
    return [e for e in events if e.type == spec.event and first <= int(e.ts // size) <= last]


def aggregate(events: Sequence[LiteralEvent], spec: AggregateSpec, now: float) -> float | None:
    """One aggregate of literal events: count and sum are 0 over no events,
    min, max and avg are missing (None)."""
    if spec.fn == "last":
        times = [e.ts for e in events if e.type == spec.event]
        return max(times) if times else None
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
        numeric = {k: float(v) for k, v in props.items() if isinstance(v, int | float)}
        out.append(LiteralEvent(item["type"], float(ts), numeric))
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
        action: sum(1 for ts in contacts.get(action, ()) if ts > now - window)
        for action, window in plan.needs.capped_actions
        if not action.startswith("~")
    }
    # Policy and history counters: every past contact with an action counts on each of its
    # channels (the past request's channel is not known here), its tags and itself.
    for counter in counters(plan):
        since = now - counter.window_seconds
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

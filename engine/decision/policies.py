"""Contact policies across offers and the customer's own contact history, without new storage.

A policy line (`channel sms: 1 per 7d`, `tag promo: 3 per 30d`) and a rule's
`contacts(channel sms within 7d)` each read a contact counter named
`~<scope>:<name>:<window seconds>` (a negative window is calendar months,
`engine.decision.window_span`: `~channel:sms:-1` for `1 per 1mo`). The store keeps those exactly like an
action's cap counter (a sorted set of contact times under the customer's hash
tag), so they are read in the decision's one round trip and written, with the
caps, by the one script that runs after a decision: a policy is applied
atomically with the per-action caps. The names start with `~`, which no
action name can, so they never collide with an action's own counter.

A returned action counts as a contact on the request's channel (on each of its
own channels when the request names none), on each of its tags, and as itself.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache

from arbiter.dsl import nodes as n
from arbiter.engine.decision.window_span import keep_seconds
from arbiter.engine.plan import ActionSpec, Plan


@dataclass(frozen=True, slots=True)
class ContactKey:
    """One contact counter: what it counts and over how long."""

    scope: str  # channel, tag, action
    name: str
    window_seconds: int

    @property
    def key(self) -> str:
        return contact_key(self.scope, self.name, self.window_seconds)


def contact_key(scope: str, name: str, window_seconds: int) -> str:
    """The counter's name in `Needs.capped_actions` and `Inputs.caps`."""
    return f"~{scope}:{name}:{window_seconds}"


def policy_reads(limits: Iterable[n.PolicyLimit]) -> list[tuple[str, int]]:
    """The counters a contact policy reads, as `Needs.capped_actions` entries."""
    return [(contact_key(p.scope, p.name, p.window_seconds), p.window_seconds) for p in limits]


@lru_cache(maxsize=256)
def _counters(capped: tuple[tuple[str, int], ...]) -> tuple[ContactKey, ...]:
    out = []
    for key, window in capped:
        if key.startswith("~"):
            scope, name, _ = key[1:].split(":")
            out.append(ContactKey(scope, name, window))
    return tuple(out)


def counters(plan: Plan) -> tuple[ContactKey, ...]:
    """Every policy and history counter a plan reads (parsed once per plan's needs)."""
    return _counters(plan.needs.capped_actions)


def contact_channels(spec: ActionSpec, channel: str | None) -> Sequence[str]:
    """The channels a contact with this action counts on."""
    if channel is not None:
        return (channel,)
    return sorted(spec.channels)


def counts_for(counter: ContactKey, spec: ActionSpec, channels: Sequence[str]) -> bool:
    """Whether a contact with `spec` (on `channels`) counts toward `counter`."""
    if counter.scope == "action":
        return counter.name == spec.name
    if counter.scope == "tag":
        return counter.name in spec.tags
    return counter.name in channels


def contacts_of(plan: Plan, spec: ActionSpec, channel: str | None) -> list[tuple[str, int]]:
    """The counters one returned action adds a contact to, with their windows (to keep)."""
    channels = contact_channels(spec, channel)
    return [(c.key, c.window_seconds) for c in counters(plan) if counts_for(c, spec, channels)]


@dataclass(frozen=True, slots=True)
class _Coverage:
    """The policies covering one action on one request channel, with their counter names."""

    limits: tuple[tuple[str, n.PolicyLimit], ...]  # (counter key, limit), in declared order
    fatigue: tuple[tuple[str, n.PolicyFatigue], ...]  # (rejection set, policy), in order


# Per plan (by id, dropped with the plan): (action, channel) -> _Coverage. Which policies
# cover an action depends only on the plan, the action and the channel, and working it
# out made ~2 ContactKeys and key strings per policy per candidate on every decision.
_COVERAGE: dict[int, dict[tuple[str, str | None], _Coverage]] = {}
_COVERAGE_PER_PLAN = 4096  # channels come from requests: bounded, cleared when full


def _coverage(plan: Plan, spec: ActionSpec, channel: str | None) -> _Coverage:
    table = _COVERAGE.get(id(plan))
    if table is None:
        table = _COVERAGE[id(plan)] = {}
        weakref.finalize(plan, _COVERAGE.pop, id(plan), None)
    found = table.get((spec.name, channel))
    if found is None:
        channels = contact_channels(spec, channel)
        limits = []
        for limit in plan.checked.policies:
            counter = ContactKey(limit.scope, limit.name, limit.window_seconds)
            if counts_for(counter, spec, channels):
                limits.append((counter.key, limit))
        fatigue = [
            (fatigue_key(f.scope, f.name), f)
            for f in plan.checked.fatigue_policies
            if counts_for(ContactKey(f.scope, f.name, 0), spec, channels)
        ]
        found = _Coverage(tuple(limits), tuple(fatigue))
        if len(table) >= _COVERAGE_PER_PLAN:
            table.clear()
        table[spec.name, channel] = found
    return found


def blocking_limit(
    plan: Plan, spec: ActionSpec, channel: str | None, caps: Mapping[str, int]
) -> tuple[n.PolicyLimit, int] | None:
    """The first policy limit this action would exceed, with the contacts counted, or None."""
    for key, limit in _coverage(plan, spec, channel).limits:
        seen = caps.get(key, 0)
        if seen >= limit.count:
            return limit, seen
    return None


def applies(plan: Plan, spec: ActionSpec, channel: str | None) -> bool:
    """Whether any policy covers this action (so an unknown history must stop it)."""
    coverage = _coverage(plan, spec, channel)
    return bool(coverage.limits or coverage.fatigue)


# ------------------------------------------------------------------ fatigue across offers
#
# `tag promo: suppress after 3 rejections within 30d for 14d`: a rejection of any action
# the line covers is recorded under `~<scope>:<name>` too (the store keeps it like an
# action's rejections), and read as one more `Needs.fatigued_actions` entry.


def fatigue_key(scope: str, name: str) -> str:
    """The rejection set's name in `Needs.fatigued_actions` and `Inputs.rejections`."""
    return f"~{scope}:{name}"


def fatigue_reads(policies: Iterable[n.PolicyFatigue]) -> list[tuple[str, int, int, int]]:
    """The rejection sets fatigue policies read, as `Needs.fatigued_actions` entries."""
    return [
        (fatigue_key(f.scope, f.name), f.rejections, f.window_seconds, f.period_seconds)
        for f in policies
    ]


def rejections_of(plan: Plan, spec: ActionSpec, channel: str | None) -> list[tuple[str, int]]:
    """The policy rejection sets one rejection of this action goes to, with how long to keep."""
    channels = contact_channels(spec, channel)
    return [
        (
            fatigue_key(f.scope, f.name),
            keep_seconds(f.window_seconds) + keep_seconds(f.period_seconds),
        )
        for f in plan.checked.fatigue_policies
        if counts_for(ContactKey(f.scope, f.name, 0), spec, channels)
    ]


def tiring_policy(
    plan: Plan, spec: ActionSpec, channel: str | None, rejections: Mapping[str, int]
) -> n.PolicyFatigue | None:
    """The first fatigue policy covering this action that is in force, or None."""
    for key, f in _coverage(plan, spec, channel).fatigue:
        if rejections.get(key, 0) >= f.rejections:
            return f
    return None

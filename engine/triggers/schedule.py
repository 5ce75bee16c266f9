"""Scheduling triggers: an event of a trigger's `on` type puts a firing on the Redis schedule.

``trigger cart_recovery on add_to_cart after 1h unless purchase decide for
channel email``: each ``add_to_cart`` event schedules one :class:`Firing`,
due one hour after the event, in two sorted sets:

- ``keys.triggers_due(shard)`` (score = due time), read by the runners
  (`engine.triggers.runner`), which claim due firings. With ``shards`` > 1
  the schedule is split by a hash of the firing's id over that many shards,
  each under a hash tag of its own, so that on Redis Cluster the schedule and
  the runners' claims spread over the nodes. Every scheduler and runner must
  use the same count (``ARBITER_TRIGGER_SHARDS``); it may be raised (shard 0
  is always read, and so is every shard below the count) but not lowered
  while firings are scheduled in the shards it would drop;
- ``keys.triggers(customer)`` (same member), in the customer's hash slot,
  so that erasing the customer cancels their firings.

A firing's id is a hash of (ruleset, trigger, customer, event id or time),
so an event sent twice schedules one firing; the member itself carries
everything the runner needs.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any, Final

import msgspec

from arbiter.dsl import nodes as n
from arbiter.engine.store import keys
from arbiter.engine.store.profiles import Event

__all__ = [
    "MAX_LATE_SECONDS",
    "Firing",
    "decode_firing",
    "firing_id",
    "schedule_triggers",
    "shard_of",
]

#: An event arriving so late that its firing was due more than this long ago
#: schedules nothing (a backfill of last month's events must not mail everyone now).
MAX_LATE_SECONDS: Final = 3600.0
#: Scheduled firings of a customer are kept this long after they are due.
KEEP_SECONDS: Final = 7 * 86400


class Firing(msgspec.Struct, frozen=True, array_like=True):
    """One scheduled trigger firing for one customer."""

    id: str
    ruleset: str
    trigger: str
    customer_id: str
    event_ts: float
    due: float


_ENCODE = msgspec.json.Encoder().encode
_DECODE = msgspec.json.Decoder(Firing).decode


def decode_firing(member: bytes) -> Firing:
    """A firing from its sorted-set member; `msgspec.DecodeError` if it is not one."""
    return _DECODE(member)


def firing_id(ruleset: str, trigger: str, event: Event) -> str:
    """Stable per (ruleset, trigger, customer, event): the same event schedules one firing."""
    which = event.event_id if event.event_id is not None else repr(float(event.ts))
    raw = "\x1f".join((ruleset, trigger, event.customer_id, event.type, which))
    return hashlib.blake2b(raw.encode(), digest_size=12).hexdigest()


def shard_of(fid: str, shards: int) -> int:
    """The schedule shard of firing ``fid`` (a hex id) among ``shards``."""
    return int(fid[:8], 16) % shards if shards > 1 else 0


async def schedule_triggers(
    redis: Any,
    specs: Sequence[tuple[str, n.TriggerDecl]],
    events: Sequence[Event],
    now: float,
    *,
    shards: int = 1,
) -> int:
    """Schedule the firings ``events`` start over ``shards`` schedule shards; returns how
    many were scheduled (new or not)."""
    firings: list[Firing] = []
    for ev in events:
        for ruleset, decl in specs:
            if decl.on != ev.type:
                continue
            due = ev.ts + decl.after_seconds
            if due < now - MAX_LATE_SECONDS:
                continue
            fid = firing_id(ruleset, decl.name, ev)
            firings.append(Firing(fid, ruleset, decl.name, ev.customer_id, ev.ts, due))
    if not firings:
        return 0
    pipe = redis.pipeline(transaction=False)
    for f in firings:
        member = _ENCODE(f)
        key = keys.triggers(f.customer_id)
        # NX: a repeated event must not move a firing (nor revive one being fired).
        pipe.zadd(key, {member: f.due}, nx=True)
        pipe.expire(key, int(max(0.0, f.due - now)) + KEEP_SECONDS)
        pipe.zadd(keys.triggers_due(shard_of(f.id, shards)), {member: f.due}, nx=True)
    await pipe.execute()
    return len(firings)

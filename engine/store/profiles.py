"""Customer state in Redis: profile attributes, event windows, contact caps, fatigue.

A decision reads everything it needs in one round trip to one shard
(`ProfileStore.fetch`: a few plain commands shaped by the plan's `Needs`, see
`engine.store.windows`, pipelined with other decisions' reads). Writes that follow a decision (contact counters) are queued
on the decision log's pipeline, behind the response.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import msgspec

from arbiter.engine.decision.arbitrate import fatigued
from arbiter.engine.decision.window_span import keep_seconds
from arbiter.engine.plan import AggregateSpec, Needs
from arbiter.engine.records import RECORD_DECODER, Inputs
from arbiter.engine.store import contact_history, keys, windows
from arbiter.engine.store.batcher import Batcher
from arbiter.engine.store.compression import plain_records
from arbiter.engine.store.identity import Identities, guarded, redirect_of
from arbiter.engine.store.scripts import eval_pipelined

# One command per decision for everything written under the customer's hash tag:
# the decision-log index entry (for erasure) and the contact-cap counters.
AFTER_DECISION_LUA_BODY = (
    contact_history.LUA_HISTORY
    + """
-- KEYS[1] decision index list, KEYS[2] contact history hash
-- ARGV: stream id, decision id, ttl, now, record id, then (field, cap window) pairs
if ARGV[1] ~= '' then  -- '' = the record was not logged (ARBITER_DECISION_LOG=off)
  redis.call('RPUSH', KEYS[1], 's:' .. ARGV[1], 'd:' .. ARGV[2])
  redis.call('EXPIRE', KEYS[1], ARGV[3])
end
if #ARGV > 5 then
  local now, id, fields = tonumber(ARGV[4]), ARGV[5], {}
  for i = 6, #ARGV, 2 do fields[#fields + 1] = ARGV[i] end
  local blobs = redis.call('HMGET', KEYS[2], unpack(fields))
  local out, longest = {}, 0
  for k = 1, #fields do
    local window = tonumber(ARGV[5 + 2 * k])
    out[#out + 1] = fields[k]
    out[#out + 1] = add_record(blobs[k], now, id, now - window)
    if window > longest then longest = window end
  end
  redis.call('HSET', KEYS[2], unpack(out))
  keep_ttl(KEYS[2], math.floor(longest) + 60)
end
return 1
"""
)
# Alias-aware (see engine.store.identity): KEYS end with the customer's alias key.
AFTER_DECISION_LUA = guarded(AFTER_DECISION_LUA_BODY)
INGEST_LUA = guarded(windows.INGEST_LUA)

_json_encode = msgspec.json.Encoder().encode
_json_decode = msgspec.json.Decoder().decode


def encode_profile(attributes: Mapping[str, Any]) -> dict[str, bytes]:
    """Attribute values JSON-encoded one by one, as stored in the profile hash."""
    return {k: _json_encode(v) for k, v in attributes.items()}


def decode_profile(raw: Mapping[bytes, bytes]) -> dict[str, Any]:
    """The inverse of `encode_profile`, from Redis bytes."""
    return {k.decode(): _json_decode(v) for k, v in raw.items()}


def outcome_fields(ev: Event) -> dict[bytes, bytes]:
    """The outcome-stream entry of an event: customer, type, time, properties (JSON)."""
    return {
        b"customer_id": ev.customer_id.encode(),
        b"type": ev.type.encode(),
        b"ts": repr(float(ev.ts)).encode(),
        b"properties": json.dumps(dict(ev.properties), default=str).encode(),
    }


@dataclass(frozen=True, slots=True)
class Event:
    """One behavioural event as ingested."""

    customer_id: str
    type: str
    ts: float
    properties: Mapping[str, Any]
    event_id: str | None = None


def grouped_properties(needs: Iterable[Needs]) -> frozenset[str]:
    """`"<event>.<prop>"` of every string property these plans read grouped per value."""
    return frozenset(
        f"{spec.event}.{spec.prop}"
        for need in needs
        for spec in need.aggregates
        if spec.fn in windows.GROUPED_FNS
    )


class ProfileStore:
    """Reads and writes one customer's state; every method is one round trip.

    Writes that touch several fields of one customer are Lua scripts over
    that customer's keys (one hash slot), never MULTI, so they are atomic on
    a single Redis and on Redis Cluster alike.
    """

    def __init__(self, redis: Any, read_deadline_s: float | None = None) -> None:
        """`read_deadline_s` bounds a decision's read; give the client no socket timeout then."""
        self.redis = redis
        self.identities = Identities(redis)
        self._ingest_sha = hashlib.sha1(INGEST_LUA.encode()).hexdigest()
        self._profile = redis.register_script(windows.PROFILE_LUA)
        self._record_rejection = redis.register_script(contact_history.RECORD_REJECTION_LUA)
        self.round_trips = Batcher(redis, read_deadline_s)
        self.after_decision_sha = hashlib.sha1(AFTER_DECISION_LUA.encode()).hexdigest()

    # ---------------------------------------------------------------- reads

    async def fetch(self, customer_id: str, needs: Needs, now: float) -> Inputs:
        """Everything a plan needs about one customer, in one round trip.

        One more round trip when `customer_id` is an anonymous id linked to a
        customer: the first answers with the customer id (the alias key is
        read with the rest), the second reads the customer (and
        `Inputs.resolved_id` says so).
        """
        replies = await self.round_trips.read(windows.read_commands(customer_id, needs))
        resolved = None
        if replies[0] is not None:
            resolved = replies[0].decode()
            replies = await self.round_trips.read(windows.read_commands(resolved, needs))
            if replies[0] is not None:
                raise RuntimeError(f"'{customer_id}' links to a linked id; links are one level")
        raw_profile, aggregates, caps, rejection_times = windows.parse_read(replies, needs, now)
        rejections = {}
        for action, limit, window, period in needs.fatigued_actions:
            times = rejection_times[action]
            rejections[action] = limit if fatigued(times, now, limit, window, period) else 0
        return Inputs(
            decode_profile(raw_profile), aggregates, caps, rejections, resolved_id=resolved
        )

    async def resolve(self, any_id: str) -> str:
        """The customer an id is linked to, or the id itself (admin paths: one GET)."""
        return await self.identities.resolve(any_id)

    async def get_profile(self, customer_id: str) -> dict[str, Any]:
        """The stored attributes of a customer (empty if unknown)."""
        return decode_profile(await self.redis.hgetall(keys.profile(customer_id)))

    async def aggregates(
        self, customer_id: str, specs: Iterable[AggregateSpec], now: float
    ) -> dict[str, Any]:
        """Event aggregates of a customer, as a decision would read them."""
        needs = Needs((), tuple(specs), (), (), False)
        inputs = await self.fetch(customer_id, needs, now)
        return inputs.aggregates

    async def event_summary(self, customer_id: str) -> dict[str, float]:
        """Last-seen time of every event type the customer has."""
        blob = await self.redis.hget(keys.windows(customer_id), windows.LAST_SEEN_FIELD)
        return windows.last_seen_times(blob)

    # --------------------------------------------------------------- writes

    async def put_profile(self, customer_id: str, attributes: Mapping[str, Any]) -> None:
        """Replace all attributes of a customer."""
        pairs = [x for kv in encode_profile(attributes).items() for x in kv]
        await self._profile(
            keys=[keys.profile(customer_id)], args=["replace", len(pairs) // 2, *pairs]
        )

    async def patch_profile(
        self, customer_id: str, set_: Mapping[str, Any], remove: Iterable[str] = ()
    ) -> None:
        """Merge attributes in; a `None` value in `set_` or a name in `remove` deletes it."""
        to_set = encode_profile({k: v for k, v in set_.items() if v is not None})
        to_del = [k for k, v in set_.items() if v is None] + list(remove)
        if not to_set and not to_del:
            return
        pairs = [x for kv in to_set.items() for x in kv]
        await self._profile(
            keys=[keys.profile(customer_id)], args=["merge", len(to_set), *pairs, *to_del]
        )

    async def add_events(
        self,
        events: Sequence[Event],
        now: float | None = None,
        *,
        outcomes: Collection[str] = (),
        outcome_maxlen: int = 1_000_000,
        grouped: Collection[str] = (),
    ) -> int:
        """Count events into their customers' windows; returns how many were new.

        `now` is the arrival time (default: the clock): event ids are remembered
        for `windows.EVENT_ID_TTL` after arrival, and buckets too old to be read
        at `now` are not written. New events whose type is in `outcomes` (the
        types rulesets reward or measure) are also appended to
        `keys.OUTCOME_STREAM`, where rewards are attributed and experiment
        goals counted from; a repeated event id is not appended twice.
        String properties named in `grouped` (`"<event>.<prop>"`: those the live
        rulesets group by, `grouped_properties`) are counted per value.
        """
        if not events:
            return 0
        arrived = time.time() if now is None else now

        def call(ev: Event, customer_id: str) -> tuple[list[str], list[Any]]:
            key_list, args = windows.ingest_command(
                customer_id, ev.type, ev.ts, ev.properties, ev.event_id, arrived, grouped
            )
            return [*key_list, keys.alias(customer_id)], args

        calls = [call(ev, ev.customer_id) for ev in events]
        replies = await self._eval_pipelined(INGEST_LUA, self._ingest_sha, calls)
        # Events of linked anonymous ids come back with their customer id: one more pipeline.
        redirects = {i: t for i, r in enumerate(replies) if (t := redirect_of(r)) is not None}
        if redirects:
            again = [call(events[i], target) for i, target in redirects.items()]
            again_replies = await self._eval_pipelined(INGEST_LUA, self._ingest_sha, again)
            for i, reply in zip(redirects, again_replies, strict=True):
                if redirect_of(reply) is not None:
                    raise RuntimeError("an id links to a linked id; links are one level")
                replies[i] = reply
        if outcomes:
            # Outcomes belong to the customer the event was counted for (a linked
            # anonymous id's events are the customer's).
            tracked = [
                replace(ev, customer_id=redirects.get(i, ev.customer_id))
                for i, (ev, r) in enumerate(zip(events, replies, strict=True))
                if int(r) and ev.type in outcomes
            ]
            if tracked:
                pipe = self.redis.pipeline(transaction=False)
                for ev in tracked:
                    pipe.xadd(
                        keys.OUTCOME_STREAM,
                        outcome_fields(ev),
                        maxlen=outcome_maxlen,
                        approximate=True,
                    )
                await pipe.execute()
        return sum(int(r) for r in replies)

    async def _eval_pipelined(
        self, script: str, sha: str, calls: Sequence[tuple[list[str], list[Any]]]
    ) -> list[Any]:
        return await eval_pipelined(self.redis, script, sha, calls)

    def after_decision_command(
        self,
        customer_id: str,
        stream_id: bytes,
        decision_id: str,
        ttl: int,
        contacts: Sequence[tuple[str, int]],
        now: float,
    ) -> tuple[list[str], list[Any]]:
        """KEYS and ARGV of `AFTER_DECISION_LUA`: index the log entry, count the contacts."""
        # The record id makes a retry of the same write count once (the decision id is
        # unique, the time kept as layout 1's sorted-set member had it).
        args: list[Any] = [
            stream_id,
            decision_id,
            ttl,
            repr(now),
            contact_history.record_id(f"{now!r}:{decision_id}"),
        ]
        # A calendar-month window (negative) keeps 31 days a month (`window_span.keep_seconds`).
        for counter, window in contacts:
            args += [contact_history.cap_field(counter), keep_seconds(window)]
        # The alias key last: see identity.guarded.
        key_list = [keys.decision_index(customer_id), keys.contact_history(customer_id)]
        return [*key_list, keys.alias(customer_id)], args

    async def record_rejection(
        self,
        customer_id: str,
        action: str,
        now: float,
        keep_seconds: int,
        *,
        once_as: str | None = None,
    ) -> None:
        """Remember a negative outcome of an action, for outcome-based suppression.

        With ``once_as`` (a feedback's decision id and action) the rejection is
        counted once however often it is recorded, so a retry may repeat it.
        """
        # A random id otherwise: two rejections at the same instant are two rejections.
        what = once_as if once_as is not None else f"{now!r}:{os.urandom(8).hex()}"
        await self._record_rejection(
            keys=[keys.contact_history(customer_id)],
            args=[
                contact_history.rejection_field(action),
                repr(now),
                contact_history.record_id(what),
                repr(now - keep_seconds),
                keep_seconds + 60,
            ],
        )

    async def erase(self, customer_id: str) -> int:
        """Erase a person: `customer_id`, the customer it is linked to, and all their linked ids.

        Returns the number of keys deleted. Anonymous ids go first and the
        customer (with its set of linked ids) last, so an erasure interrupted
        halfway finds the rest when repeated.
        """
        root = await self.identities.resolve(customer_id)
        total = 0
        for anonymous_id in await self.identities.linked(root):
            total += await self.erase_one(anonymous_id)
        return total + await self.erase_one(root)

    async def erase_one(self, customer_id: str) -> int:
        """Delete every key held on one id and its decision-log entries; returns keys deleted.

        The per-customer decision index names the customer's entries on the
        decision stream and their decision records (in other slots); each
        record also names the actions whose feedback markers must go. Then a
        SCAN for the customer's hash tag (on the node that owns it, on a
        cluster) finds the rest: attributes, windows, caps, rejections, ids.
        """
        index = await self.redis.lrange(keys.decision_index(customer_id), 0, -1)
        stream_ids = [e[2:] for e in index if e.startswith(b"s:")]
        decision_ids = [e[2:].decode() for e in index if e.startswith(b"d:")]
        if stream_ids:
            await self.redis.xdel(keys.DECISION_STREAM, *stream_ids)
        if decision_ids:
            # Non-transactional pipelines may span slots (one batch per node on a cluster).
            pipe = self.redis.pipeline(transaction=False)
            for decision_id in decision_ids:
                pipe.get(keys.decision(decision_id))
            blobs = await plain_records(self.redis, await pipe.execute())
            pipe = self.redis.pipeline(transaction=False)
            for decision_id, blob in zip(decision_ids, blobs, strict=True):
                pipe.delete(keys.decision(decision_id))
                for action in _actions_of(blob):
                    pipe.delete(keys.feedback_seen(decision_id, action))
            await pipe.execute()
        found: list[bytes] = []
        scan: dict[str, Any] = {"match": keys.customer_pattern(customer_id), "count": 1000}
        if hasattr(self.redis, "get_node_from_key"):  # Redis Cluster: the customer's node only
            scan["target_nodes"] = self.redis.get_node_from_key(keys.profile(customer_id))
        async for key in self.redis.scan_iter(**scan):
            found.append(key)
        if found:
            # All in one slot, so one DEL serves a cluster too.
            await self.redis.delete(*found)
        return len(found)


def _actions_of(blob: bytes | None) -> list[str]:
    """The actions a stored decision record returned (none if it expired or is unreadable)."""
    if blob is None:
        return []
    try:
        record = RECORD_DECODER.decode(blob)
    except msgspec.DecodeError:
        return []
    return [a.action for a in record.actions]

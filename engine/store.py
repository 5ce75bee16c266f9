"""Customer state in Redis: profile attributes, event windows, contact caps, fatigue.

A decision reads everything it needs in one command (`ProfileStore.fetch`: a
Lua script shaped by the plan's `Needs`, see `engine.windows`), so one round
trip to one shard. Writes that follow a decision (contact counters) are queued
on the decision log's pipeline, behind the response.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import msgspec

from engine import keys, windows
from engine.plan import AggregateSpec, Needs
from engine.read_batcher import ReadBatcher
from engine.records import Inputs

# One command per decision for everything written under the customer's hash tag:
# the decision-log index entry (for erasure) and the contact-cap counters.
AFTER_DECISION_LUA = """
-- KEYS[1] decision index list, KEYS[2..] contact zsets
-- ARGV: stream id, decision id, ttl, now, member, then one cap window per contact key
redis.call('RPUSH', KEYS[1], 's:' .. ARGV[1], 'd:' .. ARGV[2])
redis.call('EXPIRE', KEYS[1], ARGV[3])
local now = tonumber(ARGV[4])
for i = 2, #KEYS do
  local window = tonumber(ARGV[4 + i])
  redis.call('ZADD', KEYS[i], now, ARGV[5])
  redis.call('ZREMRANGEBYSCORE', KEYS[i], '-inf', now - window)
  redis.call('EXPIRE', KEYS[i], math.floor(window) + 60)
end
return 1
"""

_json_encode = msgspec.json.Encoder().encode
_json_decode = msgspec.json.Decoder().decode


def encode_profile(attributes: Mapping[str, Any]) -> dict[str, bytes]:
    """Attribute values JSON-encoded one by one, as stored in the profile hash."""
    return {k: _json_encode(v) for k, v in attributes.items()}


def decode_profile(raw: Mapping[bytes, bytes]) -> dict[str, Any]:
    """The inverse of `encode_profile`, from Redis bytes."""
    return {k.decode(): _json_decode(v) for k, v in raw.items()}


def _decode_pairs(flat: Sequence[bytes]) -> dict[str, Any]:
    return {flat[i].decode(): _json_decode(flat[i + 1]) for i in range(0, len(flat), 2)}


@dataclass(frozen=True, slots=True)
class Event:
    """One behavioural event as ingested."""

    customer_id: str
    type: str
    ts: float
    properties: Mapping[str, Any]
    event_id: str | None = None


class ProfileStore:
    """Reads and writes one customer's state; every method is one round trip."""

    def __init__(self, redis: Any, read_deadline_s: float | None = None) -> None:
        """`read_deadline_s` bounds a decision's read; give the client no socket timeout then."""
        self.redis = redis
        self._ingest = redis.register_script(windows.INGEST_LUA)
        self.reads = ReadBatcher(redis, windows.READ_LUA, read_deadline_s)
        self.after_decision_sha = hashlib.sha1(AFTER_DECISION_LUA.encode()).hexdigest()

    # ---------------------------------------------------------------- reads

    async def fetch(self, customer_id: str, needs: Needs, now: float) -> Inputs:
        """Everything a plan needs about one customer, in one command."""
        key_list, args = windows.read_command(customer_id, needs, now)
        reply = await self.reads.call(key_list, args)
        raw_profile, aggregates, caps, rejection_times = windows.parse_read(reply, needs)
        rejections = {}
        for action, limit, window, period in needs.fatigued_actions:
            times = rejection_times[action]
            rejections[action] = limit if fatigued(times, now, limit, window, period) else 0
        return Inputs(_decode_pairs(raw_profile), aggregates, caps, rejections)

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
        raw = await self.redis.hgetall(keys.last_seen(customer_id))
        return {k.decode(): float(v) for k, v in raw.items()}

    # --------------------------------------------------------------- writes

    async def put_profile(self, customer_id: str, attributes: Mapping[str, Any]) -> None:
        """Replace all attributes of a customer."""
        pipe = self.redis.pipeline(transaction=True)
        pipe.delete(keys.profile(customer_id))
        if attributes:
            pipe.hset(keys.profile(customer_id), mapping=encode_profile(attributes))
        await pipe.execute()

    async def patch_profile(
        self, customer_id: str, set_: Mapping[str, Any], remove: Iterable[str] = ()
    ) -> None:
        """Merge attributes in; a `None` value in `set_` or a name in `remove` deletes it."""
        pipe = self.redis.pipeline(transaction=True)
        to_set = {k: v for k, v in set_.items() if v is not None}
        to_del = [k for k, v in set_.items() if v is None] + list(remove)
        if to_set:
            pipe.hset(keys.profile(customer_id), mapping=encode_profile(to_set))
        if to_del:
            pipe.hdel(keys.profile(customer_id), *to_del)
        await pipe.execute()

    async def add_events(self, events: Sequence[Event]) -> int:
        """Count events into their customers' windows; returns how many were new."""
        pipe = self.redis.pipeline(transaction=False)
        for ev in events:
            key_list, args = windows.ingest_command(
                ev.customer_id, ev.type, ev.ts, ev.properties, ev.event_id
            )
            await self._ingest(keys=key_list, args=args, client=pipe)
        results = await pipe.execute()
        return sum(int(r) for r in results)

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
        key_list = [keys.decision_index(customer_id)]
        key_list += [keys.contacts(customer_id, action) for action, _ in contacts]
        # Members must differ per contact; the decision id makes them unique (and a retry
        # of the same write idempotent).
        args: list[Any] = [stream_id, decision_id, ttl, repr(now), f"{now!r}:{decision_id}"]
        args += [window for _, window in contacts]
        return key_list, args

    async def record_rejection(
        self, customer_id: str, action: str, now: float, keep_seconds: int
    ) -> None:
        """Remember a negative outcome of an action, for outcome-based suppression."""
        key = keys.rejections(customer_id, action)
        pipe = self.redis.pipeline(transaction=False)
        pipe.zadd(key, {repr(now): now})
        pipe.zremrangebyscore(key, "-inf", now - keep_seconds)
        pipe.expire(key, keep_seconds + 60)
        await pipe.execute()

    async def erase(self, customer_id: str) -> int:
        """Delete every key held on a customer and its decision-log entries; returns keys deleted."""
        index = await self.redis.lrange(keys.decision_index(customer_id), 0, -1)
        stream_ids = [e[2:] for e in index if e.startswith(b"s:")]
        decision_ids = [e[2:].decode() for e in index if e.startswith(b"d:")]
        if stream_ids:
            await self.redis.xdel(keys.DECISION_STREAM, *stream_ids)
        for decision_id in decision_ids:
            # One DEL each: decision keys live in other cluster slots than the customer's.
            await self.redis.delete(keys.decision(decision_id))
        found: list[bytes] = []
        if hasattr(self.redis, "get_node_from_key"):  # Redis Cluster: scan the customer's node
            node = self.redis.get_node_from_key(keys.profile(customer_id))
            async for key in self.redis.scan_iter(
                match=keys.customer_pattern(customer_id), target_nodes=node
            ):
                found.append(key)
        else:
            async for key in self.redis.scan_iter(match=keys.customer_pattern(customer_id)):
                found.append(key)
        if found:
            await self.redis.delete(*found)
        return len(found)


def fatigued(times: Sequence[float], now: float, limit: int, window: int, period: int) -> bool:
    """True when `limit` rejections fell within `window` and the last of them is under `period` old.

    `times` must be sorted.
    """
    for i in range(limit - 1, len(times)):
        if times[i] - times[i - limit + 1] <= window and now - times[i] < period:
            return True
    return False

"""Customer state in Redis: profile attributes, event windows, contact caps, fatigue.

A decision reads everything it needs in one pipelined round trip
(`ProfileStore.fetch`), shaped by the plan's `Needs`. Writes that follow a
decision (contact counters) go in one pipeline behind the response.

Event windows are bucketed counters: hourly buckets (kept 8 days) serve
windows up to 7 days, daily buckets (kept 400 days) serve longer ones. A
window of W covers the buckets that start after `now - W`, plus the bucket
containing `now - W`: counts are exact to one bucket (an hour or a day) at
the old edge of the window. See docs/profiles.md.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import msgspec

from engine import keys
from engine.plan import AggregateSpec, Needs
from engine.records import Inputs

HOUR = 3600
DAY = 86400
HOURLY_MAX_WINDOW = 7 * DAY
HOURLY_TTL = 8 * DAY
DAILY_TTL = 400 * DAY
EVENT_ID_TTL = 2 * DAY

_json_encode = msgspec.json.Encoder().encode
_json_decode = msgspec.json.Decoder().decode


def bucket_fields(spec: AggregateSpec, now: float) -> list[bytes]:
    """The hash fields whose sum answers one windowed aggregate at `now`."""
    size = HOUR if spec.window_seconds <= HOURLY_MAX_WINDOW else DAY
    unit = "h" if size == HOUR else "d"
    name = spec.event if spec.prop is None else f"{spec.event}.{spec.prop}"
    first = int((now - spec.window_seconds) // size)
    last = int(now // size)
    return [f"{name}|{unit}{b}".encode() for b in range(first, last + 1)]


def encode_profile(attributes: Mapping[str, Any]) -> dict[str, bytes]:
    """Attribute values JSON-encoded one by one, as stored in the profile hash."""
    return {k: _json_encode(v) for k, v in attributes.items()}


def decode_profile(raw: Mapping[bytes, bytes]) -> dict[str, Any]:
    """The inverse of `encode_profile`, from Redis bytes."""
    return {k.decode(): _json_decode(v) for k, v in raw.items()}


@dataclass(frozen=True, slots=True)
class Event:
    """One behavioural event as ingested."""

    customer_id: str
    type: str
    ts: float
    properties: Mapping[str, Any]
    event_id: str | None = None


# Atomic per-customer ingest: de-duplicate by event id, bump hourly and daily
# buckets, keep the newest last-seen time, set expiries. One script per event
# keeps the customer's keys consistent however events interleave.
_INGEST = """
local eid = ARGV[1]
if eid ~= '' then
  if redis.call('ZSCORE', KEYS[3], eid) then return 0 end
  redis.call('ZADD', KEYS[3], ARGV[2], eid)
  redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', ARGV[2] - ARGV[9])
  redis.call('EXPIRE', KEYS[3], ARGV[9])
end
local etype, ts, hour, day = ARGV[3], tonumber(ARGV[2]), ARGV[4], ARGV[5]
redis.call('HINCRBY', KEYS[1], etype .. '|h' .. hour, 1)
redis.call('HINCRBY', KEYS[1], etype .. '|d' .. day, 1)
local i = 10
while i <= #ARGV do
  local name, amount = ARGV[i], ARGV[i + 1]
  redis.call('HINCRBYFLOAT', KEYS[1], etype .. '.' .. name .. '|h' .. hour, amount)
  redis.call('HINCRBYFLOAT', KEYS[1], etype .. '.' .. name .. '|d' .. day, amount)
  i = i + 2
end
local seen = tonumber(redis.call('HGET', KEYS[2], etype) or '-1')
if ts > seen then redis.call('HSET', KEYS[2], etype, ARGV[2]) end
redis.call('EXPIRE', KEYS[1], ARGV[8])
redis.call('EXPIRE', KEYS[2], ARGV[8])
return 1
"""


class ProfileStore:
    """Reads and writes one customer's state; every method is one round trip."""

    def __init__(self, redis: Any) -> None:
        self.redis = redis
        self._ingest = redis.register_script(_INGEST)

    # ---------------------------------------------------------------- reads

    async def fetch(self, customer_id: str, needs: Needs, now: float) -> Inputs:
        """Everything a plan needs about one customer, in one pipeline."""
        pipe = self.redis.pipeline(transaction=False)
        pipe.hgetall(keys.profile(customer_id))
        windowed = [s for s in needs.aggregates if s.fn != "last"]
        last = [s for s in needs.aggregates if s.fn == "last"]
        for spec in windowed:
            pipe.hmget(keys.events(customer_id), bucket_fields(spec, now))
        if last:
            pipe.hmget(keys.last_seen(customer_id), [s.event for s in last])
        for action, window in needs.capped_actions:
            pipe.zcount(keys.contacts(customer_id, action), f"({now - window!r}", "+inf")
        for action, *_ in needs.fatigued_actions:
            pipe.zrange(keys.rejections(customer_id, action), 0, -1, withscores=True)
        results = await pipe.execute()
        return self._inputs(results, needs, windowed, last, now)

    def _inputs(
        self,
        results: list[Any],
        needs: Needs,
        windowed: Sequence[AggregateSpec],
        last: Sequence[AggregateSpec],
        now: float,
    ) -> Inputs:
        it = iter(results)
        profile = decode_profile(next(it))
        aggregates: dict[str, Any] = {}
        for spec in windowed:
            values = [float(v) for v in next(it) if v is not None]
            aggregates[spec.key] = _aggregate(spec.fn, values)
        if last:
            for spec, raw in zip(last, next(it), strict=True):
                aggregates[spec.key] = float(raw) if raw is not None else None
        caps = {action: int(next(it)) for action, _ in needs.capped_actions}
        rejections: dict[str, int] = {}
        for action, limit, window, period in needs.fatigued_actions:
            times = sorted(ts for _, ts in next(it))
            rejections[action] = limit if fatigued(times, now, limit, window, period) else 0
        return Inputs(profile, aggregates, caps, rejections)

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
            args: list[Any] = [
                ev.event_id or "",
                repr(float(ev.ts)),
                ev.type,
                int(ev.ts // HOUR),
                int(ev.ts // DAY),
                "",
                "",
                DAILY_TTL,
                EVENT_ID_TTL,
            ]
            for name, value in ev.properties.items():
                if isinstance(value, int | float) and not isinstance(value, bool):
                    args += [name, repr(float(value))]
            ks = [
                keys.events(ev.customer_id),
                keys.last_seen(ev.customer_id),
                keys.event_ids(ev.customer_id),
            ]
            await self._ingest(keys=ks, args=args, client=pipe)
        results = await pipe.execute()
        return sum(int(r) for r in results)

    def record_contacts(
        self,
        pipe: Any,
        customer_id: str,
        contacts: Iterable[tuple[str, int]],
        now: float,
        decision_id: str,
    ) -> None:
        """Queue contact-cap increments on `pipe`: (action, cap window seconds) pairs."""
        for action, window in contacts:
            key = keys.contacts(customer_id, action)
            # Members must differ per contact; the decision id makes them unique.
            pipe.zadd(key, {f"{now!r}:{decision_id}": now})
            pipe.zremrangebyscore(key, "-inf", now - window)
            pipe.expire(key, int(window) + 60)

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


def _aggregate(fn: str, values: list[float]) -> float | None:
    if fn in ("count", "sum"):
        return sum(values)
    if not values:
        return None
    if fn == "min":
        return min(values)
    if fn == "max":
        return max(values)
    return None  # avg needs counts; the checker admits it only with sum/count pairs


def fatigued(times: Sequence[float], now: float, limit: int, window: int, period: int) -> bool:
    """True when `limit` rejections fell within `window` and the last of them is under `period` old.

    `times` must be sorted.
    """
    for i in range(limit - 1, len(times)):
        if times[i] - times[i - limit + 1] <= window and now - times[i] < period:
            return True
    return False

"""Layout-1 event windows, written as the old `engine.store.windows` wrote them.

Kept for the migration tests only: data in the old layout is made by the old
script itself, so `arbiter migrate` is tested against the real thing.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import redis

from arbiter.engine.store import keys

HOUR = 3600
DAY = 86400
HOURLY_MAX_WINDOW = 7 * DAY
MAX_WINDOW = 400 * DAY
DAYS_PER_KEY = 32
EVENT_ID_TTL = 2 * DAY
LAST_SEEN_TTL = MAX_WINDOW + 32 * DAY


def hourly_buckets(customer_id: str, day: int) -> str:
    return f"{keys._tag(customer_id)}:eh:{day}"


def daily_buckets(customer_id: str, block: int) -> str:
    return f"{keys._tag(customer_id)}:ed:{block}"


LEGACY_INGEST_LUA = """
-- KEYS: hourly hash, daily hash, last-seen hash, event-id zset (one customer: one slot)
-- ARGV: event id ('' = none), ts, type, hour bucket ('' = too old to be read: skip),
--       day bucket (same), hourly EXPIREAT, daily EXPIREAT, id ttl, arrival time,
--       last-seen ttl, [prop, value]...
local eid = ARGV[1]
if eid ~= '' then
  -- Duplicates are recognised by arrival time, not event time: a retry comes soon
  -- after the first delivery even when the event itself is days old.
  local arrived, keep = tonumber(ARGV[9]), tonumber(ARGV[8])
  local first = redis.call('ZSCORE', KEYS[4], eid)
  if first and tonumber(first) > arrived - keep then return 0 end
  redis.call('ZADD', KEYS[4], arrived, eid)
  redis.call('ZREMRANGEBYSCORE', KEYS[4], '-inf', arrived - keep)
  redis.call('EXPIRE', KEYS[4], ARGV[8])
end
local etype = ARGV[3]
local function add(key, b)
  redis.call('HINCRBY', key, etype .. b, 1)
  local i = 11
  while i <= #ARGV do
    local field = etype .. '.' .. ARGV[i] .. b
    local v = tonumber(ARGV[i + 1])
    redis.call('HINCRBYFLOAT', key, field, ARGV[i + 1])
    redis.call('HINCRBY', key, field .. '|n', 1)
    local lo = redis.call('HGET', key, field .. '|min')
    if not lo or v < tonumber(lo) then redis.call('HSET', key, field .. '|min', ARGV[i + 1]) end
    local hi = redis.call('HGET', key, field .. '|max')
    if not hi or v > tonumber(hi) then redis.call('HSET', key, field .. '|max', ARGV[i + 1]) end
    i = i + 2
  end
end
local function bump(key, bucket, expire_at)
  if bucket == '' then return end
  add(key, '|' .. bucket)
  -- The same figures for the whole hash: a window that covers it entirely reads one
  -- field instead of 24 or 32.
  add(key, '|all')
  -- The expiry is a function of the bucket key alone (its last bucket + the longest
  -- window it serves), so late events neither extend nor shorten it.
  redis.call('EXPIREAT', key, expire_at)
end
bump(KEYS[1], ARGV[4], ARGV[6])
bump(KEYS[2], ARGV[5], ARGV[7])
local seen = tonumber(redis.call('HGET', KEYS[3], etype) or '-1')
if tonumber(ARGV[2]) > seen then redis.call('HSET', KEYS[3], etype, ARGV[2]) end
redis.call('EXPIRE', KEYS[3], ARGV[10])
return 1
"""


def hourly_expire_at(day: int) -> int:
    """When the hash of `day`'s hourly buckets can go: no window of ≤ 7 days reads it after."""
    return (day + 1) * DAY + HOURLY_MAX_WINDOW + HOUR


def daily_expire_at(block: int) -> int:
    """When the hash of a 32-day block of daily buckets can go (windows up to `MAX_WINDOW`)."""
    return (block + 1) * DAYS_PER_KEY * DAY + MAX_WINDOW + DAY


def ingest_command(
    customer_id: str,
    event_type: str,
    ts: float,
    properties: Mapping[str, Any],
    event_id: str | None,
    now: float,
) -> tuple[list[str], list[Any]]:
    """KEYS and ARGV of `INGEST_LUA` for one event arriving at `now`.

    A bucket hash whose expiry has already passed at `now` is not written: no
    window could read it (a backfill of last year's events creates no hourly
    hashes). Numeric properties are summed; others are ignored here.
    """
    hour = int(ts // HOUR)
    day = int(ts // DAY)
    hour_key, block = day, day // DAYS_PER_KEY
    hourly_until = hourly_expire_at(hour_key)
    daily_until = daily_expire_at(block)
    key_list = [
        hourly_buckets(customer_id, hour_key),
        daily_buckets(customer_id, block),
        keys.last_seen(customer_id),
        keys.event_ids(customer_id),
    ]
    args: list[Any] = [
        event_id or "",
        repr(float(ts)),
        event_type,
        hour if hourly_until > now else "",
        day if daily_until > now else "",
        hourly_until,
        daily_until,
        EVENT_ID_TTL,
        repr(float(now)),
        LAST_SEEN_TTL,
    ]
    for name, value in properties.items():
        # NaN and infinities cannot be summed (HINCRBYFLOAT refuses them): not counted.
        if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
            args += [name, repr(float(value))]
    return key_list, args


def legacy_ingest(
    client: redis.Redis, events: list[tuple[str, str, float, dict[str, Any]]], now: float
) -> None:
    """Write (customer, type, ts, properties) events in layout 1."""
    script = client.register_script(LEGACY_INGEST_LUA)
    for customer, etype, ts, props in events:
        key_list, args = ingest_command(customer, etype, ts, props, None, now)
        script(keys=key_list, args=args)

"""Event windows and the one-command read of a decision, as Redis Lua scripts.

Buckets. Every event increments an hourly bucket and a daily bucket: a count
per event type, and per numeric property a sum, a count, a minimum and a
maximum. Hourly buckets live in one hash per customer per day (`…:eh:<day>`),
daily ones in one hash per customer per 32-day block (`…:ed:<block>`). Each
hash expires at a time fixed by its key: when the longest window that reads
it (7 days for hourly, `MAX_WINDOW` = 400 days for daily) has moved past its
last bucket. Expiry of whole keys is what keeps memory bounded without any
sweeping; an event so late that its hash would already be expired is counted
only in what can still be read (and in last-seen).

A window of W at time `now` uses hourly buckets when W ≤ 7 days, else daily
ones, and covers every bucket from the one containing `now - W` to the one
containing `now`: exact to one bucket at the window's old edge (up to an hour
or a day more than W is counted, never less). Windows longer than 400 days
see only the last 400 days or so.

The read. `READ_LUA` fetches, in one EVALSHA on one shard, everything a plan's
`Needs` ask for: the profile hash, last-seen times, each window's aggregate
(computed server-side, one HMGET per bucket hash, so only numbers come back;
a hash the window covers whole is read through its '|all' totals, so a 365-day
window reads two edge hashes bucket by bucket and one field of each other),
contact counts within each cap window, and recent rejection times. One
command, one small reply.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from arbiter.engine.plan import AggregateSpec, Needs
from arbiter.engine.store import keys

# Bumped whenever what is stored for event windows changes shape (benchmarks cache by it).
LAYOUT_VERSION = 1
# What a window's figure means, as the performance table reports it.
EXACTNESS = "hourly buckets to 7d, daily beyond: never under, over by at most the old-edge bucket"

HOUR = 3600
DAY = 86400
HOURLY_MAX_WINDOW = 7 * DAY
MAX_WINDOW = 400 * DAY
HOURS_PER_KEY = 24
DAYS_PER_KEY = 32
EVENT_ID_TTL = 2 * DAY
# Last-seen times outlive the longest window by a month, then go with the customer.
LAST_SEEN_TTL = MAX_WINDOW + 32 * DAY

INGEST_LUA = """
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

READ_LUA = """
-- KEYS: profile, last-seen, then bucket hashes, cap zsets, rejection zsets (see windows.py)
-- ARGV: n_last, last names..., n_windows, per window 6 args, n_caps, cap 'since' values...,
--       n_rejections
local out = {}
out[1] = redis.call('HGETALL', KEYS[1])
local a = 1
local n_last = tonumber(ARGV[a]); a = a + 1
if n_last > 0 then
  local names = {}
  for i = 1, n_last do names[i] = ARGV[a]; a = a + 1 end
  out[2] = redis.call('HMGET', KEYS[2], unpack(names))
else
  out[2] = {}
end
local n_win = tonumber(ARGV[a]); a = a + 1
local results = {}
for w = 1, n_win do
  local fn, prefix = ARGV[a], ARGV[a + 1]
  local first, last = tonumber(ARGV[a + 2]), tonumber(ARGV[a + 3])
  local per_key, key0 = tonumber(ARGV[a + 4]), tonumber(ARGV[a + 5])
  a = a + 6
  local suffix = ''
  if fn == 'min' then suffix = '|min' elseif fn == 'max' then suffix = '|max' end
  local step = 1
  if fn == 'avg' then step = 2 end
  local group0, group_last = math.floor(first / per_key), math.floor(last / per_key)
  local acc, count = nil, 0
  -- One HMGET per bucket hash: bucket by bucket in the two edge hashes, the
  -- whole-hash figures ('|all') of every hash in between.
  for g = group0, group_last do
    local fields = {}
    if g > group0 and g < group_last then
      if fn == 'avg' then
        fields[1] = prefix .. '|all'
        fields[2] = prefix .. '|all|n'
      else
        fields[1] = prefix .. '|all' .. suffix
      end
    else
      for x = math.max(first, g * per_key), math.min(last, (g + 1) * per_key - 1) do
        local f = prefix .. '|' .. x  -- integers below 1e14 print without a decimal point
        if fn == 'avg' then
          fields[#fields + 1] = f
          fields[#fields + 1] = f .. '|n'
        else
          fields[#fields + 1] = f .. suffix
        end
      end
    end
    local vals = redis.call('HMGET', KEYS[key0 + g - group0], unpack(fields))
    for i = 1, #vals, step do
      local v = vals[i]
      if v then
        local x = tonumber(v)
        if fn == 'min' then
          if acc == nil or x < acc then acc = x end
        elseif fn == 'max' then
          if acc == nil or x > acc then acc = x end
        else
          acc = (acc or 0) + x
        end
        if fn == 'avg' then count = count + tonumber(vals[i + 1] or '0') end
      end
    end
  end
  if fn == 'avg' then
    if count > 0 and acc then acc = acc / count else acc = nil end
  elseif acc == nil and (fn == 'count' or fn == 'sum') then
    acc = 0
  end
  if acc == nil then results[w] = false else results[w] = string.format('%.17g', acc) end
end
out[3] = results
local n_caps = tonumber(ARGV[a]); a = a + 1
local caps = {}
local key_index = #KEYS - n_caps - tonumber(ARGV[#ARGV]) + 1
for i = 1, n_caps do
  caps[i] = redis.call('ZCOUNT', KEYS[key_index], '(' .. ARGV[a], '+inf')
  a = a + 1
  key_index = key_index + 1
end
out[4] = caps
local n_rej = tonumber(ARGV[a])
local rej = {}
for i = 1, n_rej do
  rej[i] = redis.call('ZRANGE', KEYS[key_index], 0, -1, 'WITHSCORES')
  key_index = key_index + 1
end
out[5] = rej
return out
"""

PROFILE_LUA = """
-- KEYS: profile hash. ARGV: 'replace' or 'merge', n pairs, name, value, ..., names to delete...
-- A script, not MULTI: one key, atomic, and it works the same on Redis Cluster.
if ARGV[1] == 'replace' then redis.call('DEL', KEYS[1]) end
local n = tonumber(ARGV[2])
if n > 0 then redis.call('HSET', KEYS[1], unpack(ARGV, 3, 2 + 2 * n)) end
if #ARGV > 2 + 2 * n then redis.call('HDEL', KEYS[1], unpack(ARGV, 3 + 2 * n)) end
return 1
"""


@dataclass(frozen=True, slots=True)
class _Window:
    spec: AggregateSpec
    prefix: str
    size: int
    per_key: int
    daily: bool


@lru_cache(maxsize=256)
def _windows(needs: Needs) -> tuple[tuple[_Window, ...], tuple[str, ...]]:
    windows = []
    last = []
    for spec in needs.aggregates:
        if spec.fn == "last":
            last.append(spec.event)
            continue
        daily = spec.window_seconds > HOURLY_MAX_WINDOW
        prefix = spec.event if spec.prop is None else f"{spec.event}.{spec.prop}"
        windows.append(
            _Window(
                spec,
                prefix,
                DAY if daily else HOUR,
                DAYS_PER_KEY if daily else HOURS_PER_KEY,
                daily,
            )
        )
    return tuple(windows), tuple(last)


def read_command(customer_id: str, needs: Needs, now: float) -> tuple[list[str], list[Any]]:
    """KEYS and ARGV of `READ_LUA` for one decision."""
    windows, last = _windows(needs)
    key_list = [keys.profile(customer_id), keys.last_seen(customer_id)]
    args: list[Any] = [len(last), *last, len(windows)]
    for w in windows:
        first = int((now - w.spec.window_seconds) // w.size)
        final = int(now // w.size)
        first_group = first // w.per_key
        # The last argument is where this window's keys start (Lua indexes KEYS from 1).
        args += [w.spec.fn, w.prefix, first, final, w.per_key, len(key_list) + 1]
        bucket_key = keys.daily_buckets if w.daily else keys.hourly_buckets
        for group in range(first_group, final // w.per_key + 1):
            key_list.append(bucket_key(customer_id, group))
    args.append(len(needs.capped_actions))
    for action, window in needs.capped_actions:
        key_list.append(keys.contacts(customer_id, action))
        args.append(repr(now - window))
    for action, *_ in needs.fatigued_actions:
        key_list.append(keys.rejections(customer_id, action))
    args.append(len(needs.fatigued_actions))
    return key_list, args


def parse_read(
    reply: list[Any], needs: Needs
) -> tuple[Any, dict[str, Any], dict[str, int], dict[str, list[float]]]:
    """(raw profile pairs, aggregates by key, contact counts, rejection times) from a read reply."""
    windows, _ = _windows(needs)
    raw_profile, last_vals, window_vals, caps_raw, rej_raw = reply
    aggregates: dict[str, Any] = {}
    for w, value in zip(windows, window_vals, strict=True):
        aggregates[w.spec.key] = float(value) if value is not None else None
    specs_last = [s for s in needs.aggregates if s.fn == "last"]
    for spec, value in zip(specs_last, last_vals, strict=True):
        aggregates[spec.key] = float(value) if value is not None else None
    caps = {action: int(n) for (action, _), n in zip(needs.capped_actions, caps_raw, strict=True)}
    rejections: dict[str, list[float]] = {}
    for (action, *_), pairs in zip(needs.fatigued_actions, rej_raw, strict=True):
        rejections[action] = sorted(float(pairs[i + 1]) for i in range(0, len(pairs), 2))
    return raw_profile, aggregates, caps, rejections


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
        keys.hourly_buckets(customer_id, hour_key),
        keys.daily_buckets(customer_id, block),
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

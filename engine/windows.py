"""Event windows and the one-command read of a decision, as Redis Lua scripts.

Buckets. Every event increments an hourly bucket and a daily bucket: a count
per event type, and a sum, minimum and maximum per numeric property. Hourly
buckets live in one hash per customer per day (`…:eh:<day>`, expiring after
8 days); daily buckets in one hash per customer per 32-day block
(`…:ed:<block>`, expiring after 400 days). Expiry of whole keys is what keeps
memory bounded without any sweeping.

A window of W at time `now` uses hourly buckets when W ≤ 7 days, else daily
ones, and covers every bucket from the one containing `now - W` to the one
containing `now`: exact to one bucket at the window's old edge (up to an hour
or a day more than W is counted, never less).

The read. `READ_LUA` fetches, in one EVALSHA on one shard, everything a plan's
`Needs` ask for: the profile hash, last-seen times, each window's aggregate
(computed server-side, so only numbers come back), contact counts within each
cap window, and recent rejection times. One command, one small reply.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from engine import keys
from engine.plan import AggregateSpec, Needs

HOUR = 3600
DAY = 86400
HOURLY_MAX_WINDOW = 7 * DAY
HOURS_PER_KEY = 24
DAYS_PER_KEY = 32
HOURLY_TTL = 8 * DAY + HOUR
DAILY_TTL = 400 * DAY + DAYS_PER_KEY * DAY
EVENT_ID_TTL = 2 * DAY

INGEST_LUA = """
-- KEYS: hourly hash, daily hash, last-seen hash, event-id zset
-- ARGV: event id ('' = none), ts, type, hour, day, hourly ttl, daily ttl, id ttl, [prop, value]...
local eid = ARGV[1]
local ts = tonumber(ARGV[2])
if eid ~= '' then
  if redis.call('ZSCORE', KEYS[4], eid) then return 0 end
  redis.call('ZADD', KEYS[4], ts, eid)
  redis.call('ZREMRANGEBYSCORE', KEYS[4], '-inf', ts - tonumber(ARGV[8]))
  redis.call('EXPIRE', KEYS[4], ARGV[8])
end
local etype, hour, day = ARGV[3], ARGV[4], ARGV[5]
local function bump(key, bucket)
  redis.call('HINCRBY', key, etype .. '|' .. bucket, 1)
  local i = 9
  while i <= #ARGV do
    local field = etype .. '.' .. ARGV[i] .. '|' .. bucket
    local v = tonumber(ARGV[i + 1])
    redis.call('HINCRBYFLOAT', key, field, ARGV[i + 1])
    local lo = redis.call('HGET', key, field .. '|min')
    if not lo or v < tonumber(lo) then redis.call('HSET', key, field .. '|min', ARGV[i + 1]) end
    local hi = redis.call('HGET', key, field .. '|max')
    if not hi or v > tonumber(hi) then redis.call('HSET', key, field .. '|max', ARGV[i + 1]) end
    i = i + 2
  end
end
bump(KEYS[1], hour)
bump(KEYS[2], day)
redis.call('EXPIRE', KEYS[1], ARGV[6])
redis.call('EXPIRE', KEYS[2], ARGV[7])
local seen = tonumber(redis.call('HGET', KEYS[3], etype) or '-1')
if ts > seen then redis.call('HSET', KEYS[3], etype, ARGV[2]) end
redis.call('EXPIRE', KEYS[3], ARGV[7])
return 1
"""

READ_LUA = """
-- KEYS: profile, last-seen, then bucket hashes, cap zsets, rejection zsets (see windows.py)
-- ARGV: n_last, last names..., n_windows, per window 8 args, n_caps, cap 'since' values...,
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
  local fn, prefix, count_prefix = ARGV[a], ARGV[a + 1], ARGV[a + 2]
  local first, last = tonumber(ARGV[a + 3]), tonumber(ARGV[a + 4])
  local per_key, first_group, key0 = tonumber(ARGV[a + 5]), tonumber(ARGV[a + 6]), tonumber(ARGV[a + 7])
  a = a + 8
  local suffix = ''
  if fn == 'min' then suffix = '|min' elseif fn == 'max' then suffix = '|max' end
  local acc, count = nil, 0
  for b = first, last do
    local key = KEYS[key0 + math.floor(b / per_key) - first_group]
    local v = redis.call('HGET', key, prefix .. '|' .. string.format('%d', b) .. suffix)
    if v then
      local x = tonumber(v)
      if fn == 'min' then
        if acc == nil or x < acc then acc = x end
      elseif fn == 'max' then
        if acc == nil or x > acc then acc = x end
      else
        acc = (acc or 0) + x
      end
    end
    if fn == 'avg' then
      local c = redis.call('HGET', key, count_prefix .. '|' .. string.format('%d', b))
      if c then count = count + tonumber(c) end
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


@dataclass(frozen=True, slots=True)
class _Window:
    spec: AggregateSpec
    prefix: str
    count_prefix: str
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
                spec.event,
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
        args += [w.spec.fn, w.prefix, w.count_prefix, first, final, w.per_key, first_group]
        args.append(len(key_list) + 1)  # Lua indexes KEYS from 1
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


def ingest_command(
    customer_id: str,
    event_type: str,
    ts: float,
    properties: Mapping[str, Any],
    event_id: str | None,
) -> tuple[list[str], list[Any]]:
    """KEYS and ARGV of `INGEST_LUA` for one event."""
    hour = int(ts // HOUR)
    day = int(ts // DAY)
    key_list = [
        keys.hourly_buckets(customer_id, hour // HOURS_PER_KEY),
        keys.daily_buckets(customer_id, day // DAYS_PER_KEY),
        keys.last_seen(customer_id),
        keys.event_ids(customer_id),
    ]
    args: list[Any] = [event_id or "", repr(float(ts)), event_type, hour, day]
    args += [HOURLY_TTL, DAILY_TTL, EVENT_ID_TTL]
    for name, value in properties.items():
        if isinstance(value, int | float) and not isinstance(value, bool):
            args += [name, repr(float(value))]
    return key_list, args

"""Merging one customer's event windows into another's (identity stitching, migration).

`merge_customer_windows(redis, source, target)` adds every bucket of the
source customer's series to the target's, bucket by bucket (counts and sums
add, minima and maxima combine), and keeps the newer last-seen time of each
event type (the same hash's `l` field). The target's side runs as one Lua
script on the target's hash, so concurrent ingestion into the target is
never lost and the merge works on Redis Cluster; the source is read first
with one HGETALL and left as it is (deleting it is the caller's decision, e.g.
`ProfileStore.erase`).

Merging the same source twice counts it twice. Identity stitching therefore
does not call `merge_customer_windows`: `engine.store.merge` runs the same
series merge (`LUA_MERGE_SERIES`) with a mark per source key set in the same
script, so its retries count nothing twice.
"""

from __future__ import annotations

from typing import Any

from arbiter.engine.store import keys, series, windows

# Shared with the migration script: merge one series' records (ARGV blob) into a field.
LUA_MERGE_SERIES = """
local function merge_series(key, f, src)
  local size = 8
  if string.find(f, '.', 1, true) then size = 32 end
  if string.find(f, '/', 1, true) then size = 16 end
  local blob = redis.call('HGET', key, f) or ''
  for p = 1, #src - size + 1, size do
    local rec = string.sub(src, p, p + size - 1)
    local bucket = struct.unpack('<I4', rec)
    if size == 16 then
      -- Per value; the bucket's cap holds for the merged records too (overflow past it).
      blob = put_key(blob, bucket, string.sub(rec, 9, 16), struct.unpack('<I4', rec, 5))
    elseif size == 8 then
      local n = struct.unpack('<I4', rec, 5)
      blob = put(blob, 8, bucket, function(old) return count_rec(old, bucket, n) end)
    else
      local _, n, sum, lo, hi = struct.unpack('<I4I4ddd', rec)
      blob = put(blob, 32, bucket, function(old) return prop_rec(old, bucket, n, sum, lo, hi) end)
    end
  end
  redis.call('HSET', key, f, blob)
end
local function extend_expiry(key, at)
  local was = tonumber(redis.call('HGET', key, 'x') or '0')
  if at > was then
    redis.call('HSET', key, 'x', at)
    redis.call('EXPIREAT', key, at)
  end
end
"""

MERGE_LUA = (
    series.LUA_SERIES
    + windows.LUA_LAST_SEEN
    + LUA_MERGE_SERIES
    + """
-- KEYS: target window hash
-- ARGV: expiry of the source's buckets ('' = none), the source's ttl (-1 none),
--       the source's last-seen times (field `l`, '' none), n series, (field, records)...
local a = 5
for i = 1, tonumber(ARGV[4]) do
  merge_series(KEYS[1], ARGV[a], ARGV[a + 1])
  a = a + 2
end
seen_merge(KEYS[1], ARGV[3])
if ARGV[1] ~= '' then extend_expiry(KEYS[1], tonumber(ARGV[1])) end
-- And as long as the source's last-seen times (its ttl may outlast its x).
local ttl = tonumber(ARGV[2])
if ttl > 0 and redis.call('TTL', KEYS[1]) < ttl then redis.call('EXPIRE', KEYS[1], ttl) end
return 1
"""
)


async def merge_customer_windows(redis: Any, source_id: str, target_id: str) -> int:
    """Add `source_id`'s event windows and last-seen times to `target_id`'s; returns series merged.

    The source is left untouched. Caps, rejections, event ids and the
    profile are not windows and are not merged here.
    """
    raw = await redis.hgetall(keys.windows(source_id))
    ttl = await redis.ttl(keys.windows(source_id))
    fields = series.fields_of(raw)
    seen = raw.get(windows.LAST_SEEN_FIELD.encode(), b"")
    if not fields and not seen:
        return 0
    expiry = raw.get(b"x", b"")
    args: list[Any] = [expiry, ttl, seen, len(fields)]
    for f in fields:
        args += [f, raw[f.encode()]]
    await redis.eval(MERGE_LUA, 1, keys.windows(target_id), *args)
    return len(fields)

"""Adding one id's event windows into another's: the only window-layout code of identity stitching.

When an anonymous id is linked to a customer (`engine.store.identity`), its
event history is added into the customer's. Everything that depends on how
`engine.store.windows` lays buckets out lives here, so a new layout changes
this module and its tests, and nothing else of the stitching:

- `window_sources(anonymous_id, now)`: the names of the anonymous id's keys
  that may hold window data at `now` (hourly and daily bucket hashes that a
  window could still read, last-seen times, recent event ids). Computed, not
  scanned: a SCAN walks a node's whole keyspace, too slow for every login.
- `MERGE_WINDOWS_LUA` and `merge_command(...)`: add one source key's content
  (read by the caller from the anonymous id's slot) into the same-named key
  of the customer, in the customer's slot, atomically.

How each kind adds up:

| key | rule | retried twice |
|---|---|---|
| bucket hash (`eh:`, `ed:`) | counts, sums and `|n` added; `|min` the smaller, `|max` the larger | counted once: a mark per source key, set in the same script |
| last-seen hash | the newer time per event type | the same result |
| event ids | union, the later arrival kept | the same result |

The mark set (`keys.merge_marks(customer, anonymous)`) expires no earlier
than the source keys it stands for, so a source key that was added but not
yet deleted (an interrupted merge) is never added again, however late the
retry.
"""

from __future__ import annotations

from typing import Any

from arbiter.engine.store import keys, windows

MERGE_WINDOWS_LUA = """
-- KEYS[1] the customer's key, KEYS[2] the customer's mark set for this anonymous id
-- ARGV: kind ('buckets' | 'seen' | 'eids'), mark, source expiry (ms epoch, -1 none), now (ms),
--       then field/member, value/score pairs
local kind, mark, expire_at = ARGV[1], ARGV[2], tonumber(ARGV[3])
local now_ms = tonumber(ARGV[4])
-- Expiries: a key this script creates gets `at`; an existing one keeps the later of
-- its own and `at` (one without expiry keeps none).
local existed = {redis.call('EXISTS', KEYS[1]) == 1, redis.call('EXISTS', KEYS[2]) == 1}
local function later(i, at)
  local ttl = redis.call('PTTL', KEYS[i])
  if ttl == -2 then return end
  if not existed[i] or (ttl ~= -1 and now_ms + ttl < at) then
    redis.call('PEXPIREAT', KEYS[i], at)
  end
end
if kind == 'buckets' then
  if redis.call('SISMEMBER', KEYS[2], mark) == 1 then return 0 end
  for i = 5, #ARGV, 2 do
    local field, v = ARGV[i], ARGV[i + 1]
    local tail = string.sub(field, -4)
    if tail == '|min' or tail == '|max' then
      local cur = redis.call('HGET', KEYS[1], field)
      local keep = not cur
        or (tail == '|min' and tonumber(v) < tonumber(cur))
        or (tail == '|max' and tonumber(v) > tonumber(cur))
      if keep then redis.call('HSET', KEYS[1], field, v) end
    else
      -- Counts stay integers: HINCRBYFLOAT prints 5, not 5.0, so HINCRBY still works after.
      redis.call('HINCRBYFLOAT', KEYS[1], field, v)
    end
  end
  redis.call('SADD', KEYS[2], mark)
  -- The mark outlives its source key (by a day), whatever the order marks are set in.
  if expire_at < 0 then redis.call('PERSIST', KEYS[2]) else later(2, expire_at + 86400000) end
elseif kind == 'seen' then
  for i = 5, #ARGV, 2 do
    local cur = redis.call('HGET', KEYS[1], ARGV[i])
    if not cur or tonumber(ARGV[i + 1]) > tonumber(cur) then
      redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])
    end
  end
elseif kind == 'eids' then
  for i = 5, #ARGV, 2 do
    redis.call('ZADD', KEYS[1], 'GT', ARGV[i + 1], ARGV[i])
  end
else
  return redis.error_reply('unknown merge kind ' .. kind)
end
-- The later of the two expiries (bucket hashes: the same one, fixed by the key name).
if expire_at >= 0 then later(1, expire_at) end
return 1
"""


def window_sources(anonymous_id: str, now: float) -> list[tuple[str, str]]:
    """(key, kind) of every key of `anonymous_id` that may hold window data at `now`.

    Kinds: 'buckets' (a hash read with HGETALL), 'seen' (hash), 'eids'
    (sorted set). Bucket hashes whose expiry has passed are not listed; a day
    of margin on each side covers clock skew and events stamped up to five
    minutes ahead.
    """
    today = int(now // windows.DAY)
    out: list[tuple[str, str]] = []
    first_day = today - windows.HOURLY_MAX_WINDOW // windows.DAY - 2
    for day in range(first_day, today + 2):
        if windows.hourly_expire_at(day) > now:
            out.append((keys.hourly_buckets(anonymous_id, day), "buckets"))
    block_now = today // windows.DAYS_PER_KEY
    span = windows.MAX_WINDOW // (windows.DAYS_PER_KEY * windows.DAY) + 2
    for block in range(block_now - span, block_now + 2):
        if windows.daily_expire_at(block) > now:
            out.append((keys.daily_buckets(anonymous_id, block), "buckets"))
    out.append((keys.last_seen(anonymous_id), "seen"))
    out.append((keys.event_ids(anonymous_id), "eids"))
    return out


def read_source(pipe: Any, key: str, kind: str) -> None:
    """Queue the reads of one source key on `pipe`: its content, then its PTTL."""
    if kind == "eids":
        pipe.zrange(key, 0, -1, withscores=True)
    else:
        pipe.hgetall(key)
    pipe.pttl(key)


def flatten(kind: str, content: Any) -> list[Any]:
    """The content read by `read_source`, as the flat pairs `MERGE_WINDOWS_LUA` takes."""
    if kind == "eids":
        return [x for member, score in content for x in (member, repr(float(score)))]
    return [x for kv in content.items() for x in kv]


def merge_command(
    customer_id: str,
    anonymous_id: str,
    source_key: str,
    kind: str,
    content: Any,
    pttl_ms: int,
    now_ms: int,
) -> tuple[list[str], list[Any]]:
    """KEYS and ARGV of `MERGE_WINDOWS_LUA` adding one source key into the customer's."""
    dest = keys.rekey(source_key, anonymous_id, customer_id)
    marks = keys.merge_marks(customer_id, anonymous_id)
    # Braces in ids are escaped in key names, so the first "}:" ends the hash tag.
    mark = source_key.split("}:", 1)[1]
    expire_at = now_ms + pttl_ms if pttl_ms >= 0 else -1
    return [dest, marks], [kind, mark, expire_at, now_ms, *flatten(kind, content)]

"""Adding one id's event windows into another's: the only window-layout code of identity stitching.

When an anonymous id is linked to a customer (`engine.store.identity`), its
event history is added into the customer's. Everything that depends on how
`engine.store.windows` lays buckets out lives here, so a new layout changes
this module and its tests, and nothing else of the stitching:

- `window_sources(anonymous_id, now)`: the names of the anonymous id's keys
  that may hold window data at `now`: its window hash (layout 2, one per
  id; last-seen times are fields of it since layout 3), any layout-1 bucket
  hashes not yet converted by `arbiter migrate` (`engine.store.layout1`:
  computed names, not scanned: a SCAN walks a node's whole keyspace, too
  slow for every login), a layout-2 last-seen hash not yet converted, recent
  event ids.
- `MERGE_WINDOWS_LUA` and `merge_command(...)`: add one source key's content
  (read by the caller from the anonymous id's slot) into the customer's
  window hash or same-named key, in the customer's slot, atomically.

How each kind adds up:

| key | rule | retried twice |
|---|---|---|
| window hash (`w`, layouts 2 and 3) | every series merged record by record (`window_merge.LUA_MERGE_SERIES`: counts and sums added, the smaller minimum, the larger maximum); the newer last-seen time per event type (field `l`); the later expiry (`x`) | counted once: a mark per source key, set in the same script |
| layout-1 hash (`eh:`, `ed:`) | converted and merged into the customer's window hash the same way | counted once: marked under the name layout 1's merge used, so a merge interrupted before the upgrade and retried after it skips what it had added |
| last-seen hash (layout 2) | the newer time per event type, into the window hash's `l` field; the later expiry | the same result |
| event ids | union, the later arrival kept | the same result |

The mark set (`keys.merge_marks(customer, anonymous)`) expires no earlier
than the source keys it stands for, so a source key that was added but not
yet deleted (an interrupted merge) is never added again, however late the
retry. No write reaches the anonymous id's keys once it is linked (the
scripts are alias-aware), so a marked source never grows afterwards.
"""

from __future__ import annotations

from typing import Any

from arbiter.engine.store import keys, layout1, series, windows
from arbiter.engine.store.window_merge import LUA_MERGE_SERIES

# Kinds of `window_sources` entries (the caller reads and applies them through this module).
KINDS = ("series", "h", "d", "seen", "eids")

#: Lua: `later(i, at)` gives KEYS[i] the expiry `at` if the script creates it, else
#: the later of its own and `at` (a key without expiry keeps none). Needs `now_ms`
#: defined, and is used before the script writes KEYS[1] or KEYS[2].
LUA_KEEP_LATER_EXPIRY = """
local existed = {redis.call('EXISTS', KEYS[1]) == 1, redis.call('EXISTS', KEYS[2]) == 1}
local function later(i, at)
  local ttl = redis.call('PTTL', KEYS[i])
  if ttl == -2 then return end
  if not existed[i] or (ttl ~= -1 and now_ms + ttl < at) then
    redis.call('PEXPIREAT', KEYS[i], at)
  end
end
"""

MERGE_WINDOWS_LUA = (
    series.LUA_SERIES
    + windows.LUA_LAST_SEEN
    + LUA_MERGE_SERIES
    + layout1.LUA_ADD_LAYOUT1
    + f"""
local DAY, MAX_WINDOW = {windows.DAY}, {windows.MAX_WINDOW}
"""
    + """
-- KEYS[1] the customer's key, KEYS[2] the customer's mark set for this anonymous id
-- ARGV: kind ('series' | 'h' | 'd' | 'seen' | 'eids'), mark, source expiry (ms epoch,
--       -1 none), now (ms), then field/member, value/score pairs
local kind, mark, expire_at = ARGV[1], ARGV[2], tonumber(ARGV[3])
local now_ms = tonumber(ARGV[4])
"""
    + LUA_KEEP_LATER_EXPIRY
    + """if kind == 'series' or kind == 'h' or kind == 'd' then
  if redis.call('SISMEMBER', KEYS[2], mark) == 1 then return 0 end
  if kind == 'series' then
    for i = 5, #ARGV, 2 do
      -- The window hash's own expiry field is not a series: the later one is kept below.
      -- Last-seen times (`l`) keep the newer per event type.
      if ARGV[i] == 'l' then seen_merge(KEYS[1], ARGV[i + 1])
      elseif ARGV[i] ~= 'x' then merge_series(KEYS[1], ARGV[i], ARGV[i + 1]) end
    end
    for i = 5, #ARGV, 2 do
      if ARGV[i] == 'x' then extend_expiry(KEYS[1], tonumber(ARGV[i + 1])) end
    end
    -- And as long as the source's last-seen times (its expiry may be later than its x).
    if expire_at >= 0 then later(1, expire_at) end
  else
    local flat = {}
    for i = 5, #ARGV do flat[#flat + 1] = ARGV[i] end
    local day = add_layout1(KEYS[1], kind .. ':', flat, {})
    -- As `windows.expire_at`: the hash goes when its newest day has left the longest window.
    if day then extend_expiry(KEYS[1], (day + 1) * DAY + MAX_WINDOW + DAY) end
  end
  redis.call('SADD', KEYS[2], mark)
  -- The mark outlives its source key (by a day), whatever the order marks are set in.
  if expire_at < 0 then redis.call('PERSIST', KEYS[2]) else later(2, expire_at + 86400000) end
  return 1
elseif kind == 'seen' then
  -- Window layout 2's last-seen hash, into the customer's window hash (field `l`);
  -- the hash lives at least as long as the old one would have (below).
  local blob, changed = redis.call('HGET', KEYS[1], 'l') or '', false
  for i = 5, #ARGV, 2 do
    local put = seen_put(blob, ARGV[i], tonumber(ARGV[i + 1]))
    if put then blob, changed = put, true end
  end
  if changed then redis.call('HSET', KEYS[1], 'l', blob) end
elseif kind == 'eids' then
  for i = 5, #ARGV, 2 do
    redis.call('ZADD', KEYS[1], 'GT', ARGV[i + 1], ARGV[i])
  end
else
  return redis.error_reply('unknown merge kind ' .. kind)
end
-- The later of the two expiries.
if expire_at >= 0 then later(1, expire_at) end
return 1
"""
)


def window_sources(anonymous_id: str, now: float) -> list[tuple[str, str]]:
    """(key, kind) of every key of `anonymous_id` that may hold window data at `now`.

    Kinds: 'series' (the layout-2 window hash), 'd' and 'h' (layout-1 daily
    and hourly bucket hashes, read with HGETALL), 'seen' (hash), 'eids'
    (sorted set).
    """
    out = [(keys.windows(anonymous_id), "series")]
    out += layout1.keys_of(anonymous_id, now)
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
    if kind in ("h", "d", "seen"):
        # Layout 1's buckets and layout 2's last-seen hash are converted on the way in.
        dest = keys.windows(customer_id)
    else:
        dest = keys.rekey(source_key, anonymous_id, customer_id)
    marks = keys.merge_marks(customer_id, anonymous_id)
    # Braces in ids are escaped in key names, so the first "}:" ends the hash tag.
    mark = source_key.split("}:", 1)[1]
    expire_at = now_ms + pttl_ms if pttl_ms >= 0 else -1
    return [dest, marks], [kind, mark, expire_at, now_ms, *flatten(kind, content)]

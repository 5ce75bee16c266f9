"""Event windows as layout 1 stored them, as far as they still matter after the upgrade.

Layout 1 kept a hash per customer per day of hourly buckets (`…:eh:<day>`)
and per 32-day block of daily buckets (`…:ed:<block>`), a field per bucket
and figure (`<event>|<bucket>`, `<event>.<prop>|<bucket>[|n|min|max]`, and
`|all` totals). Nothing writes it any more; two readers remain, and they
share this module:

- `arbiter migrate` (`engine.store.window_migration`) converts a customer's
  layout-1 hashes into its layout-2 hash;
- identity stitching (`engine.store.merge`) adds an anonymous id's layout-1
  hashes, if it still has any, straight into the customer's layout-2 hash,
  marked under the same names as layout 1's own merge marked them, so a
  merge interrupted before the upgrade and retried after it counts each
  hash once.

`LUA_ADD_LAYOUT1` needs `series.LUA_SERIES` and
`window_merge.LUA_MERGE_SERIES` before it in the script.
"""

from __future__ import annotations

from arbiter.engine.store import keys

HOUR = 3600
DAY = 86400
_HOURLY_MAX_WINDOW = 7 * DAY
_MAX_WINDOW = 400 * DAY
DAYS_PER_KEY = 32
MARKERS = {":eh:": "h", ":ed:": "d"}

# add_layout1(target, prefix, flat, touched): add one layout-1 hash's fields (`flat`, as
# HGETALL returns them) into the series of `target` ('h:' or 'd:' series by `prefix`);
# marks every series written in `touched`; returns the newest day with data (or nil).
LUA_ADD_LAYOUT1 = """
local function add_layout1(target, prefix, flat, touched)
  local counts, props = {}, {}
  local newest_day = nil
  for i = 1, #flat, 2 do
    local name, bucket, suffix = string.match(flat[i], '^(.*)|(%d+)(.*)$')
    if name then  -- '|all' totals have no bucket number and are not needed
      bucket = tonumber(bucket)
      local day = bucket
      if prefix == 'h:' then day = math.floor(bucket / 24) end
      if newest_day == nil or day > newest_day then newest_day = day end
      local f = prefix .. name
      local v = tonumber(flat[i + 1])
      if string.find(name, '.', 1, true) then
        props[f] = props[f] or {}
        local r = props[f][bucket] or {0, 0, nil, nil}
        if suffix == '' then r[2] = v
        elseif suffix == '|n' then r[1] = v
        elseif suffix == '|min' then r[3] = v
        elseif suffix == '|max' then r[4] = v end
        props[f][bucket] = r
      elseif suffix == '' then
        counts[f] = counts[f] or {}
        counts[f][bucket] = v
      end
    end
  end
  local function sorted_keys(t)
    local out = {}
    for b in pairs(t) do out[#out + 1] = b end
    table.sort(out)
    return out
  end
  for f, buckets in pairs(counts) do
    local parts = {}
    for _, b in ipairs(sorted_keys(buckets)) do
      parts[#parts + 1] = struct.pack('<I4I4', b, buckets[b])
    end
    merge_series(target, f, table.concat(parts))
    touched[f] = true
  end
  for f, buckets in pairs(props) do
    local parts = {}
    for _, b in ipairs(sorted_keys(buckets)) do
      local r = buckets[b]
      parts[#parts + 1] = struct.pack('<I4I4ddd', b, r[1], r[2], r[3] or r[2], r[4] or r[2])
    end
    merge_series(target, f, table.concat(parts))
    touched[f] = true
  end
  return newest_day
end
"""


def hourly_key(customer_id: str, day: int) -> str:
    """Layout 1's hash of one day's hourly buckets."""
    return f"{keys.tag(customer_id)}:eh:{day}"


def daily_key(customer_id: str, block: int) -> str:
    """Layout 1's hash of one 32-day block's daily buckets."""
    return f"{keys.tag(customer_id)}:ed:{block}"


def kind_of(key: str) -> tuple[str, str] | None:
    """(customer tag `arb:{…}`, 'h' or 'd') of a layout-1 bucket hash, else None."""
    for marker, kind in MARKERS.items():
        tag, sep, rest = key.rpartition(marker)
        if sep and tag.endswith("}") and rest.isdigit():
            return tag, kind
    return None


def keys_of(customer_id: str, now: float) -> list[tuple[str, str]]:
    """(key, 'd' or 'h') of every layout-1 hash of a customer that may still exist at `now`.

    Computed from layout 1's expiries (a hash lived until the longest window
    reading its newest bucket had passed it), not scanned: a SCAN walks a
    node's whole keyspace. Daily hashes first. A day of margin on each side
    covers clock skew and events stamped ahead.
    """
    today = int(now // DAY)
    out: list[tuple[str, str]] = []
    block_now = today // DAYS_PER_KEY
    span = _MAX_WINDOW // (DAYS_PER_KEY * DAY) + 2
    for block in range(block_now - span, block_now + 2):
        if (block + 1) * DAYS_PER_KEY * DAY + _MAX_WINDOW + DAY > now:
            out.append((daily_key(customer_id, block), "d"))
    for day in range(today - _HOURLY_MAX_WINDOW // DAY - 2, today + 2):
        if (day + 1) * DAY + _HOURLY_MAX_WINDOW + HOUR > now:
            out.append((hourly_key(customer_id, day), "h"))
    return out

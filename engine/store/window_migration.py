"""`arbiter migrate`: convert event windows written by layout 1 into layout 2.

Layout 1 kept a hash per customer per day of hourly buckets (`…:eh:<day>`)
and per 32-day block of daily buckets (`…:ed:<block>`), a field per bucket
and figure (`<event>|<bucket>`, `<event>.<prop>|<bucket>[|n|min|max]`, and
`|all` totals). Layout 2 (`engine.store.series`) keeps one hash per customer.

Per customer, one Lua script reads the old hashes, adds their buckets into
the new hash (which may already hold events ingested since the upgrade) and
deletes them, atomically: a customer is converted whole or not at all, so the
command can be stopped and run again, and writers still on the old layout
during a rolling upgrade only leave keys that the next run converts. Until a
customer is converted, decisions see only the events ingested since the
upgrade: run it right after upgrading (it converts thousands of customers a
second).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from arbiter.engine.store import keys, series, windows
from arbiter.engine.store.window_merge import LUA_MERGE_SERIES

MIGRATE_LUA = (
    series.LUA_SERIES
    + LUA_MERGE_SERIES
    + """
-- KEYS: the new window hash, then the customer's old bucket hashes
-- ARGV: 'h' or 'd' per old key (hourly or daily), then MAX_WINDOW, DAY
local counts, props = {}, {}
local newest_day = nil
for k = 2, #KEYS do
  local kind = ARGV[k - 1] .. ':'
  local flat = redis.call('HGETALL', KEYS[k])
  for i = 1, #flat, 2 do
    local prefix, bucket, suffix = string.match(flat[i], '^(.*)|(%d+)(.*)$')
    if prefix then  -- '|all' totals have no bucket number and are not needed
      bucket = tonumber(bucket)
      if kind == 'd:' and (newest_day == nil or bucket > newest_day) then newest_day = bucket end
      local f = kind .. prefix
      local v = tonumber(flat[i + 1])
      if string.find(prefix, '.', 1, true) then
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
end
local function sorted_keys(t)
  local out = {}
  for b in pairs(t) do out[#out + 1] = b end
  table.sort(out)
  return out
end
local n = 0
for f, buckets in pairs(counts) do
  local parts = {}
  for _, b in ipairs(sorted_keys(buckets)) do
    parts[#parts + 1] = struct.pack('<I4I4', b, buckets[b])
  end
  merge_series(KEYS[1], f, table.concat(parts))
  n = n + 1
end
for f, buckets in pairs(props) do
  local parts = {}
  for _, b in ipairs(sorted_keys(buckets)) do
    local r = buckets[b]
    parts[#parts + 1] = struct.pack('<I4I4ddd', b, r[1], r[2], r[3] or r[2], r[4] or r[2])
  end
  merge_series(KEYS[1], f, table.concat(parts))
  n = n + 1
end
if newest_day then
  local day = tonumber(ARGV[#KEYS + 1])
  extend_expiry(KEYS[1], (newest_day + 1) * day + tonumber(ARGV[#KEYS]) + day)
end
for k = 2, #KEYS do redis.call('DEL', KEYS[k]) end
return n
"""
)

_OLD_KINDS = {":eh:": "h", ":ed:": "d"}


@dataclass
class MigrationReport:
    """What `migrate_windows` did."""

    customers: int = 0
    old_keys: int = 0
    series: int = 0


def legacy_kind(key: str) -> tuple[str, str] | None:
    """(customer tag `arb:{…}`, 'h' or 'd') of a layout-1 bucket hash, else None."""
    for marker, kind in _OLD_KINDS.items():
        tag, sep, rest = key.rpartition(marker)
        if sep and tag.endswith("}") and rest.isdigit():
            return tag, kind
    return None


async def _legacy_keys(redis: Any, batch: int) -> AsyncIterator[str]:
    for marker in _OLD_KINDS:
        async for key in redis.scan_iter(match=f"{keys.PREFIX}:{{*}}{marker}*", count=batch):
            yield key.decode() if isinstance(key, bytes) else key


async def migrate_windows(
    redis: Any, *, dry_run: bool = False, batch: int = 1000
) -> MigrationReport:
    """Convert every customer's layout-1 bucket hashes; safe to stop and run again."""
    by_tag: dict[str, list[tuple[str, str]]] = {}
    async for key in _legacy_keys(redis, batch):
        found = legacy_kind(key)
        if found is not None:
            by_tag.setdefault(found[0], []).append((key, found[1]))
    report = MigrationReport()
    for tag, old in by_tag.items():
        report.customers += 1
        report.old_keys += len(old)
        if dry_run:
            continue
        key_list = [f"{tag}:w", *(k for k, _ in old)]
        args = [kind for _, kind in old] + [windows.MAX_WINDOW, windows.DAY]
        report.series += int(await redis.eval(MIGRATE_LUA, len(key_list), *key_list, *args))
    return report

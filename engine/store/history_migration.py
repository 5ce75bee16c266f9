"""`arbiter migrate`, second part: contact caps and rejections into the contact history hash.

Layout 1 of the contact history kept a sorted set per counter
(`keys.contacts`: `…:cap:<counter>`, `keys.rejections`: `…:rej:<name>`;
member = what made the record, score = its time). Layout 2
(`engine.store.contact_history`) keeps one hash per customer.

Per customer, one Lua script reads the old sorted sets, adds their records
into the hash (which may already hold contacts counted since the upgrade;
records are added by id, so one already there is not added twice), keeps the
later expiry and deletes the sets, atomically: the command can be stopped
and run again, and the sets a server still on the old version writes during
a rolling upgrade are converted by the next run. Until a customer is
converted, decisions count only the contacts made since the upgrade (a cap
could let one more contact through): run it right after upgrading.

A linked anonymous id's sets are converted into its own hash like any
other's; the identity merge (`Identities.identify` again) then adds that
hash to the customer's (and converts, on its way, any set it still finds).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from arbiter.engine.store import contact_history, keys

MIGRATE_HISTORY_LUA = (
    contact_history.LUA_HISTORY
    + """
-- KEYS: the contact history hash, then the customer's old sorted sets
-- ARGV: the history field of each old set
local function id_of(member)
  return (string.sub(redis.sha1hex(member), 1, 16):gsub('..', function(h)
    return string.char(tonumber(h, 16)) end))
end
local n = 0
for k = 2, #KEYS do
  local f = ARGV[k - 1]
  local cur = redis.call('HGET', KEYS[1], f) or ''
  local have, add = {}, {}
  for p = 1, #cur - 15, 16 do have[string.sub(cur, p + 8, p + 15)] = true end
  local flat = redis.call('ZRANGE', KEYS[k], 0, -1, 'WITHSCORES')
  for i = 1, #flat, 2 do
    local id = id_of(flat[i])
    if not have[id] then
      have[id] = true
      add[#add + 1] = struct.pack('<d', tonumber(flat[i + 1])) .. id
      n = n + 1
    end
  end
  if #add > 0 then redis.call('HSET', KEYS[1], f, cur .. table.concat(add)) end
  local ttl = redis.call('TTL', KEYS[k])
  if ttl > 0 then keep_ttl(KEYS[1], ttl) end
  redis.call('DEL', KEYS[k])
end
return n
"""
)

_MARKERS = {keys.LEGACY_CONTACTS: contact_history.CAP_PREFIX}
_MARKERS[keys.LEGACY_REJECTIONS] = contact_history.REJECTION_PREFIX


@dataclass
class HistoryMigrationReport:
    """What `migrate_history` did."""

    customers: int = 0
    old_keys: int = 0
    records: int = 0


def legacy_field(key: str) -> tuple[str, str] | None:
    """(customer tag `arb:{…}`, history field) of a layout-1 cap or rejection set, else None."""
    if not key.startswith(keys.PREFIX + ":{"):
        return None
    # Braces inside ids are escaped in key names, so the first '}' ends the tag.
    end = key.find("}")
    if end < 0:
        return None
    tag, rest = key[: end + 1], key[end + 1 :]
    for marker, prefix in _MARKERS.items():
        if rest.startswith(marker) and len(rest) > len(marker):
            return tag, prefix + rest[len(marker) :]
    return None


async def _legacy_keys(redis: Any, batch: int) -> AsyncIterator[str]:
    for marker in _MARKERS:
        async for key in redis.scan_iter(match=f"{keys.PREFIX}:{{*}}{marker}*", count=batch):
            yield key.decode() if isinstance(key, bytes) else key


async def migrate_history(
    redis: Any, *, dry_run: bool = False, batch: int = 1000
) -> HistoryMigrationReport:
    """Convert every customer's layout-1 cap and rejection sets; safe to stop and run again."""
    by_tag: dict[str, list[tuple[str, str]]] = {}
    async for key in _legacy_keys(redis, batch):
        found = legacy_field(key)
        if found is not None:
            by_tag.setdefault(found[0], []).append((key, found[1]))
    report = HistoryMigrationReport()
    for tag, old in by_tag.items():
        report.customers += 1
        report.old_keys += len(old)
        if dry_run:
            continue
        key_list = [tag + keys.HISTORY_SUFFIX, *(k for k, _ in old)]
        reply = await redis.eval(
            MIGRATE_HISTORY_LUA, len(key_list), *key_list, *(f for _, f in old)
        )
        report.records += int(reply)
    return report

"""`arbiter migrate`: convert event windows written by layout 1 into layout 2.

Layout 1 (`engine.store.layout1`) kept a hash per customer per day of hourly
buckets and per 32-day block of daily buckets. Layout 2 (`engine.store.series`)
keeps one hash per customer.

Per customer, one Lua script reads the old hashes, adds their buckets into
the new hash (which may already hold events ingested since the upgrade) and
deletes them, atomically: a customer is converted whole or not at all, so the
command can be stopped and run again, and writers still on the old layout
during a rolling upgrade only leave keys that the next run converts. Until a
customer is converted, decisions see only the events ingested since the
upgrade: run it right after upgrading (it converts thousands of customers a
second).

Linked ids. The script also checks the id's alias key (`engine.store.identity`)
and converts nothing for an anonymous id linked to a customer: its own hash is
read by nobody any more, so its old hashes (left by a merge interrupted before
the upgrade) go to its customer through the identity merge, which marks each
old hash under the name layout 1's merge used, so none is counted twice.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from arbiter.engine.store import keys, layout1, series, windows
from arbiter.engine.store.identity import Identities, redirect_of
from arbiter.engine.store.window_merge import LUA_MERGE_SERIES

MIGRATE_LUA = (
    series.LUA_SERIES
    + LUA_MERGE_SERIES
    + layout1.LUA_ADD_LAYOUT1
    + f"""
local DAY, MAX_WINDOW = {windows.DAY}, {windows.MAX_WINDOW}
"""
    + """
-- KEYS: the new window hash, then the customer's old bucket hashes, then its alias key
-- ARGV: 'h' or 'd' per old key (hourly or daily)
local alias = redis.call('GET', KEYS[#KEYS])
if alias then return {'@alias', alias} end  -- a linked id: its customer's merge adds them
local touched, newest_day = {}, nil
for k = 2, #KEYS - 1 do
  local day = add_layout1(KEYS[1], ARGV[k - 1] .. ':', redis.call('HGETALL', KEYS[k]), touched)
  if day and (newest_day == nil or day > newest_day) then newest_day = day end
end
if newest_day then extend_expiry(KEYS[1], (newest_day + 1) * DAY + MAX_WINDOW + DAY) end
for k = 2, #KEYS - 1 do redis.call('DEL', KEYS[k]) end
local n = 0
for _ in pairs(touched) do n = n + 1 end
return n
"""
)


@dataclass
class MigrationReport:
    """What `migrate_windows` did."""

    customers: int = 0
    old_keys: int = 0
    series: int = 0
    linked: int = 0  # linked anonymous ids whose old hashes went to their customer


def legacy_kind(key: str) -> tuple[str, str] | None:
    """(customer tag `arb:{…}`, 'h' or 'd') of a layout-1 bucket hash, else None."""
    return layout1.kind_of(key)


def _id_of(tag: str) -> str:
    """The id whose keys start with `tag` (the inverse of `keys.tag`)."""
    escaped = tag[len(keys.PREFIX) + 2 : -1]
    return escaped.replace("%7B", "{").replace("%7D", "}").replace("%25", "%")


async def _legacy_keys(redis: Any, batch: int) -> AsyncIterator[str]:
    for marker in layout1.MARKERS:
        async for key in redis.scan_iter(match=f"{keys.PREFIX}:{{*}}{marker}*", count=batch):
            yield key.decode() if isinstance(key, bytes) else key


async def migrate_windows(
    redis: Any, *, dry_run: bool = False, batch: int = 1000, now: float | None = None
) -> MigrationReport:
    """Convert every customer's layout-1 bucket hashes; safe to stop and run again.

    An anonymous id linked to a customer (`engine.store.identity`) is not
    converted into its own hash, which nobody reads any more: its old hashes
    are what an interrupted merge left, and the merge is completed instead
    (`Identities.identify` again, which adds them to the customer once).
    """
    by_tag: dict[str, list[tuple[str, str]]] = {}
    async for key in _legacy_keys(redis, batch):
        found = legacy_kind(key)
        if found is not None:
            by_tag.setdefault(found[0], []).append((key, found[1]))
    report = MigrationReport()
    identities = Identities(redis)
    for tag, old in by_tag.items():
        report.customers += 1
        report.old_keys += len(old)
        if dry_run:
            continue
        owner = _id_of(tag)
        key_list = [keys.windows(owner), *(k for k, _ in old), keys.alias(owner)]
        args = [kind for _, kind in old]
        reply = await redis.eval(MIGRATE_LUA, len(key_list), *key_list, *args)
        customer = redirect_of(reply)
        if customer is None:
            report.series += int(reply)
            continue
        # Caps and rejections need the rulesets' actions: the next identify of the pair
        # merges them (they wait on the anonymous id, read by nobody meanwhile).
        await identities.identify(owner, customer, (), time.time() if now is None else now)
        report.linked += 1
    return report

"""`arbiter migrate`, third part: last-seen times into the window hash (window layout 3).

Window layout 2 kept each customer's last-seen times in a hash of their own
(`keys.last_seen`: event type -> epoch seconds). Layout 3 keeps them as
the `l` field of the window hash (`engine.store.windows`), so a
decision reads them with the series in one `HMGET` and an event writes one
key less.

Per customer, one Lua script moves the old hash's times into the window hash
(keeping the newer of the two for a type that layout 3 already wrote since
the upgrade), extends the window hash's expiry to the old hash's if that is
later (its `x`, the newest daily bucket's, is left as it is), and deletes
the old hash, atomically: the command can be stopped and
run again, and an old hash a server still on layout 2 writes during a
rolling upgrade is moved by the next run. Until a customer is converted,
`last_seen(...)` sees only the events ingested since the upgrade: run it
right after upgrading.

Linked ids: an anonymous id linked to a customer converts nothing into its
own hash, which nobody reads any more: the identity merge
(`Identities.identify` again) moves its old hash into the customer's window
hash instead, as it does for every key of the id.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from arbiter.engine.store import keys, windows
from arbiter.engine.store.identity import Identities, guarded, redirect_of
from arbiter.engine.store.scripts import Call, eval_pipelined, script_sha

# The guard returns the customer of a linked id instead of running (engine.store.identity).
MIGRATE_SEEN_LUA = guarded(
    windows.LUA_LAST_SEEN
    + f"""
local LAST_SEEN_TTL = {windows.LAST_SEEN_TTL}
"""
    + """
-- KEYS: the window hash, the layout-2 last-seen hash (then the alias key, see the guard)
local flat = redis.call('HGETALL', KEYS[2])
if #flat == 0 then return 0 end
local blob, changed = redis.call('HGET', KEYS[1], 'l') or '', false
for i = 1, #flat, 2 do
  local put = seen_put(blob, flat[i], tonumber(flat[i + 1]))
  if put then blob, changed = put, true end
end
if changed then redis.call('HSET', KEYS[1], 'l', blob) end
-- The window hash lives at least as long as the old hash would have (its `x`, the
-- newest daily bucket's expiry, is left as it is; see engine.store.windows).
local ttl = redis.call('TTL', KEYS[2])
if ttl < 0 then ttl = LAST_SEEN_TTL end  -- (layout 2 always set one)
if redis.call('TTL', KEYS[1]) < ttl then redis.call('EXPIRE', KEYS[1], ttl) end
redis.call('DEL', KEYS[2])
return #flat / 2
"""
)
_SHA = script_sha(MIGRATE_SEEN_LUA)


@dataclass
class LastSeenMigrationReport:
    """What `migrate_last_seen` did."""

    customers: int = 0
    times: int = 0  # last-seen times moved
    linked: int = 0  # linked anonymous ids, whose old hash went to their customer


def _id_of(key: str) -> str | None:
    """The id whose layout-2 last-seen hash `key` is (the inverse of `keys.last_seen`)."""
    head = keys.PREFIX + ":{"
    if not key.startswith(head) or not key.endswith("}" + keys.LAST_SEEN_SUFFIX):
        return None
    escaped = key[len(head) : -len("}" + keys.LAST_SEEN_SUFFIX)]
    return escaped.replace("%7B", "{").replace("%7D", "}").replace("%25", "%")


async def _old_hashes(redis: Any, batch: int) -> AsyncIterator[str]:
    pattern = f"{keys.PREFIX}:{{*}}{keys.LAST_SEEN_SUFFIX}"
    async for key in redis.scan_iter(match=pattern, count=batch):
        yield key.decode() if isinstance(key, bytes) else key


async def migrate_last_seen(
    redis: Any, *, dry_run: bool = False, batch: int = 500, now: float | None = None
) -> LastSeenMigrationReport:
    """Move every customer's layout-2 last-seen hash into its window hash; safe to stop and
    run again."""
    ids = []
    async for key in _old_hashes(redis, batch):
        found = _id_of(key)
        if found is not None and keys.last_seen(found) == key:
            ids.append(found)
    report = LastSeenMigrationReport(customers=len(ids))
    if dry_run:
        return report
    at = time.time() if now is None else now
    identities = Identities(redis)
    for start in range(0, len(ids), batch):
        chunk = ids[start : start + batch]
        calls: list[Call] = [
            ([keys.windows(i), keys.last_seen(i), keys.alias(i)], []) for i in chunk
        ]
        replies = await eval_pipelined(redis, MIGRATE_SEEN_LUA, _SHA, calls)
        for owner, reply in zip(chunk, replies, strict=True):
            customer = redirect_of(reply)
            if customer is None:
                report.times += int(reply)
                continue
            # A linked id: the merge moves its old hash into the customer's window hash.
            await identities.identify(owner, customer, (), at)
            report.linked += 1
    return report

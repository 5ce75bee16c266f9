"""The learner's leader lease: one active learner per bandit.

A lease is a Redis key set if absent with an expiry (``PX``), holding the
holder's random token. :class:`LeaderLease` takes or extends it and releases
it, each in one Lua script so that only the holder can extend or delete it.
Pacing the renewals (every third of the lease) is the caller's business; see
`engine.learning.learner`. Publishing checks the same token inside its own script
(fencing, in `engine.learning.bandit_store.publish`).
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Any, Final, cast

from arbiter.engine.store.client import AsyncRedisClient

__all__ = ["LeaderLease"]

# Takes the lease if it is free or already ours (extending it); 1 if held now.
# "Already ours" matters after this learner dropped its work (a refused
# publish): it re-acquires at once instead of waiting out its own lease.
_LEASE_LUA: Final = """
local holder = redis.call('GET', KEYS[1])
if holder == false then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
if holder == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
"""
_RELEASE_LUA: Final = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


class LeaderLease:
    """The lease at ``key``, taken under ``token``; it does no I/O until used."""

    def __init__(self, redis: AsyncRedisClient, key: str, token: str) -> None:
        self.key = key
        self.token = token
        self._lease_script = redis.register_script(_LEASE_LUA)
        self._release_script = redis.register_script(_RELEASE_LUA)

    async def acquire(self, lease_ms: int) -> bool:
        """Take the lease for ``lease_ms`` if free, or extend it if ours; whether it is held now."""
        held = await cast(
            Awaitable[Any], self._lease_script(keys=[self.key], args=[self.token, lease_ms])
        )
        return int(held) == 1

    async def release(self) -> None:
        """Delete the lease if it is still ours (so a standby takes over at once)."""
        await cast(Awaitable[Any], self._release_script(keys=[self.key], args=[self.token]))

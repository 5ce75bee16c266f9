"""The writing side of the reward stream: one reward per (decision, action), never lost.

:func:`append_reward` appends a reward to ``keys.REWARD_STREAM`` and sets
the "already seen" marker of its (decision, action) in one Lua script, so
the two commit together: a write that fails leaves neither behind, and a
client's retry records the reward; a write that succeeded but whose reply
was lost leaves both, and the retry is answered as a duplicate. The marker
holds the accepted reward, so a retry can redo the idempotent follow-ups
(counting a rejection) that a failure may have cut short.

On Redis Cluster a script's keys must live in one slot: the marker's name
carries the stream's name as its hash tag (see ``keys.feedback_seen``).
"""

from __future__ import annotations

from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Any, Final, cast

from arbiter.engine.store import keys
from arbiter.engine.store.client import AsyncRedisClient

__all__ = ["RewardOutcome", "append_reward"]

# KEYS: marker, stream. ARGV: maxlen, decision id, action, reward, ts, marker ttl.
# XADD first: if it fails (out of memory, a wrong type), the script stops
# before the marker is set.
_APPEND_LUA: Final = """
local seen = redis.call('GET', KEYS[1])
if seen then
  return {0, seen}
end
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[1], '*',
  'decision_id', ARGV[2], 'action', ARGV[3], 'reward', ARGV[4], 'ts', ARGV[5])
redis.call('SET', KEYS[1], ARGV[4], 'EX', ARGV[6])
return {1, ARGV[4]}
"""


@dataclass(frozen=True)
class RewardOutcome:
    """What :func:`append_reward` did: appended now, or found already recorded."""

    appended: bool
    reward: float  # the reward on record: this one if appended, else the earlier one


async def append_reward(
    redis: AsyncRedisClient,
    decision_id: str,
    action: str,
    reward: float,
    ts: float,
    *,
    marker_ttl_s: int,
    stream_maxlen: int,
) -> RewardOutcome:
    """Append one reward unless this (decision, action) already has one; atomic.

    Raises the client's error when Redis cannot be reached; then either
    nothing was written or everything was (a lost reply), and calling again
    is safe.
    """
    script = redis.register_script(_APPEND_LUA)  # hashes the text; no I/O
    reply = await cast(
        Awaitable[Any],
        script(
            keys=[keys.feedback_seen(decision_id, action), keys.REWARD_STREAM],
            args=[stream_maxlen, decision_id, action, repr(float(reward)), repr(ts), marker_ttl_s],
        ),
    )
    appended, recorded = reply
    return RewardOutcome(appended=int(appended) == 1, reward=float(recorded))

"""The writing side of the reward stream: one reward per (decision, action), exactly once.

Every reward, whoever gives it (``POST /v1/feedback``, an event attributed
by `engine.learning.attribution`, a window that closes with 0), is appended
by one Lua script, :data:`APPEND_LUA`: it checks the "already rewarded"
marker of the (decision, action), and if absent appends the reward to
``keys.REWARD_STREAM`` and sets the marker, all in one step. So the check
and the append commit together: a write that fails leaves neither behind,
and a retry records the reward; a write that succeeded but whose reply was
lost leaves both, and the retry is answered as a duplicate. Two writers
racing on one decision (feedback and an event, two attributor workers)
append one reward: the first script to run. The marker holds the accepted
reward, so a retry can redo the idempotent follow-ups (counting a
rejection) that a failure may have cut short.

:func:`append_reward` writes one; :func:`append_command` is that write as a
command to send with others (the feedback route); :func:`append_rewards`
writes a batch in one pipelined round trip (the attributor).

On Redis Cluster a script's keys must live in one slot: the marker's name
carries the stream's name as its hash tag (see ``keys.feedback_seen``), so
every call lands on the stream's shard.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

from arbiter.engine.store import keys, raw_commands
from arbiter.engine.store.client import AsyncRedisClient
from arbiter.engine.store.scripts import eval_pipelined, script_sha

__all__ = [
    "APPEND_LUA",
    "SCRIPTS",
    "Reward",
    "RewardOutcome",
    "append_command",
    "append_reward",
    "append_rewards",
    "outcome_of",
]

# KEYS: marker, stream. ARGV: maxlen, decision id, action, reward, ts, marker ttl, source.
# XADD first: if it fails (out of memory, a wrong type), the script stops
# before the marker is set.
APPEND_LUA: Final = """
local seen = redis.call('GET', KEYS[1])
if seen then
  return {0, seen}
end
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[1], '*',
  'decision_id', ARGV[2], 'action', ARGV[3], 'reward', ARGV[4], 'ts', ARGV[5],
  'source', ARGV[7])
redis.call('SET', KEYS[1], ARGV[4], 'EX', ARGV[6])
return {1, ARGV[4]}
"""
_APPEND_SHA: Final = script_sha(APPEND_LUA)
#: The scripts :func:`append_command`'s commands call, for `raw_commands.send_scripted`.
SCRIPTS: Final = {_APPEND_SHA: APPEND_LUA}


@dataclass(frozen=True, slots=True)
class Reward:
    """One reward to append: for (decision, action), at ``ts``, given by ``source``.

    ``source`` is stored with the entry: ``feedback``, ``event`` or ``window``.
    """

    decision_id: str
    action: str
    reward: float
    ts: float
    source: str = "feedback"


@dataclass(frozen=True, slots=True)
class RewardOutcome:
    """What the append did: appended now, or found already recorded."""

    appended: bool
    reward: float  # the reward on record: this one if appended, else the earlier one


def _call(r: Reward, marker_ttl_s: int, stream_maxlen: int) -> tuple[list[str], list[Any]]:
    """KEYS and ARGV of :data:`APPEND_LUA` for one reward."""
    key_list = [keys.feedback_seen(r.decision_id, r.action), keys.REWARD_STREAM]
    args = [
        stream_maxlen,
        r.decision_id,
        r.action,
        repr(float(r.reward)),
        repr(r.ts),
        marker_ttl_s,
        r.source,
    ]
    return key_list, args


def _outcome(reply: Any) -> RewardOutcome:
    appended, recorded = reply
    return RewardOutcome(appended=int(appended) == 1, reward=float(recorded))


def append_command(r: Reward, *, marker_ttl_s: int, stream_maxlen: int) -> tuple[Any, ...]:
    """The ``EVALSHA`` of :data:`APPEND_LUA` for one reward, to send with other commands
    (`raw_commands.send_scripted` with :data:`SCRIPTS`); :func:`outcome_of` reads its reply.
    """
    key_list, args = _call(r, marker_ttl_s, stream_maxlen)
    return ("EVALSHA", _APPEND_SHA, len(key_list), *key_list, *args)


def outcome_of(reply: Any) -> RewardOutcome:
    """The outcome in the reply to an :func:`append_command`; raises an error reply."""
    if isinstance(reply, Exception):
        raise reply
    return _outcome(reply)


async def append_reward(
    redis: AsyncRedisClient,
    decision_id: str,
    action: str,
    reward: float,
    ts: float,
    *,
    marker_ttl_s: int,
    stream_maxlen: int,
    source: str = "feedback",
) -> RewardOutcome:
    """Append one reward unless this (decision, action) already has one; atomic.

    Raises the client's error when Redis cannot be reached; then either
    nothing was written or everything was (a lost reply), and calling again
    is safe.
    """
    # EVALSHA, and the script loaded only when Redis answers NOSCRIPT; sent raw
    # (`raw_commands`), without redis-py's per-command machinery.
    command = append_command(
        Reward(decision_id, action, reward, ts, source),
        marker_ttl_s=marker_ttl_s,
        stream_maxlen=stream_maxlen,
    )
    (reply,) = await raw_commands.send_scripted(redis, [command], SCRIPTS)
    return outcome_of(reply)


async def append_rewards(
    redis: AsyncRedisClient,
    rewards: Sequence[Reward],
    *,
    marker_ttl_s: int,
    stream_maxlen: int,
) -> list[RewardOutcome]:
    """:func:`append_reward` for a batch, in one pipelined round trip; outcomes in order.

    Each reward is its own script call, atomic on its own: if this raises
    (Redis unreachable, an error reply), some of the batch may be appended
    and the rest not, and calling again with the same batch appends exactly
    the rest (the others are duplicates).
    """
    calls = [_call(r, marker_ttl_s, stream_maxlen) for r in rewards]
    replies = await eval_pipelined(redis, APPEND_LUA, _APPEND_SHA, calls)
    return [_outcome(r) for r in replies]

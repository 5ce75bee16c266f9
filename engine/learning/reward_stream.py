"""A learner's reading side of the reward stream: its consumer group, claims and reads.

Each bandit reads ``keys.REWARD_STREAM`` through a consumer group of its own
(every bandit sees every reward). :class:`RewardGroup` creates the group,
takes over entries left pending by an earlier learner (XAUTOCLAIM), tidies
away the consumer names such learners leave behind, and reads new entries.
:func:`parse_reward` turns one entry into (decision id, action, reward).
What the entries teach, and when they are acknowledged, is `engine.learning.learner`'s
business.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Awaitable, Container
from typing import Any, Final, cast

from redis.exceptions import ResponseError

from arbiter.engine.store import keys, raw_commands
from arbiter.engine.store.client import AsyncRedisClient

__all__ = ["RewardGroup", "StreamEntry", "parse_reward", "stream_entries"]

_FORGET_CONSUMER_LUA: Final = """
if #redis.call('XPENDING', KEYS[1], ARGV[1], '-', '+', 1, ARGV[2]) == 0 then
  return redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], ARGV[2])
end
return -1
"""

StreamEntry = tuple[bytes, dict[bytes, bytes] | None]


class RewardGroup:
    """Consumer group ``group`` on the reward stream (or ``stream``), read as ``consumer``.

    Every ``claim_every`` seconds (and on the first read after
    :meth:`claim_all_next`) a read first takes over entries pending with any
    consumer for ``claim_idle_ms`` (or all of them); it does no I/O until used.
    """

    def __init__(
        self,
        redis: AsyncRedisClient,
        group: str,
        consumer: str,
        *,
        batch: int,
        claim_idle_ms: int,
        claim_every: float,
        stream: str = keys.REWARD_STREAM,
    ) -> None:
        self.redis = redis
        self.stream = stream
        self.group = group
        self.consumer = consumer
        self.batch = batch
        self.claim_idle_ms = claim_idle_ms
        self.claim_every = claim_every
        self._forget_script = redis.register_script(_FORGET_CONSUMER_LUA)
        self.reset()

    def reset(self) -> None:
        """Forget the claim schedule (the next read claims idle entries)."""
        self._must_claim_all = False
        self._next_claim = 0.0

    def claim_all_next(self) -> None:
        """Make the next read take over every pending entry, however briefly idle."""
        self._must_claim_all = True

    async def create(self) -> None:
        """Create the group (and the stream) unless it exists."""
        with contextlib.suppress(ResponseError):  # BUSYGROUP: it exists, which is fine
            # From the start of the stream: rewards sent before this bandit's
            # first learner existed are still worth learning.
            await self.redis.xgroup_create(self.stream, self.group, id="0", mkstream=True)

    async def read(self, inflight: Container[bytes]) -> list[StreamEntry]:
        """The next entries to handle: claimed ones first, then new ones.

        Claimed entries already in ``inflight`` (read, not yet acknowledged)
        are left out.
        """
        try:
            return await self._read_group(inflight)
        except ResponseError as exc:
            if "NOGROUP" not in str(exc):
                raise
            # The stream was deleted under us (FLUSHALL, a cleanup): start over.
            await self.create()
            return []

    async def _read_group(self, inflight: Container[bytes]) -> list[StreamEntry]:
        now = time.monotonic()
        if self._must_claim_all or now >= self._next_claim:
            min_idle = 0 if self._must_claim_all else self.claim_idle_ms
            self._must_claim_all = False
            self._next_claim = now + self.claim_every
            claimed = await self._claim(min_idle, inflight)
            await self._forget_idle_consumers()
            if claimed:
                return claimed
        # Sent raw (`raw_commands`): redis-py's XREADGROUP parsing (a dict per entry,
        # through its response callbacks) was most of what reading a reward cost.
        (reply,) = await raw_commands.send(
            self.redis,
            [("XREADGROUP", "GROUP", self.group, self.consumer, "COUNT", self.batch, "STREAMS",
              self.stream, ">")],
        )  # fmt: skip
        if isinstance(reply, Exception):
            raise reply
        return stream_entries(reply)

    async def _claim(self, min_idle_ms: int, inflight: Container[bytes]) -> list[StreamEntry]:
        """Take over entries pending with any consumer for at least ``min_idle_ms``."""
        out: list[StreamEntry] = []
        start: bytes | str = "0-0"
        while True:
            reply = await self.redis.xautoclaim(
                self.stream,
                self.group,
                self.consumer,
                min_idle_ms,
                start_id=start,
                count=self.batch,
            )
            start = reply[0]
            # Redis 6.2 answers (None, None) for an entry trimmed from the stream
            # while pending: there is no id left to learn from or acknowledge.
            out.extend(e for e in reply[1] if e[0] is not None and e[0] not in inflight)
            if start in (b"0-0", "0-0"):
                return out

    async def _forget_idle_consumers(self) -> None:
        """Delete consumers of earlier learners that hold nothing and have been idle a while.

        Every learner process reads under a consumer name of its own, so
        without this each restart would leave one more name in the group.
        """
        consumers = await self.redis.xinfo_consumers(self.stream, self.group)
        for info in consumers:
            name = info["name"]
            name = name.decode() if isinstance(name, bytes) else str(name)
            if name == self.consumer or info["pending"] or info["idle"] < self.claim_idle_ms:
                continue
            # Deleting a consumer drops its pending entries, so the check that it
            # has none is repeated atomically with the delete.
            await cast(
                Awaitable[Any],
                self._forget_script(keys=[self.stream], args=[self.group, name]),
            )


def stream_entries(reply: Any) -> list[StreamEntry]:
    """The entries of an XREAD/XREADGROUP reply: ``{stream: [[id, fields], ...]}`` (RESP3,
    what redis-py speaks by default), ``[[stream, [[id, fields], ...]], ...]`` (RESP2),
    or None.

    ``fields`` is the flat ``[name, value, ...]`` list Redis sends (a raw
    reply), or the dict redis-py's parser made of it (the reply of a Cluster
    pipeline), or None for an entry trimmed while pending.
    """
    if not reply:
        return []
    streams = reply.values() if isinstance(reply, dict) else (entries for _, entries in reply)
    out: list[StreamEntry] = []
    for entries in streams:
        for entry_id, fields in entries:
            if fields is None or isinstance(fields, dict):
                out.append((entry_id, fields))
            else:
                pairs = iter(fields)
                out.append((entry_id, dict(zip(pairs, pairs, strict=True))))
    return out


def parse_reward(fields: dict[bytes, bytes] | None) -> tuple[str, str, float] | None:
    """(decision id, action, reward) from a stream entry; None if it is not one."""
    if not fields:  # None: the entry was deleted from the stream while pending
        return None
    try:
        decision_id = fields[b"decision_id"].decode()
        action = fields[b"action"].decode()
        reward = float(fields[b"reward"])
    except (KeyError, ValueError):
        return None
    if not math.isfinite(reward):
        return None
    return decision_id, action, reward

"""Coalesce the reads of concurrent decisions into one Redis pipeline.

Every decision's read is a handful of plain commands on one customer's keys
(`engine.store.windows.read_commands`). Decisions that arrive in the same
event-loop iteration are sent together in one pipeline: one write, one read,
one parse loop, instead of one of each per decision. A lone decision still
goes out at once (the flush is scheduled with `call_soon`, not a timer), so
batching adds no latency.

The batch is written and its replies read by `raw_commands` (one
hiredis-packed write, replies read raw), not by redis-py's pipeline, whose
per-command bookkeeping cost more worker CPU than the commands cost Redis
(server CPU per decision 660 → 559 µs in one A/B run of
`python -m benchmarks.ab_commits`, benchmarks/RESULTS.md).

Plain commands, not a Lua script: Redis spends most of a small script's time
entering and leaving Lua (20 µs against 5.5 µs for the same reads sent plainly,
`python -m benchmarks.redis_cost`), and the reads need no atomicity: a cap is
exact because its contacts are counted by the write behind a decision, in one
script, not because the read sees one instant.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from redis.exceptions import ConnectionError as RedisConnectionError

from arbiter.engine.store import raw_commands

Command = tuple[Any, ...]
_Call = tuple[Sequence[Command], "asyncio.Future[list[Any]]"]


class ReadBatcher:
    """Sends the queued commands of concurrent reads together, on the running loop."""

    def __init__(self, redis: Any, deadline_s: float | None = None) -> None:
        """`deadline_s` bounds each batch as a whole (one timer per batch, not per reply)."""
        self.redis = redis
        self.deadline_s = deadline_s
        self._pending: list[_Call] = []
        self._scheduled = False
        self.batches = 0
        self.calls = 0

    def call(self, commands: Sequence[Command]) -> asyncio.Future[list[Any]]:
        """Queue one read; the future resolves to its replies, in order (or the Redis error)."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[list[Any]] = loop.create_future()
        self._pending.append((commands, fut))
        if not self._scheduled:
            self._scheduled = True
            loop.call_soon(self._flush)
        return fut

    def _flush(self) -> None:
        self._scheduled = False
        batch, self._pending = self._pending, []
        if batch:
            asyncio.get_running_loop().create_task(self._send(batch))

    async def _send(self, batch: list[_Call]) -> None:
        self.batches += 1
        self.calls += len(batch)
        try:
            async with asyncio.timeout(self.deadline_s):
                replies = await self._execute_with_recovery(batch)
        except Exception as exc:  # handed to every waiting decision
            replies = [exc] * len(batch)
        for (_, fut), reply in zip(batch, replies, strict=True):
            if fut.done():
                continue
            if isinstance(reply, BaseException):
                fut.set_exception(reply)
            else:
                fut.set_result(reply)

    async def _execute_with_recovery(self, batch: list[_Call]) -> list[Any]:
        for attempt in range(1, 4):
            try:
                return await self._execute(batch)
            except RedisConnectionError:
                # A pooled connection that died with an earlier Redis fails at once;
                # another try on a fresh connection still fits in the deadline.
                if attempt == 3:
                    raise
        raise AssertionError("unreachable")

    async def _execute(self, batch: list[_Call]) -> list[Any]:
        # One write, replies read without a timer each (`raw_commands`); `_send` bounds
        # the batch as a whole.
        flat = await raw_commands.send(self.redis, [c for commands, _ in batch for c in commands])
        out: list[Any] = []
        k = 0
        for commands, _ in batch:
            replies = flat[k : k + len(commands)]
            k += len(commands)
            error = next((r for r in replies if isinstance(r, Exception)), None)
            out.append(error if error is not None else replies)
        return out

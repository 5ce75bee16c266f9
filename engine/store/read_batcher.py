"""Coalesce the reads of concurrent decisions into one Redis pipeline.

Every decision's read is one EVALSHA. Decisions that arrive in the same
event-loop iteration are sent together in one pipeline: one write, one read,
one parse loop, instead of one of each per decision. A lone decision still
goes out at once (the flush is scheduled with `call_soon`, not a timer), so
batching adds no latency.
"""

from __future__ import annotations

import asyncio
import hashlib
from typing import Any

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError


class ReadBatcher:
    """Sends queued EVALSHA calls of one script together, on the running loop."""

    def __init__(self, redis: Any, script: str, deadline_s: float | None = None) -> None:
        """`deadline_s` bounds each batch as a whole (one timer per batch, not per reply)."""
        self.redis = redis
        self.deadline_s = deadline_s
        self.script = script
        self.sha = hashlib.sha1(script.encode()).hexdigest()
        self._pending: list[tuple[list[str], list[Any], asyncio.Future[Any]]] = []
        self._scheduled = False
        self.batches = 0
        self.calls = 0

    def call(self, keys: list[str], args: list[Any]) -> asyncio.Future[Any]:
        """Queue one call; the future resolves to its reply (or the Redis error)."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Any] = loop.create_future()
        self._pending.append((keys, args, fut))
        if not self._scheduled:
            self._scheduled = True
            loop.call_soon(self._flush)
        return fut

    def _flush(self) -> None:
        self._scheduled = False
        batch, self._pending = self._pending, []
        if batch:
            asyncio.get_running_loop().create_task(self._send(batch))

    async def _send(self, batch: list[tuple[list[str], list[Any], asyncio.Future[Any]]]) -> None:
        self.batches += 1
        self.calls += len(batch)
        try:
            # The deadline covers a script reload too: a restarted Redis must not make
            # the first decision after it wait longer than the others.
            async with asyncio.timeout(self.deadline_s):
                replies = await self._execute_with_recovery(batch)
        except Exception as exc:  # handed to every waiting decision
            replies = [exc] * len(batch)
        for (_, _, fut), reply in zip(batch, replies, strict=True):
            if fut.done():
                continue
            if isinstance(reply, BaseException):
                fut.set_exception(reply)
            else:
                fut.set_result(reply)

    async def _execute_with_recovery(
        self, batch: list[tuple[list[str], list[Any], asyncio.Future[Any]]]
    ) -> list[Any]:
        for attempt in range(1, 4):
            try:
                return await self._execute(batch)
            except RedisConnectionError:
                # A pooled connection that died with an earlier Redis fails at once;
                # another try on a fresh connection still fits in the deadline.
                if attempt == 3:
                    raise
            except NoScriptError:
                # A restarted or new Redis has no scripts cached: load, then retry.
                if attempt == 3:
                    raise
                await self.redis.script_load(self.script)
        raise AssertionError("unreachable")

    async def _execute(
        self, batch: list[tuple[list[str], list[Any], asyncio.Future[Any]]]
    ) -> list[Any]:
        if len(batch) == 1:
            keys, args, _ = batch[0]
            return [await self.redis.evalsha(self.sha, len(keys), *keys, *args)]
        pipe = self.redis.pipeline(transaction=False)
        for keys, args, _ in batch:
            # Not `pipe.evalsha`: redis-py blocks that name on cluster pipelines, while
            # the raw command is routed by its first key like any other.
            pipe.execute_command("EVALSHA", self.sha, len(keys), *keys, *args)
        replies: list[Any] = await pipe.execute(raise_on_error=False)
        if any(isinstance(r, NoScriptError) for r in replies):
            raise NoScriptError("NOSCRIPT")
        return replies

"""Coalesce the Redis commands of concurrent requests into one round trip.

Every decision's read is a handful of plain commands on one customer's keys
(`engine.store.windows.read_commands`), and a feedback is one to three small
batches (`server.routes.feedback`). Calls made in the same event-loop
iteration are sent together: one write, one read, one parse loop, instead of
one of each per call. A lone call still goes out at once (the flush is
scheduled with `call_soon`, not a timer), so batching adds no latency.

Redis pays for a round trip more than for the small commands in it (11 to 28 µs
of its CPU whatever is in it against 1 to 3 µs a command, `python -m
benchmarks.redis_anatomy`), and feedback was a third of Redis' CPU per
decision at one feedback in ten decisions, most of it its own round trips:
its commands ride the decisions' batches instead.

The batch is written and its replies read by `raw_commands` (one
hiredis-packed write, replies read raw), not by redis-py's pipeline, whose
per-command bookkeeping cost more worker CPU than the commands cost Redis
(server CPU per decision 660 → 559 µs in one A/B run of
`python -m benchmarks.ab_commits`, benchmarks/RESULTS.md).

Plain commands, not a Lua script, for the reads: Redis spends most of a small
script's time entering and leaving Lua (20 µs against 5.5 µs for the same reads
sent plainly, `python -m benchmarks.redis_cost`), and the reads need no
atomicity: a cap is exact because its contacts are counted by the write behind
a decision, in one script, not because the read sees one instant.

Two kinds of call share a batch:

- `read`: idempotent commands. The first error reply fails the call, and after
  a dropped connection (a Redis that restarted since the connection was
  pooled) the call is sent again on a fresh one.
- `write`: commands that must not run twice (a reward's append). Every reply
  comes back in its place, errors included, and a dropped connection fails
  the call instead of sending it again: whether it ran is unknown, which the
  caller reports (feedback answers 503, and its retry is then recognised as a
  duplicate if it had run).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from redis.exceptions import ConnectionError as RedisConnectionError

from arbiter.engine.store import raw_commands
from arbiter.engine.store.raw_commands import Command


@dataclass(slots=True)
class _Call:
    commands: Sequence[Command]
    future: asyncio.Future[list[Any]]
    resend: bool  # a read: sent again after a dropped connection; its first error fails it
    deadline_s: float | None  # from when the batch is sent; None: no limit


class Batcher:
    """Sends the queued commands of concurrent calls together, on the running loop."""

    def __init__(self, redis: Any, deadline_s: float | None = None) -> None:
        """`deadline_s` bounds a call (from when its batch is sent) unless the call names its
        own: one timer per batch and deadline, not one per call or reply."""
        self.redis = redis
        self.deadline_s = deadline_s
        self._pending: list[_Call] = []
        self._scheduled = False
        self.batches = 0
        self.calls = 0

    def read(
        self, commands: Sequence[Command], deadline_s: float | None = None
    ) -> asyncio.Future[list[Any]]:
        """Queue idempotent commands; the future resolves to their replies, in order, or
        to the first error among them (`TimeoutError` past the deadline)."""
        return self._queue(commands, True, deadline_s)

    def write(
        self, commands: Sequence[Command], deadline_s: float | None = None
    ) -> asyncio.Future[list[Any]]:
        """Queue commands that must not run twice; the future resolves to their replies
        in order, an error reply in its place, or fails if the batch did."""
        return self._queue(commands, False, deadline_s)

    def _queue(
        self, commands: Sequence[Command], resend: bool, deadline_s: float | None
    ) -> asyncio.Future[list[Any]]:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[list[Any]] = loop.create_future()
        deadline = self.deadline_s if deadline_s is None else deadline_s
        self._pending.append(_Call(commands, fut, resend, deadline))
        if not self._scheduled:
            self._scheduled = True
            loop.call_soon(self._flush)
        return fut

    def _flush(self) -> None:
        self._scheduled = False
        batch, self._pending = self._pending, []
        if not batch:
            return
        loop = asyncio.get_running_loop()
        task = loop.create_task(self._send(batch))
        deadlines = {call.deadline_s for call in batch if call.deadline_s is not None}
        if deadlines:
            now = loop.time()
            timers = [loop.call_at(now + d, self._expire, batch, task, d) for d in deadlines]

            def sent(_: asyncio.Task[None]) -> None:
                for timer in timers:
                    timer.cancel()

            task.add_done_callback(sent)

    @staticmethod
    def _expire(batch: list[_Call], task: asyncio.Task[None], deadline: float) -> None:
        """Fail the calls whose deadline this is; stop the batch when none is left waiting
        (its connection is then closed, so no reply of it is read by another caller)."""
        waiting = False
        for call in batch:
            if call.future.done():
                continue
            if call.deadline_s is not None and call.deadline_s <= deadline:
                call.future.set_exception(TimeoutError())
            else:
                waiting = True
        if not waiting:
            task.cancel()

    async def _send(self, batch: list[_Call]) -> None:
        self.batches += 1
        self.calls += len(batch)
        try:
            await self._send_with_recovery(batch)
        except BaseException as exc:  # handed to every call still waiting
            failure = TimeoutError() if isinstance(exc, asyncio.CancelledError) else exc
            for call in batch:
                if not call.future.done():
                    call.future.set_exception(failure)
            if not isinstance(exc, Exception):
                raise

    async def _send_with_recovery(self, batch: list[_Call]) -> None:
        attempt = 1
        while True:
            try:
                replies = await self._execute(batch)
                break
            except RedisConnectionError as exc:
                # A pooled connection that died with an earlier Redis fails at once;
                # another try on a fresh connection still fits in the deadline. Only
                # the reads go again: a write may have run before the connection broke.
                if attempt == 3:
                    raise
                attempt += 1
                for call in batch:
                    if not call.resend and not call.future.done():
                        call.future.set_exception(exc)
                batch = [call for call in batch if call.resend and not call.future.done()]
                if not batch:
                    return
        for call, reply in zip(batch, replies, strict=True):
            if call.future.done():  # past its deadline, or its caller gave up
                continue
            if isinstance(reply, BaseException):
                call.future.set_exception(reply)
            else:
                call.future.set_result(reply)

    async def _execute(self, batch: list[_Call]) -> list[Any]:
        # One write, replies read without a timer each (`raw_commands`); `_flush`'s
        # timers bound the calls.
        flat = await raw_commands.send(self.redis, [c for call in batch for c in call.commands])
        out: list[Any] = []
        k = 0
        for call in batch:
            replies = flat[k : k + len(call.commands)]
            k += len(call.commands)
            error = None
            if call.resend:
                error = next((r for r in replies if isinstance(r, Exception)), None)
            out.append(error if error is not None else replies)
        return out

"""Calls made together share one round trip (`engine.store.batcher`): reads and writes.

Reads fail with their first error and are sent again after a dropped
connection; writes get every reply in its place and are never sent twice, so
a write that may have run is reported as failed instead of run again.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Any

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError

from arbiter.engine.store import raw_commands
from arbiter.engine.store.batcher import Batcher
from arbiter.engine.store.client import connect


def test_reads_and_writes_of_one_loop_iteration_share_a_round_trip(redis_url: str) -> None:
    async def main() -> tuple[list[Any], list[Any], list[Any], int, BaseException | None]:
        client = connect(redis_url, socket_timeout=None)
        try:
            await client.set("{b}:k", b"v")
            batcher = Batcher(client, deadline_s=5)
            read = batcher.read([("GET", "{b}:k"), ("GET", "{b}:none")])
            write = batcher.write([("INCR", "{b}:k"), ("INCR", "{b}:n"), ("INCR", "{b}:n")])
            failing = batcher.read([("INCR", "{b}:k"), ("GET", "{b}:k")])
            other = batcher.read([("EXISTS", "{b}:n")])
            got_read, got_write, got_other = await read, await write, await other
            error = None
            try:
                await failing
            except ResponseError as exc:
                error = exc
            return got_read, got_write, got_other, batcher.batches, error
        finally:
            await client.aclose()

    got_read, got_write, got_other, batches, error = asyncio.run(main())
    assert batches == 1
    assert got_read == [b"v", None]
    # A write's error reply comes back in its place; the rest ran.
    assert isinstance(got_write[0], ResponseError)
    assert got_write[1:] == [1, 2]
    # A read fails with its first error, and the calls beside it are unaffected.
    assert isinstance(error, ResponseError)
    assert got_other == [1]


def test_after_a_dropped_connection_reads_go_again_and_writes_fail(
    redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = raw_commands.send
    sent: list[list[tuple[Any, ...]]] = []

    async def drops_the_first(client: Any, commands: Sequence[Sequence[Any]]) -> list[Any]:
        sent.append([tuple(c) for c in commands])
        if len(sent) == 1:
            # As a connection reset after Redis ran the batch: the replies are lost.
            await real(client, commands)
            raise RedisConnectionError("injected: connection reset by peer")
        return await real(client, commands)

    monkeypatch.setattr(raw_commands, "send", drops_the_first)

    async def main() -> tuple[list[Any], BaseException | None, bytes | None]:
        client = connect(redis_url, socket_timeout=None)
        try:
            batcher = Batcher(client, deadline_s=5)
            read = batcher.read([("GET", "{b}:absent")])
            write = batcher.write([("INCR", "{b}:counter")])
            error = None
            try:
                await write
            except RedisConnectionError as exc:
                error = exc
            return await read, error, await client.get("{b}:counter")
        finally:
            await client.aclose()

    got_read, error, counter = asyncio.run(main())
    assert got_read == [None]
    assert isinstance(error, RedisConnectionError)
    # The write ran once (before the reset), and was not sent again.
    assert counter == b"1"
    assert sent == [[("GET", "{b}:absent"), ("INCR", "{b}:counter")], [("GET", "{b}:absent")]]


# Keeps Redis busy for 300 ms (a slow script; DEBUG SLEEP is off by default).
BUSY_300_MS = """
local t = redis.call('TIME')
local stop = t[1] * 1000000 + t[2] + 300000
repeat t = redis.call('TIME') until t[1] * 1000000 + t[2] >= stop
"""

Outcome = BaseException | list[Any]


def _while_redis_is_busy(
    redis_url: str, calls: Callable[[Batcher], list[asyncio.Future[list[Any]]]]
) -> tuple[list[Outcome], bytes | None]:
    """The outcomes of ``calls`` made on a batcher with a 50 ms deadline while Redis runs a
    300 ms script, and then the value of ``{b}:z``."""

    async def main() -> tuple[list[Outcome], bytes | None]:
        client = connect(redis_url, socket_timeout=None)
        blocker = connect(redis_url, socket_timeout=None)
        try:
            batcher = Batcher(client, deadline_s=0.05)
            busy = asyncio.create_task(blocker.eval(BUSY_300_MS, 0))
            await asyncio.sleep(0.02)
            outcomes = await asyncio.gather(*calls(batcher), return_exceptions=True)
            await busy
            return list(outcomes), await client.get("{b}:z")
        finally:
            await client.aclose()
            await blocker.aclose()

    return asyncio.run(main())


def test_a_batch_past_its_deadline_fails_every_call(redis_url: str) -> None:
    outcomes, _ = _while_redis_is_busy(
        redis_url, lambda b: [b.read([("GET", "{b}:x")]), b.write([("INCR", "{b}:y")])]
    )
    assert len(outcomes) == 2
    assert all(isinstance(o, TimeoutError) for o in outcomes)


def test_a_call_with_a_longer_deadline_outlives_the_batch_s_shorter_one(redis_url: str) -> None:
    # A decision's read gives up at its deadline; a feedback's write in the same batch
    # waits for its reply (and its reply is the one of its own command).
    (read, write), counter = _while_redis_is_busy(
        redis_url,
        lambda b: [b.read([("GET", "{b}:x")]), b.write([("INCR", "{b}:z")], deadline_s=5)],
    )
    assert isinstance(read, TimeoutError)
    assert write == [1]
    assert counter == b"1"

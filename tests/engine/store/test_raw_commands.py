"""Plain commands sent in one write (`engine.store.raw_commands`), as the decision log sends them.

Replies come back in order, an error reply takes its command's place and
leaves the connection usable, a batch cut short by the caller's timeout
leaves no reply behind for the next caller, and a cluster client gets the
same replies through its pipeline.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import pytest
from redis.exceptions import NoScriptError, ResponseError

from arbiter.engine.store import raw_commands
from arbiter.engine.store.client import AsyncRedisClient, connect

T = TypeVar("T")

BATCH: list[tuple[Any, ...]] = [
    ("SET", "{c}:rec", b"\x00blob\r\n", "EX", 60),
    ("XADD", "{c}:stream", "MAXLEN", "~", 1000, "*", b"r", b"blob"),
    ("RPUSH", "{c}:idx", b"s:1", b"d:x"),
    ("EXPIRE", "{c}:idx", 60),
    ("ZADD", "{c}:z", 1732000000.5, b"m"),
    ("GET", "{c}:rec"),
]


def _run(url: str, body: Callable[[AsyncRedisClient], Awaitable[T]]) -> T:
    async def main() -> T:
        client = connect(url, socket_timeout=5)
        try:
            return await body(client)
        finally:
            await client.aclose()

    return asyncio.run(main())


def _check(replies: list[Any]) -> None:
    assert replies[0] in (True, b"OK")
    assert isinstance(replies[1], bytes) and b"-" in replies[1]  # a stream id
    assert replies[2:5] == [2, 1, 1]  # RPUSH: the list's length
    assert replies[5] == b"\x00blob\r\n"


def test_replies_in_order_with_errors_in_place(redis_url: str) -> None:
    async def body(client: AsyncRedisClient) -> tuple[list[Any], list[Any], float | None]:
        got = await raw_commands.send(client, BATCH)
        errors = await raw_commands.send(
            client,
            [("EVALSHA", "0" * 40, 0), ("INCR", "{c}:rec"), ("LLEN", "{c}:idx")],
        )
        score = await client.zscore("{c}:z", b"m")
        return got, errors, score

    got, errors, score = _run(redis_url, body)
    _check(got)
    assert isinstance(errors[0], NoScriptError)
    assert isinstance(errors[1], ResponseError)
    assert errors[2] == 2  # the connection went on after the error replies
    assert score == 1732000000.5


def test_a_batch_cut_short_leaves_no_reply_for_the_next(redis_url: str) -> None:
    async def body(client: AsyncRedisClient) -> list[Any]:
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.05):
                # Blocks for a second: its reply would arrive after the timeout.
                await raw_commands.send(client, [("BLPOP", "{c}:empty", 1)])
        return await raw_commands.send(client, [("PING",), ("GET", "{c}:nothing")])

    assert _run(redis_url, body) == [b"PONG", None]


def test_empty_batch_sends_nothing(redis_url: str) -> None:
    assert _run(redis_url, lambda c: raw_commands.send(c, [])) == []


def test_cluster_gets_the_same_replies(redis_cluster_url: str) -> None:
    _check(_run(redis_cluster_url, lambda c: raw_commands.send(c, BATCH)))


def test_a_read_over_resp2_parses_as_over_resp3(redis_url: str) -> None:
    """The read's replies come raw: HGETALL is a map in RESP3, a flat list in RESP2."""
    from support.store import shop_plan

    from arbiter.engine.store.profiles import ProfileStore

    plan = shop_plan()

    async def fetch(client: AsyncRedisClient) -> dict[str, Any]:
        store = ProfileStore(client, read_deadline_s=5)
        await store.put_profile("p", {"visits": 3, "consents": ["email"]})
        return (await store.fetch("p", plan.needs, 1_700_000_000)).profile

    sep = "&" if "?" in redis_url else "?"
    resp2 = _run(redis_url + sep + "protocol=2", fetch)
    resp3 = _run(redis_url + sep + "protocol=3", fetch)
    assert resp2 == resp3 == {"visits": 3, "consents": ["email"]}


def test_connections_come_from_the_pool_and_go_back(redis_url: str) -> None:
    # The checkout skips redis-py's argument-inspecting wrapper; the pool must still
    # hand out and take back its connections, for plain and blocking pools alike.
    import redis.asyncio as aioredis

    async def body(client: AsyncRedisClient) -> tuple[int, int]:
        results = await asyncio.gather(*(raw_commands.send(client, [("PING",)]) for _ in range(8)))
        assert results == [[b"PONG"]] * 8
        pool: Any = client.connection_pool
        return len(pool._in_use_connections), len(pool._available_connections)

    in_use, available = _run(redis_url, body)
    assert in_use == 0 and 1 <= available <= 8

    async def blocking() -> list[Any]:
        pool = aioredis.BlockingConnectionPool.from_url(redis_url, max_connections=2, timeout=5)
        client = aioredis.Redis(connection_pool=pool)
        try:
            batches = [raw_commands.send(client, [("PING",), ("ECHO", b"x")]) for _ in range(6)]
            return await asyncio.gather(*batches)
        finally:
            await client.aclose()
            await pool.disconnect()  # a pool handed to the client is not closed by it

    assert asyncio.run(blocking()) == [[b"PONG", b"x"]] * 6


def test_the_client_socket_timeout_bounds_a_batch(redis_url: str) -> None:
    # Replies are read from the parser, so the client's socket timeout bounds the batch
    # as a whole; it surfaces as redis-py's TimeoutError, and the connection is dropped.
    from redis.exceptions import TimeoutError as RedisTimeoutError

    async def main() -> list[Any]:
        client = connect(redis_url, socket_timeout=0.1)
        try:
            with pytest.raises(RedisTimeoutError):
                await raw_commands.send(client, [("PING",), ("BLPOP", "{c}:empty", 1)])
            return await raw_commands.send(client, [("PING",), ("ECHO", b"after")])
        finally:
            await client.aclose()

    assert asyncio.run(main()) == [b"PONG", b"after"]

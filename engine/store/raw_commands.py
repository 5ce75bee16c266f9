"""Send a batch of plain commands in one write and read the replies straight back.

redis-py's asyncio pipeline costs a worker more per command than Redis
spends on it: a command object per call, its arguments packed by a pure
Python loop over the commands, a response callback per reply, and the
bookkeeping around them. For the decision log, which sends four commands
a decision behind every response, that was most of what logging cost the
server (`python -m benchmarks.log_cost`, `python -m benchmarks.log_onoff`).
Here the commands are packed by hiredis into one buffer, written once, and
their replies read back on the same connection, raw (no response
callbacks). A client made with a socket timeout still bounds each reply by
it; the server's clients have none, and bound a batch as a whole.

A Redis Cluster client has no single connection to write to: there the
commands go through redis-py's cluster pipeline, which routes each to its
shard (same replies, same order).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import hiredis
import redis.asyncio
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

Command = Sequence[Any]
#: Sends commands and returns their replies in order, error replies in their place.
Sender = Callable[[Sequence[Command]], Awaitable[list[Any]]]

_Checkout = Callable[[Any], Awaitable[Any]]
_CHECKOUTS: dict[type, _Checkout] = {}


def _checkout(pool: Any) -> _Checkout:
    """The pool's `get_connection`, without the `deprecated_args` wrapper redis-py 8 puts
    around it: the wrapper inspects the call's arguments on every checkout (~2 µs, 2% of
    a serving worker's samples), and a call without arguments has none to warn about."""
    cls = type(pool)
    found = _CHECKOUTS.get(cls)
    if found is None:
        method = cls.get_connection
        found = _CHECKOUTS[cls] = getattr(method, "__wrapped__", method)
    return found


async def send(client: Any, commands: Sequence[Command]) -> list[Any]:
    """Send ``commands`` (each a sequence of words: name, keys, arguments) and return their
    replies in order; a command Redis refused gets its `ResponseError` in its place.

    A failure of the connection (or a cancellation, as by the caller's timeout)
    raises and closes the connection, so no reply of this batch is ever read
    by another caller.
    """
    if not commands:
        return []
    if not isinstance(client, redis.asyncio.Redis):
        pipe = client.pipeline(transaction=False)
        for command in commands:
            pipe.execute_command(*command)
        return list(await pipe.execute(raise_on_error=False))
    pool: Any = client.connection_pool
    conn = await _checkout(pool)(pool)
    try:
        await conn.send_packed_command(
            b"".join([hiredis.pack_command(tuple(c)) for c in commands]), check_health=False
        )
        out = await _replies(conn, len(commands))
    except BaseException:
        # Replies may still be on the way: nobody else may read them.
        await conn.disconnect(nowait=True)
        raise
    finally:
        await pool.release(conn)
    return out


async def _replies(conn: Any, count: int) -> list[Any]:
    """``count`` replies, an error reply as its `ResponseError` in its place.

    Read from the connection's reply parser: `Connection.read_response` wraps
    each reply in a timeout of its own when the client has a socket timeout
    (5.6 µs a reply on the feedback's client, against 1.9 µs read here) and
    raises error replies, which cost an exception each. The client's socket
    timeout bounds the batch as a whole instead, and socket errors and
    timeouts surface as redis-py's, as `read_response` raises them.
    """
    parser = getattr(conn, "_parser", None)
    read = getattr(parser, "read_response", None)
    if read is None or conn.health_check_interval:
        return [await _reply(conn) for _ in range(count)]
    try:
        async with asyncio.timeout(conn.socket_timeout):
            return [await read() for _ in range(count)]
    except TimeoutError:
        raise RedisTimeoutError("Timeout reading a batch's replies from Redis") from None
    except OSError as exc:
        raise RedisConnectionError(f"Error while reading a batch's replies: {exc}") from exc


async def _reply(conn: Any) -> Any:
    try:
        return await conn.read_response()
    except ResponseError as exc:  # an error reply: the connection is fine
        return exc


async def send_scripted(
    client: Any,
    commands: Sequence[Command],
    scripts: dict[str, str],
    via: Sender | None = None,
) -> list[Any]:
    """`send`, where an ``EVALSHA`` of a script in ``scripts`` (sha → text) that Redis
    does not know yet (a new or restarted Redis: NOSCRIPT) is loaded and sent again.

    Only the calls answered NOSCRIPT are resent: they did not run. Replies in
    order, error replies in their place, as `send`. ``via`` sends instead of
    `send` on ``client`` (a `Batcher.write`, to share other calls' round trip);
    scripts are loaded through ``client`` either way.
    """

    async def direct(batch: Sequence[Command]) -> list[Any]:
        return await send(client, batch)

    run = via or direct
    replies = await run(commands)
    missing = [i for i, r in enumerate(replies) if isinstance(r, NoScriptError)]
    if missing:
        for sha in {str(_word(commands[i][1])) for i in missing}:
            await client.script_load(scripts[sha])
        again = await run([commands[i] for i in missing])
        for i, reply in zip(missing, again, strict=True):
            replies[i] = reply
    return replies


def _word(word: Any) -> Any:
    return word.decode() if isinstance(word, bytes) else word


def single_node(client: Any) -> bool:
    """Whether ``client`` talks to one Redis, where a multi-key command (``MGET``) may name
    keys of any slot; a Cluster client needs one command per slot instead."""
    return isinstance(client, redis.asyncio.Redis)

"""Send a batch of plain commands in one write and read the replies under one timer.

redis-py's asyncio pipeline costs a worker far more per command than Redis
spends on it: a command object per call, and for every reply its own
`asyncio.timeout` (a timer scheduled and cancelled) around the parser. For
the decision log, which sends four commands a decision behind every
response, that was most of what logging cost the server
(`python -m benchmarks.log_cost`). Here the commands are packed by hiredis
into one buffer, written once, and their replies read back on the same
connection with no timer of their own: the caller bounds the whole batch
(the decision log does, with `asyncio.timeout`).

A Redis Cluster client has no single connection to write to: there the
commands go through redis-py's cluster pipeline, which routes each to its
shard (same replies, same order).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import hiredis
import redis.asyncio
from redis.exceptions import ResponseError

Command = Sequence[Any]


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
    conn = await pool.get_connection()
    try:
        await conn.send_packed_command(
            b"".join([hiredis.pack_command(tuple(c)) for c in commands]), check_health=False
        )
        out: list[Any] = []
        for _ in commands:
            try:
                # math.inf: no per-reply timer (the caller bounds the batch).
                out.append(await conn.read_response(timeout=math.inf))
            except ResponseError as exc:  # an error reply: the connection is fine
                out.append(exc)
    except BaseException:
        # Replies may still be on the way: nobody else may read them.
        await conn.disconnect(nowait=True)
        raise
    finally:
        await pool.release(conn)
    return out

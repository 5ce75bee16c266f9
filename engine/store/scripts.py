"""Lua scripts called many times in one pipelined round trip, on one Redis or a Cluster.

redis-py refuses ``pipe.evalsha`` on a cluster pipeline, but routes a raw
``EVALSHA`` command by its first key, so :func:`eval_pipelined` sends the
calls that way; a new or restarted Redis has no script cache, so the calls
answered NOSCRIPT (only those: they did not run) are sent again after loading
the script.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

from redis.exceptions import NoScriptError

from arbiter.engine.store.client import AsyncRedisClient

__all__ = ["eval_pipelined", "script_sha"]

Call = tuple[Sequence[str], Sequence[Any]]  # KEYS, ARGV


def script_sha(script: str) -> str:
    """The SHA1 Redis names ``script`` by."""
    return hashlib.sha1(script.encode(), usedforsecurity=False).hexdigest()


async def eval_pipelined(
    redis: AsyncRedisClient, script: str, sha: str, calls: Sequence[Call]
) -> list[Any]:
    """Run ``script`` once per call, pipelined; the replies in order.

    Raises the first error reply (after every call was sent): the calls are
    independent, so some may have run; a caller retries what it may.
    """
    replies = await _evalsha_all(redis, sha, calls)
    missing = [i for i, r in enumerate(replies) if isinstance(r, NoScriptError)]
    if missing:
        await redis.script_load(script)
        again = await _evalsha_all(redis, sha, [calls[i] for i in missing])
        for i, reply in zip(missing, again, strict=True):
            replies[i] = reply
    for reply in replies:
        if isinstance(reply, Exception):
            raise reply
    return replies


async def _evalsha_all(redis: AsyncRedisClient, sha: str, calls: Sequence[Call]) -> list[Any]:
    if not calls:
        return []
    pipe = redis.pipeline(transaction=False)
    for key_list, args in calls:
        pipe.execute_command("EVALSHA", sha, len(key_list), *key_list, *args)
    replies: list[Any] = await pipe.execute(raise_on_error=False)
    return replies

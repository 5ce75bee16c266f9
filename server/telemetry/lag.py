"""How far each learner is behind the reward stream, read when `/metrics` is scraped."""

from __future__ import annotations

import asyncio
from typing import Any

from redis.exceptions import RedisError, ResponseError

from arbiter.engine.store import keys

# Counting unread rewards without Redis 7's `lag` field reads them: cap the read.
MAX_COUNTED = 10_000
TIMEOUT_S = 1.0


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


async def learner_lag(redis: Any, now: float) -> dict[str, tuple[int, float]]:
    """Group name -> (rewards not yet read, age in seconds of the oldest of them)."""
    out: dict[str, tuple[int, float]] = {}
    try:
        async with asyncio.timeout(TIMEOUT_S):
            try:
                groups = await redis.xinfo_groups(keys.REWARD_STREAM)
            except ResponseError:
                return out  # no stream yet: no rewards, no learners
            for group in groups:
                name = _text(group["name"])
                last = _text(group["last-delivered-id"])
                unread = await redis.xrange(keys.REWARD_STREAM, min=f"({last}", count=MAX_COUNTED)
                lag = group.get("lag")
                count = int(lag) if lag is not None else len(unread)
                age = 0.0
                if unread:
                    first_ms = int(_text(unread[0][0]).split("-")[0])
                    age = max(0.0, now - first_ms / 1000)
                out[name] = (count, age)
    except (RedisError, OSError, TimeoutError):
        pass  # the gauges keep their last values; arbiter_redis_errors counts the failure
    return out

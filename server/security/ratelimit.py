"""Per-key rate limits counted in Redis, shared by every worker and machine.

A fixed window per key: one `INCR` (with its expiry set on the first hit, in
one Lua call) on the hot-path client, bounded by the Redis deadline. Answers
carry the IETF `RateLimit-Policy` and `RateLimit` headers
(draft-ietf-httpapi-ratelimit-headers); a caller over its quota gets `429`
with `Retry-After`.

When Redis does not answer in time, each kind of route does what
`ON_REDIS_DOWN` says: the routes a website calls on every page view keep
answering (a limiter outage must not take the site down with it), the
administrative ones refuse with `503` (they need Redis anyway, and an outage
must not open them to unmetered use).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from redis.exceptions import RedisError

from arbiter.engine.store.keys import PREFIX
from arbiter.server.errors import ApiError
from arbiter.server.security.auth import Principal, RateLimit

# Scope a route needs -> what happens to its requests when the limiter cannot count.
ON_REDIS_DOWN: dict[str, str] = {
    "decide": "allow",
    "feedback": "allow",
    "events": "allow",
    "rulesets:read": "allow",
    "profiles:read": "refuse",
    "profiles:write": "refuse",
    "rulesets:write": "refuse",
    "admin": "refuse",
}

_HIT = """
local n = redis.call('INCR', KEYS[1])
if n == 1 then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end
return n
"""

Headers = list[tuple[bytes, bytes]]


def window_key(identity: str, window_s: int, index: int) -> str:
    """The counter of one identity in one window (hash-tagged: one slot per identity)."""
    safe = identity.replace("{", "(").replace("}", ")")
    return f"{PREFIX}:rl:{{{safe}}}:{window_s}:{index}"


class RateLimiter:
    """Counts hits per identity and window in Redis."""

    def __init__(
        self, redis: Any, deadline_s: float, clock: Callable[[], float] = time.time
    ) -> None:
        self.redis = redis
        self.deadline_s = deadline_s
        self.clock = clock
        self.unavailable = 0  # hits the limiter could not count (exported as a metric)

    async def hit(self, principal: Principal, scope: str, client: str | None) -> Headers:
        """Count one request; its RateLimit headers, or `ApiError` 429 (or 503, see above)."""
        limit = principal.rate_limit
        if limit is None:
            return []
        identity = f"public:{client or '-'}" if principal.public else f"key:{principal.name}"
        now = self.clock()
        index = int(now // limit.window_s)
        reset = max(1, int((index + 1) * limit.window_s - now + 0.999))
        try:
            async with asyncio.timeout(self.deadline_s):
                count = int(
                    await self.redis.eval(
                        _HIT, 1, window_key(identity, limit.window_s, index), limit.window_s * 1000
                    )
                )
        except (RedisError, OSError, TimeoutError) as exc:
            self.unavailable += 1
            if ON_REDIS_DOWN.get(scope, "refuse") == "allow":
                return []
            raise ApiError(
                503, "unavailable", f"cannot check the rate limit (Redis: {type(exc).__name__})"
            ) from None
        headers = _headers(limit, max(0, limit.requests - count), reset)
        if count > limit.requests:
            raise ApiError(
                429,
                "rate_limited",
                f"over {limit.requests} requests per {limit.window_s}s for "
                f"'{principal.name}'; retry in {reset}s",
                extra_headers={k.decode(): v.decode() for k, v in headers}
                | {"retry-after": str(reset)},
            )
        return headers


def _headers(limit: RateLimit, remaining: int, reset: int) -> Headers:
    return [
        (b"ratelimit-policy", f'"quota";q={limit.requests};w={limit.window_s}'.encode()),
        (b"ratelimit", f'"quota";r={remaining};t={reset}'.encode()),
    ]

"""CORS for browsers calling Arbiter directly: an allow-list of origins.

`ARBITER_CORS_ORIGINS` lists the origins (`https://shop.example`) whose pages
may call the API; `*` allows any. Preflights from other origins are refused
with `403`, and answers to them carry no `Access-Control-Allow-Origin`, so
the browser withholds them from the page. A key can be tied to origins of its
own (`origins` in the key file); public (keyless) scopes are refused to a
browser whose origin is not on the list.
"""

from __future__ import annotations

from collections.abc import Iterable

# The methods each path answers, for `Access-Control-Allow-Methods`.
_ALLOW_HEADERS = b"authorization, content-type"
_EXPOSE = b"ratelimit, ratelimit-policy, retry-after"
MAX_AGE_S = 600

Headers = list[tuple[bytes, bytes]]


class CorsPolicy:
    """Which browser origins may call; the headers to answer them with."""

    def __init__(self, origins: Iterable[str]) -> None:
        listed = {o.strip().rstrip("/") for o in origins if o.strip()}
        self.any = "*" in listed
        self.origins = frozenset(listed - {"*"})

    @classmethod
    def parse(cls, text: str | None) -> CorsPolicy:
        """From the comma-separated `ARBITER_CORS_ORIGINS` (unset: no browser origin)."""
        return cls((text or "").split(","))

    @property
    def enabled(self) -> bool:
        return self.any or bool(self.origins)

    def allows(self, origin: str) -> bool:
        return self.any or origin in self.origins

    def response_headers(self, origin: str) -> Headers:
        """Headers for an actual (non-preflight) answer to an allowed origin."""
        return [
            (b"access-control-allow-origin", origin.encode("latin-1")),
            (b"access-control-expose-headers", _EXPOSE),
            (b"vary", b"Origin"),
        ]

    def preflight_headers(self, origin: str, methods: str) -> Headers:
        """Headers for a `204` preflight answer to an allowed origin."""
        return [
            (b"access-control-allow-origin", origin.encode("latin-1")),
            (b"access-control-allow-methods", methods.encode()),
            (b"access-control-allow-headers", _ALLOW_HEADERS),
            (b"access-control-max-age", str(MAX_AGE_S).encode()),
            (b"vary", b"Origin"),
        ]

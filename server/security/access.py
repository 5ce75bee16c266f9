"""Who may call a route, how often, and the record of each request.

Every route calls `authorize(request, scope)` (the decide fast path calls
`admit`) before it reads its body: the key is checked (`server.security.auth`), the
caller's rate limit counted (`server.security.ratelimit`), and the key's *name* noted
in the request's `Access`, which the edge (`server.security.edge`) turns into the
access-log line and the RateLimit headers of the answer. The key itself is
never kept or logged.
"""

from __future__ import annotations

import copy
import logging
import random
import time
from collections.abc import MutableMapping
from dataclasses import dataclass, field
from typing import Any

import orjson
from starlette.requests import Request

from arbiter.server.errors import ApiError
from arbiter.server.security.auth import Principal

ACCESS_LOG = logging.getLogger("arbiter.access")
# INFO by default (like uvicorn.access): the lines reach whatever handlers the
# application configured; `arbiter serve` sends them to stdout (`logging_config`).
ACCESS_LOG.setLevel(logging.INFO)
SCOPE_KEY = "arbiter.access"


@dataclass
class Access:
    """What one request did, filled in as it runs; read by the edge when it ends."""

    method: str
    route: str
    started: float = field(default_factory=time.perf_counter)
    status: int = 0
    key: str | None = None
    decision_id: str | None = None
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)


def access_of(scope: MutableMapping[str, Any]) -> Access:
    """The request's `Access` (made on first use when the edge did not run, as in unit tests)."""
    access = scope.get(SCOPE_KEY)
    if access is None:
        access = Access(scope.get("method", ""), scope.get("path", ""))
        scope[SCOPE_KEY] = access
    assert isinstance(access, Access)
    return access


def header(scope: MutableMapping[str, Any], name: bytes) -> str | None:
    """One request header (the first), decoded."""
    for key, value in scope["headers"]:
        if key == name:
            return str(value.decode("latin-1"))
    return None


async def admit(st: Any, scope: MutableMapping[str, Any], needed: str) -> Principal:
    """Authenticate and rate-limit one request for scope `needed`; `ApiError` otherwise."""
    origin = header(scope, b"origin")
    principal: Principal = st.keys.authenticate(needed, header(scope, b"authorization"), origin)
    access = access_of(scope)
    access.key = principal.name
    if (
        principal.public
        and origin is not None
        and not st.cors.allows(origin)
        and not same_origin(origin, header(scope, b"host"))
    ):
        raise ApiError(403, "origin_refused", f"origin {origin} is not allowed to call this API")
    client = scope.get("client")
    access.headers = await st.limiter.hit(principal, needed, client[0] if client else None)
    return principal


def same_origin(origin: str, host: str | None) -> bool:
    """Whether a browser's `Origin` is this server itself (a page it served, like the studio)."""
    return host is not None and origin.partition("://")[2] == host


async def authorize(request: Request, needed: str) -> Principal:
    """`admit` for a FastAPI or Starlette route."""
    return await admit(request.app.state.arbiter, request.scope, needed)


class AccessLog:
    """Structured JSON lines on the `arbiter.access` logger, sampled."""

    def __init__(self, sample: float) -> None:
        self.sample = sample

    def write(self, access: Access, duration_s: float) -> None:
        """Log one finished request: always on a 5xx, else with probability `sample`."""
        if access.status < 500 and (self.sample <= 0 or random.random() >= self.sample):
            return
        if not ACCESS_LOG.isEnabledFor(logging.INFO):
            return
        line: dict[str, Any] = {
            "ts": round(time.time(), 3),
            "method": access.method,
            "route": access.route,
            "status": access.status,
            "duration_ms": round(duration_s * 1000, 3),
            "key": access.key,
        }
        if access.decision_id is not None:
            line["decision_id"] = access.decision_id
        ACCESS_LOG.info(orjson.dumps(line).decode())


def logging_config(base: dict[str, Any]) -> dict[str, Any]:
    """`base` (a `logging.config.dictConfig` dict, e.g. uvicorn's) plus the access log.

    `arbiter.access` lines go to stdout, one JSON object a line. The server
    command passes this to the ASGI server, which applies it in every worker
    process; `create_app` configures no handler, so an application embedding
    Arbiter, or a test, keeps its own logging.
    """
    config = copy.deepcopy(base)
    config.setdefault("version", 1)
    config.setdefault("formatters", {})["arbiter_access"] = {"format": "%(message)s"}
    config.setdefault("handlers", {})["arbiter_access"] = {
        "class": "logging.StreamHandler",
        "formatter": "arbiter_access",
        "stream": "ext://sys.stdout",
    }
    config.setdefault("loggers", {})["arbiter.access"] = {
        "handlers": ["arbiter_access"],
        "level": "INFO",
        "propagate": False,
    }
    return config

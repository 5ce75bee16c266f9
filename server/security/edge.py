"""The outermost layer of every HTTP request, decide's fast path included.

In one pass, with no per-request middleware objects: CORS (preflights
answered here, allowed origins get their headers), the body-size limit (a
declared `Content-Length` over the limit is refused before a byte is read; a
chunked body is cut off as it arrives), the headers the route asked for
(RateLimit), request metrics per route and status, and the access log line.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import orjson

from arbiter.server.errors import ApiError
from arbiter.server.security.access import SCOPE_KEY, Access, header
from arbiter.server.security.limits import check_depth

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGI = Callable[[Scope, Receive, Send], Awaitable[None]]

_JSON = (b"content-type", b"application/json")
# Served by `server.fast_path`, which checks its own bodies' nesting.
FAST_PATHS = ("/v1/decide", "/v1/feedback")


async def answer(send: Send, status: int, body: bytes, headers: list[tuple[bytes, bytes]]) -> None:
    """Send a whole JSON answer."""
    all_headers = [_JSON, (b"content-length", str(len(body)).encode()), *headers]
    await send({"type": "http.response.start", "status": status, "headers": all_headers})
    await send({"type": "http.response.body", "body": body})


def route_of(scope: Scope, routes: list[Any]) -> str:
    """The route template (never the raw path: it holds customer ids); `unmatched` if none."""
    route = scope.get("route")
    path = getattr(route, "path", None)
    if isinstance(path, str):
        return path
    # Plain Starlette routes (the feedback endpoint) do not put themselves in the scope.
    for candidate in routes:
        regex = getattr(candidate, "path_regex", None)
        template = getattr(candidate, "path", None)
        methods = getattr(candidate, "methods", None)
        if (
            regex is not None
            and isinstance(template, str)
            and (methods is None or scope.get("method") in methods)
            and regex.match(scope.get("path", ""))
        ):
            return template
    return "unmatched"


def methods_for(path: str, routes: list[Any]) -> list[str]:
    """The methods the app answers on `path`, for a preflight's Allow-Methods."""
    found: set[str] = set()
    for route in routes:
        regex = getattr(route, "path_regex", None)
        methods = getattr(route, "methods", None)
        if regex is not None and methods and regex.match(path):
            found.update(methods)
    found.discard("HEAD")
    return sorted(found)


async def handle(
    state: Any, routes: list[Any], scope: Scope, receive: Receive, send: Send, inner: ASGI
) -> None:
    """Serve one HTTP request through `inner` (the app, or the decide or feedback fast path)."""
    access = Access(scope["method"], scope["path"] if scope["path"] in FAST_PATHS else "")
    scope[SCOPE_KEY] = access
    origin = header(scope, b"origin")
    cors_headers: list[tuple[bytes, bytes]] = []
    try:
        if origin is not None:
            if (
                scope["method"] == "OPTIONS"
                and header(scope, b"access-control-request-method") is not None
            ):
                await _preflight(state, routes, scope, origin, access, send)
                return
            if state.cors.allows(origin):
                cors_headers = state.cors.response_headers(origin)
        limit = state.settings.max_body_bytes
        declared = header(scope, b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            error = ApiError(413, "too_large", f"request body over {limit} bytes", "body")
            access.status = 413
            await answer(send, 413, orjson.dumps(error.body()), cors_headers)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                access.status = message["status"]
                if access.status == 405:
                    # One route per method: the router's Allow names only the first match's.
                    allow = ", ".join(methods_for(scope["path"], routes)).encode()
                    kept = [(k, v) for k, v in message.get("headers", ()) if k.lower() != b"allow"]
                    message["headers"] = [*kept, (b"allow", allow)]
                extra = [*access.headers, *cors_headers]
                if extra:
                    message["headers"] = [*message.get("headers", ()), *extra]
            await send(message)

        bounded = _bounded(receive, limit)
        if inner_reads_json(scope):
            # Buffered (the framework buffers it anyway) so its nesting is checked before
            # any parser sees it; the route then reads the same bytes.
            body = await _read_all(bounded)
            check_depth(body)
            bounded = _replay(body, receive)
        await inner(scope, bounded, send_with_headers)
    except ApiError as exc:
        # Raised here, outside any route: the body limit or the nesting check.
        access.status = exc.status
        await answer(send, exc.status, orjson.dumps(exc.body()), cors_headers)
    finally:
        duration = time.perf_counter() - access.started
        if not access.route:
            access.route = route_of(scope, routes)
        if access.status:
            metrics = state.metrics
            metrics.requests_of[access.route, scope["method"], str(access.status)].inc()
            metrics.request_seconds_of[access.route].observe(duration)
        state.access_log.write(access, duration)


def inner_reads_json(scope: Scope) -> bool:
    """A JSON body for a framework route (the fast paths check their own)."""
    if scope["method"] not in ("POST", "PUT", "PATCH") or scope["path"] in FAST_PATHS:
        return False
    content_type = header(scope, b"content-type") or ""
    return "json" in content_type


async def _read_all(receive: Receive) -> bytes:
    chunks = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            break
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


def _replay(body: bytes, receive: Receive) -> Receive:
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


def _bounded(receive: Receive, limit: int) -> Receive:
    seen = 0

    async def bounded() -> Message:
        nonlocal seen
        message = await receive()
        seen += len(message.get("body", b""))
        if seen > limit:
            raise ApiError(413, "too_large", f"request body over {limit} bytes", "body")
        return message

    return bounded


async def _preflight(
    state: Any, routes: list[Any], scope: Scope, origin: str, access: Access, send: Send
) -> None:
    access.route = "preflight"
    methods = methods_for(scope["path"], routes)
    wanted = header(scope, b"access-control-request-method") or ""
    if not state.cors.allows(origin) or wanted not in methods:
        why = (
            f"origin {origin} is not allowed"
            if not state.cors.allows(origin)
            else f"{wanted} is not answered on this path"
        )
        access.status = 403
        body = ApiError(403, "cors_refused", f"CORS preflight refused: {why}").body()
        await answer(send, 403, orjson.dumps(body), [(b"vary", b"Origin")])
        return
    access.status = 204
    headers = state.cors.preflight_headers(origin, ", ".join(methods))
    await send({"type": "http.response.start", "status": 204, "headers": headers})
    await send({"type": "http.response.body", "body": b""})

"""JSON errors for every failure: `{"error": {"code", "message", "field"?}}`.

No request ever sees a traceback: validation problems are 4xx naming the
field, and anything unexpected is a logged 500 with a stable shape.
"""

from __future__ import annotations

import logging
import re
from typing import Any

import msgspec
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from arbiter.dsl.errors import ArbiterError
from arbiter.server.responses import JSONResponse

log = logging.getLogger("arbiter.server")


class ApiError(ArbiterError):
    """An error answer: HTTP status, stable code, message, and the field at fault."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        field: str | None = None,
        extra: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.field = field
        self.extra = extra or {}
        self.headers = headers  # e.g. Retry-After on a 503

    def body(self) -> dict[str, Any]:
        err: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.field is not None:
            err["field"] = self.field
        err.update(self.extra)
        return {"error": err}


_AT = re.compile(r" - at `\$\.?(.*)`$")
_MISSING = re.compile(r"missing required field `([^`]+)`")
_UNKNOWN = re.compile(r"unknown field `([^`]+)`")


def from_msgspec(exc: msgspec.ValidationError | msgspec.DecodeError, prefix: str = "") -> ApiError:
    """Turn msgspec's message into a 422 (or 400 for malformed JSON) naming the field."""
    text = str(exc)
    if isinstance(exc, msgspec.DecodeError) and not isinstance(exc, msgspec.ValidationError):
        return ApiError(400, "malformed_json", f"request body is not valid JSON: {text}")
    field = None
    at = _AT.search(text)
    if at:
        field = at.group(1).replace("[", ".").replace("]", "") or None
        text = text[: at.start()]
    missing = _MISSING.search(text)
    unknown = _UNKNOWN.search(text)
    inner = missing or unknown
    if inner:
        name = inner.group(1)
        field = f"{field}.{name}" if field else name
    if field and prefix:
        field = f"{prefix}.{field}"
    message = f"{field}: {text}" if field else text
    return ApiError(422, "invalid_request", message, field)


def install(app: FastAPI) -> None:
    """Register the handlers that give every error the JSON shape above."""

    @app.exception_handler(ApiError)
    async def api_error(_: Request, exc: ApiError) -> JSONResponse:
        return JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "invalid request"}
        loc = [str(p) for p in first.get("loc", ()) if p != "body"]
        field = ".".join(loc) or None
        message = f"{field}: {first.get('msg')}" if field else str(first.get("msg"))
        return JSONResponse(
            ApiError(422, "invalid_request", message, field).body(), status_code=422
        )

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return JSONResponse(
            ApiError(exc.status_code, code, str(exc.detail)).body(), status_code=exc.status_code
        )

    @app.exception_handler(Exception)
    async def unexpected(_: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error")
        body = ApiError(500, "internal", "internal error; see the server log").body()
        return JSONResponse(body, status_code=500)

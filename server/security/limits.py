"""Size limits on what a request may carry, each breach a 4xx naming the field.

The body size is enforced at the edge (`server.security.edge`, `ARBITER_MAX_BODY_BYTES`).
Here: JSON nesting depth, checked on the raw bytes before they are parsed
(so a hostile `[[[[…` never reaches a decoder's recursion), and the sizes of
the decide request's parts. The OpenAPI document states the same numbers.
"""

from __future__ import annotations

import re
from typing import Any

from arbiter.server.errors import ApiError

MAX_DEPTH = 32
MAX_CONTEXT_KEYS = 64
MAX_KEY_LENGTH = 64
MAX_STRING = 1024
MAX_ID = 256
MAX_CONTEXT_LIST = 100

_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"')
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"{}[]")


def check_depth(body: bytes, max_depth: int = MAX_DEPTH) -> None:
    """`ApiError` 413 if the JSON nests deeper than `max_depth` (brackets in strings ignored)."""
    # Cheap bound first: a body with fewer brackets than the limit cannot nest deeper.
    if body.count(b"{") + body.count(b"[") <= max_depth:
        return
    # Strings out (in C), then only the brackets are walked in Python.
    brackets = _STRING.sub(b"", body).translate(None, _NOT_BRACKETS)
    depth = 0
    for byte in brackets:
        if byte in (0x7B, 0x5B):
            depth += 1
            if depth > max_depth:
                raise ApiError(
                    413, "too_deep", f"JSON nested deeper than {max_depth} levels", "body"
                )
        else:
            depth -= 1


def check_decide(customer_id: str, context: dict[str, Any], ruleset: str | None) -> None:
    """The decide request's sizes: ids, number of context keys, string lengths."""
    if len(customer_id) > MAX_ID:
        raise ApiError(
            422, "invalid_request", f"customer_id is over {MAX_ID} characters", "customer_id"
        )
    if ruleset is not None and len(ruleset) > MAX_ID:
        raise ApiError(422, "invalid_request", f"ruleset is over {MAX_ID} characters", "ruleset")
    if len(context) > MAX_CONTEXT_KEYS:
        raise ApiError(
            422, "invalid_request", f"context has over {MAX_CONTEXT_KEYS} keys", "context"
        )
    for key, value in context.items():
        if len(key) > MAX_KEY_LENGTH:
            raise ApiError(
                422,
                "invalid_request",
                f"context key is over {MAX_KEY_LENGTH} characters",
                f"context.{key[:MAX_KEY_LENGTH]}",
            )
        if isinstance(value, str) and len(value) > MAX_STRING:
            raise ApiError(
                422,
                "invalid_request",
                f"context.{key} is over {MAX_STRING} characters",
                f"context.{key}",
            )
        if isinstance(value, list | dict) and len(value) > MAX_CONTEXT_LIST:
            raise ApiError(
                422,
                "invalid_request",
                f"context.{key} has over {MAX_CONTEXT_LIST} items",
                f"context.{key}",
            )

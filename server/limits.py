"""Size limits on what a request may carry, each breach a 4xx naming the field.

The body size is enforced at the edge (`server.edge`, `ARBITER_MAX_BODY_BYTES`).
Here: JSON nesting depth, checked on the raw bytes before they are parsed
(so a hostile `[[[[…` never reaches a decoder's recursion), and the sizes of
the decide request's parts. The OpenAPI document states the same numbers.
"""

from __future__ import annotations

from typing import Any

from arbiter.server.errors import ApiError

MAX_DEPTH = 32
MAX_CONTEXT_KEYS = 64
MAX_KEY_LENGTH = 64
MAX_STRING = 1024
MAX_ID = 256
MAX_CONTEXT_LIST = 100


def check_depth(body: bytes, max_depth: int = MAX_DEPTH) -> None:
    """`ApiError` 413 if the JSON nests deeper than `max_depth` (brackets in strings ignored)."""
    # Cheap bound first: a body with fewer brackets than the limit cannot nest deeper.
    if body.count(b"{") + body.count(b"[") <= max_depth:
        return
    depth = 0
    in_string = False
    escaped = False
    for byte in body:
        if in_string:
            if escaped:
                escaped = False
            elif byte == 0x5C:  # backslash
                escaped = True
            elif byte == 0x22:  # quote
                in_string = False
        elif byte == 0x22:
            in_string = True
        elif byte in (0x7B, 0x5B):
            depth += 1
            if depth > max_depth:
                raise ApiError(
                    413, "too_deep", f"JSON nested deeper than {max_depth} levels", "body"
                )
        elif byte in (0x7D, 0x5D):
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

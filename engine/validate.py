"""Checking and normalising attribute values against declared types.

Used on profile writes and on request contexts, so that a value of the wrong
type is refused at the edge with the field's name instead of quietly making a
rule not match later.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from arbiter.dsl.errors import ArbiterError, did_you_mean
from arbiter.dsl.types import Type
from arbiter.engine.records import DecideRequest

#: The most actions one decision may ask for (`limit`).
MAX_LIMIT = 50


class ValueProblem(ArbiterError):
    """A value does not fit its declared type; `field` names it."""

    code = "invalid-value"

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


def _time(field: str, value: Any) -> float:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            raise ValueProblem(field, f"{value!r} is not an ISO-8601 time") from None
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=UTC)
        return parsed.timestamp()
    raise ValueProblem(field, "expected a time (ISO-8601 string or epoch seconds)")


def normalize(field: str, ty: Type, value: Any) -> Any:
    """The value as stored and evaluated, or `ValueProblem`. `None` is always allowed (missing)."""

    if value is None:
        return None
    kind = ty.kind
    if kind == "number":
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueProblem(field, f"expected a number, got {type(value).__name__}")
        return value
    if kind == "string":
        if not isinstance(value, str):
            raise ValueProblem(field, f"expected a string, got {type(value).__name__}")
        return value
    if kind == "bool":
        if not isinstance(value, bool):
            raise ValueProblem(field, f"expected true or false, got {type(value).__name__}")
        return value
    if kind == "enum":
        if value not in ty.members:
            message = f"expected one of {', '.join(ty.members)}, got {value!r}"
            hint = did_you_mean(value, ty.members) if isinstance(value, str) else None
            raise ValueProblem(field, f"{message}; {hint}" if hint else message)
        return value
    if kind == "time":
        return _time(field, value)
    if kind == "set":
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ValueProblem(field, "expected a list of strings")
        return sorted(set(value))
    return value


def normalize_all(
    schema: Mapping[str, Type], values: Mapping[str, Any], prefix: str = ""
) -> dict[str, Any]:
    """Normalise every declared attribute in `values`; undeclared ones pass through."""
    out: dict[str, Any] = {}
    for key, value in values.items():
        ty = schema.get(key)
        out[key] = value if ty is None else normalize(f"{prefix}{key}", ty, value)
    return out


def check_request(req: DecideRequest) -> None:
    """The checks of a decide request that need no ruleset: `customer_id` and `limit`."""
    if not req.customer_id:
        raise ValueProblem("customer_id", "must not be empty")
    if not 1 <= req.limit <= MAX_LIMIT:
        raise ValueProblem("limit", f"must be between 1 and {MAX_LIMIT}")


def validate_request(req: DecideRequest, context_schema: Mapping[str, Type]) -> DecideRequest:
    """A decide request checked and its context converted, as HTTP and the CLI both do.

    Raises `ValueProblem` naming the field (`customer_id`, `limit`, `context.<name>`).
    """
    check_request(req)
    req.context = normalize_all(context_schema, req.context, "context.")
    return req

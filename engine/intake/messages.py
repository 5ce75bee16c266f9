"""What an intake message may hold, checked: an event or an identify.

The shapes are those of the HTTP API, so a producer sends the same JSON
everywhere:

- an event, as one element of `POST /v1/events` or one line of
  `arbiter ingest`: `{"customer_id", "type", "ts"?, "event_id"?, "properties"?}`;
- an identify, as `POST /v1/identify`: `{"anonymous_id", "customer_id"}`.

Every check names the field at fault (`InvalidMessage.field`), so a dead
letter or an error line says what to fix.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from arbiter.dsl.errors import ArbiterError
from arbiter.dsl.types import Type
from arbiter.engine.store.profiles import Event
from arbiter.engine.validate import ValueProblem, normalize, normalize_all

NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
EVENT_FIELDS = frozenset({"customer_id", "type", "ts", "event_id", "properties"})
IDENTIFY_FIELDS = frozenset({"anonymous_id", "customer_id"})
MAX_FUTURE_SECONDS = 300  # as POST /v1/events: a little clock skew, no more
TIME = Type("time")

EventSchema = Mapping[str, Mapping[str, Type]]


class InvalidMessage(ArbiterError):
    """A message that can never be processed; `field` names the culprit (None: the whole)."""

    code = "invalid-message"

    def __init__(self, field: str | None, message: str) -> None:
        self.field, self.message = field, message
        super().__init__((f"{field}: " if field else "") + message)


@dataclass(frozen=True, slots=True)
class Identify:
    """Link `anonymous_id` to `customer_id` (see engine.store.identity)."""

    anonymous_id: str
    customer_id: str


def decode_json(text: str | bytes) -> Any:
    """JSON text as a value, or `InvalidMessage` saying where it breaks."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidMessage(None, f"not valid JSON ({exc.msg} at column {exc.colno})") from None
    except UnicodeDecodeError:
        raise InvalidMessage(None, "not UTF-8 text") from None


def _object(raw: Any, fields: frozenset[str], what: str) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise InvalidMessage(None, f"expected a JSON object, got {type(raw).__name__}")
    unknown = sorted(set(raw) - fields)
    if unknown:
        raise InvalidMessage(unknown[0], f"unknown field; {what} has {', '.join(sorted(fields))}")
    return raw


def _id(raw: Mapping[str, Any], field: str) -> str:
    value = raw.get(field)
    if not isinstance(value, str) or not 1 <= len(value) <= 256:
        raise InvalidMessage(field, "required, a string of 1-256 characters")
    return value


def parse_event(raw: Any, now: float, schema: EventSchema) -> Event:
    """A decoded JSON event as an `Event`, checked as `POST /v1/events` checks it."""
    obj = _object(raw, EVENT_FIELDS, "an event")
    customer = _id(obj, "customer_id")
    etype = obj.get("type")
    if not isinstance(etype, str) or len(etype) > 64 or not NAME.match(etype):
        raise InvalidMessage("type", f"required, a name of letters, digits and _ (got {etype!r})")
    event_id = obj.get("event_id")
    if event_id is not None and (not isinstance(event_id, str) or not 1 <= len(event_id) <= 128):
        raise InvalidMessage("event_id", "a string of 1-128 characters")
    props = obj.get("properties") or {}
    if not isinstance(props, dict):
        raise InvalidMessage("properties", "expected an object of name: value")
    for name, value in props.items():
        # Property names become part of bucket field names ("purchase.amount|<hour>").
        if not NAME.match(name):
            raise InvalidMessage(f"properties.{name}", "property names are letters, digits and _")
        if isinstance(value, dict | list):
            raise InvalidMessage(f"properties.{name}", "expected a number, string or boolean")
        if isinstance(value, float) and not math.isfinite(value):
            raise InvalidMessage(
                f"properties.{name}", f"{value} cannot be counted; expected a finite number"
            )
    try:
        ts = now if obj.get("ts") is None else normalize("ts", TIME, obj["ts"])
        props = normalize_all(schema.get(etype, {}), props, "properties.")
    except ValueProblem as p:
        raise InvalidMessage(p.field, p.message) from None
    if ts > now + MAX_FUTURE_SECONDS:
        raise InvalidMessage("ts", f"{obj['ts']!r} is in the future")
    return Event(customer, etype, float(ts), props, event_id)


def parse_identify(raw: Any) -> Identify:
    """A decoded JSON identify as an `Identify`, checked as `POST /v1/identify` checks it."""
    obj = _object(raw, IDENTIFY_FIELDS, "an identify")
    anonymous_id, customer_id = _id(obj, "anonymous_id"), _id(obj, "customer_id")
    if anonymous_id == customer_id:
        raise InvalidMessage("anonymous_id", "anonymous_id and customer_id are the same id")
    return Identify(anonymous_id, customer_id)

"""The OpenAPI document: exactly what the server validates and every status it answers.

FastAPI describes its own routes; this module adds what it cannot see and
tightens what it describes loosely:

- `/v1/decide` and `/v1/feedback` (plain Starlette routes decoded by msgspec),
  with schemas from the same msgspec Structs;
- the request schemas typed by the *loaded* rulesets: the decide context
  (enums, types, per ruleset), profile attributes, event properties; so the
  document is rebuilt when a ruleset version changes;
- the limits of `server.security.limits` and the routes (`limit` 1..50, id lengths,
  context size, event batch size);
- every error status each operation can answer, all with the one error body,
  the `Allow`, `Retry-After` and RateLimit headers, and the scope each
  operation needs (`security`, with the scope as the role, OpenAPI 3.1).

`tests/server/test_contract.py` runs schemathesis over every operation with
every check to keep this true.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

import msgspec
from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from arbiter.dsl.types import Type
from arbiter.engine.records import DecideRequest, Decision
from arbiter.engine.validate import MAX_LIMIT
from arbiter.server.routes.feedback import FeedbackIn
from arbiter.server.security import limits

_REF = "#/components/schemas/{name}"

ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "error": {
            "type": "object",
            "properties": {
                "code": {"type": "string"},
                "message": {"type": "string"},
                "field": {"type": "string"},
                "diagnostics": {"type": "array", "items": {"type": "object"}},
            },
            "required": ["code", "message"],
        }
    },
    "required": ["error"],
}

# The scope each operation needs (server.security.auth.SCOPES); none for health and docs.
SCOPE_OF: dict[tuple[str, str], str] = {
    ("post", "/v1/decide"): "decide",
    ("post", "/v1/feedback"): "feedback",
    ("post", "/v1/events"): "events",
    ("get", "/v1/profiles/{customer_id}"): "profiles:read",
    ("put", "/v1/profiles/{customer_id}"): "profiles:write",
    ("patch", "/v1/profiles/{customer_id}"): "profiles:write",
    ("delete", "/v1/profiles/{customer_id}"): "profiles:write",
    ("get", "/v1/rulesets"): "rulesets:read",
    ("get", "/v1/rulesets/{name}"): "rulesets:read",
    ("put", "/v1/rulesets/{name}"): "rulesets:write",
    ("post", "/v1/rulesets/{name}/rollback"): "rulesets:write",
    ("post", "/v1/identify"): "profiles:write",
    ("get", "/v1/experiments/{name}"): "reports:read",
    ("post", "/v1/check"): "rulesets:read",
    ("post", "/v1/format"): "rulesets:read",
    ("post", "/v1/studio/try"): "rulesets:read",
    ("post", "/v1/studio/scenarios"): "rulesets:read",
    ("post", "/v1/studio/simulate"): "profiles:read",
    ("post", "/v1/studio/diff"): "rulesets:read",
    ("get", "/v1/studio/customers"): "profiles:read",
    ("get", "/v1/studio/rulesets/{name}/versions"): "rulesets:read",
    ("get", "/v1/keys"): "admin",
    ("post", "/v1/keys"): "admin",
    ("delete", "/v1/keys/{name}"): "admin",
    ("post", "/v1/keys/{name}/rotate"): "admin",
}

_STATUS_TEXT = {
    "400": "Malformed body (not JSON, or not UTF-8 text)",
    "401": "No key, an unknown key or an expired key",
    "403": "The key lacks the scope, or the browser origin is not allowed",
    "404": "Not found; `field` names what",
    "409": "Conflicts with the current state; `field` names what",
    "413": "Body over the size limit or JSON nested too deep",
    "422": "Invalid request; `field` names the field",
    "429": "Over the key's rate limit; retry after `Retry-After` seconds",
    "503": "Redis cannot be reached",
}
# Statuses beyond the ones every /v1 operation may answer (401, 403, 429).
_EXTRA_STATUSES: dict[tuple[str, str], tuple[str, ...]] = {
    ("post", "/v1/decide"): ("404",),
    ("post", "/v1/feedback"): ("404", "409", "503"),
    ("post", "/v1/events"): ("503",),
    ("get", "/v1/profiles/{customer_id}"): ("404", "503"),
    ("put", "/v1/profiles/{customer_id}"): ("503",),
    ("patch", "/v1/profiles/{customer_id}"): ("503",),
    ("delete", "/v1/profiles/{customer_id}"): ("503",),
    ("get", "/v1/rulesets/{name}"): ("404", "503"),
    ("put", "/v1/rulesets/{name}"): ("503",),
    ("post", "/v1/rulesets/{name}/rollback"): ("404", "409", "503"),
    ("post", "/v1/identify"): ("409", "503"),
    ("get", "/v1/experiments/{name}"): ("404", "503"),
    ("get", "/v1/keys"): ("503",),
    ("post", "/v1/keys"): ("409", "503"),
    ("delete", "/v1/keys/{name}"): ("404", "503"),
    ("post", "/v1/keys/{name}/rotate"): ("404", "409", "503"),
}
_RATE_HEADERS = {
    "RateLimit": {
        "description": "Quota left and seconds to reset (draft-ietf-httpapi-ratelimit-headers)",
        "schema": {"type": "string"},
    },
    "RateLimit-Policy": {
        "description": "The key's quota and window",
        "schema": {"type": "string"},
    },
}
_ID = {"type": "string", "minLength": 1, "maxLength": limits.MAX_ID}


def _json(schema: dict[str, Any]) -> dict[str, Any]:
    return {"content": {"application/json": {"schema": schema}}}


def _error(description: str) -> dict[str, Any]:
    return {"description": description, **_json({"$ref": _REF.format(name="Error")})}


def value_schema(ty: Type) -> dict[str, Any]:
    """The JSON Schema of a value of a declared `.rules` type, as `engine.validate` checks it."""
    kind = ty.kind
    if kind == "number":
        return {"type": "number"}
    if kind == "string":
        return {"type": "string"}
    if kind == "bool":
        return {"type": "boolean"}
    if kind == "enum":
        return {"enum": list(ty.members)}
    if kind == "time":
        return {
            "anyOf": [
                {"type": "number", "description": "epoch seconds"},
                {"type": "string", "format": "date-time"},
            ]
        }
    if kind == "set":
        return {"type": "array", "items": {"type": "string"}}
    return {}


def _typed_object(schema: Mapping[str, Type], *, nullable: bool = True) -> dict[str, Any]:
    """An object whose declared keys have their types (missing or null allowed)."""
    props: dict[str, Any] = {}
    for key, ty in sorted(schema.items()):
        value = value_schema(ty)
        props[key] = {"anyOf": [value, {"type": "null"}]} if nullable and value else value
    return {"type": "object", "properties": props}


def _context_schema(schema: Mapping[str, Type]) -> dict[str, Any]:
    out = _typed_object(schema)
    # Undeclared keys pass through to the rules untouched, within the size limits.
    out["maxProperties"] = limits.MAX_CONTEXT_KEYS
    out["propertyNames"] = {"maxLength": limits.MAX_KEY_LENGTH}
    out["additionalProperties"] = {
        "anyOf": [
            {"type": "string", "maxLength": limits.MAX_STRING},
            {"type": ["number", "boolean", "null"]},
            {"type": "array", "maxItems": limits.MAX_CONTEXT_LIST},
            {"type": "object", "maxProperties": limits.MAX_CONTEXT_LIST},
        ]
    }
    for key, prop in out["properties"].items():
        if schema[key].kind == "string":
            prop["anyOf"][0]["maxLength"] = limits.MAX_STRING
    return out


def _decide_request(base: dict[str, Any], rulesets: Mapping[str, Any], default: str | None) -> Any:
    base = copy.deepcopy(base)
    props = base["properties"]
    props["customer_id"] = dict(_ID)
    props["limit"] = {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT, "default": 1}
    props["ruleset"] = {
        "anyOf": [{"type": "string", "maxLength": limits.MAX_ID}, {"type": "null"}],
        "default": None,
        "description": "a loaded ruleset (unknown: 404); absent: the default ruleset",
    }
    if not rulesets:
        props["context"] = _context_schema({})
        return base
    variants = []
    for name, live in sorted(rulesets.items()):
        variant = copy.deepcopy(base)
        names = [{"const": name}]
        if name == default:
            names.append({"type": "null"})
        variant["properties"]["ruleset"] = {"anyOf": names}
        variant["properties"]["context"] = _context_schema(live.context_schema)
        if name != default:
            variant["required"] = [*variant.get("required", []), "ruleset"]
        variants.append(variant)
    if len(variants) == 1:
        return variants[0]
    return {"title": "DecideRequest", "description": base.get("description"), "anyOf": variants}


def hot_paths(state: Any = None) -> tuple[dict[str, Any], dict[str, Any]]:
    """(paths, component schemas) for decide and feedback."""
    (req, dec, fb), components = msgspec.json.schema_components(
        [DecideRequest, Decision, FeedbackIn], ref_template=_REF
    )
    components["Error"] = ERROR_SCHEMA
    live = state.rulesets.live if state is not None else {}
    default = state.rulesets.default if state is not None else None
    components["DecideRequest"] = _decide_request(components["DecideRequest"], live, default)
    feedback = components["FeedbackIn"]["properties"]
    feedback["action"] = {
        "type": "string",
        "description": "an action the decision returned (another one: 409)",
    }
    accepted = {
        "type": "object",
        "properties": {"accepted": {"type": "boolean"}, "duplicate": {"type": "boolean"}},
        "required": ["accepted", "duplicate"],
    }
    paths = {
        "/v1/decide": {
            "post": {
                "tags": ["decisions"],
                "summary": "Decide the next best action(s)",
                "requestBody": {"required": True, **_json(req)},
                "responses": {"200": {"description": "The decision", **_json(dec)}},
            }
        },
        "/v1/feedback": {
            "post": {
                "tags": ["decisions"],
                "summary": "Report the outcome of a returned action",
                "requestBody": {"required": True, **_json(fb)},
                "responses": {
                    "202": {
                        "description": "Accepted (or a duplicate, counted once)",
                        **_json(accepted),
                    }
                },
            }
        },
    }
    return paths, components


def _typed_bodies(schema: dict[str, Any], state: Any) -> None:
    """Profile attributes and event properties typed by the loaded rulesets."""
    if state is None:
        return
    profile: dict[str, Type] = {}
    events: dict[str, dict[str, Type]] = {}
    for live in state.rulesets.live.values():
        for key, ty in live.profile_schema.items():
            profile.setdefault(key, ty)
        for name, fields in live.plan.checked.events.items():
            events.setdefault(name, fields)
    attributes = _typed_object(profile)
    attributes["description"] = "attributes; declared ones typed, others stored as given"
    for method in ("put", "patch"):
        op = schema["paths"]["/v1/profiles/{customer_id}"][method]
        op["requestBody"] = {"required": True, **_json(attributes)}
    comps = schema["components"]["schemas"]
    event = comps["EventIn"]
    event["properties"]["customer_id"] = dict(_ID)
    # A declared event's properties carry their types.
    event["allOf"] = [
        {
            "if": {"properties": {"type": {"const": name}}, "required": ["type"]},
            "then": {"properties": {"properties": _typed_object(fields)}},
        }
        for name, fields in sorted(events.items())
        if fields
    ]
    event["properties"]["ts"] = {
        "anyOf": [*value_schema(Type("time"))["anyOf"], {"type": "null"}],
        "description": "when it happened (default: now); at most 5 minutes in the future",
    }


def _finish(schema: dict[str, Any]) -> None:
    """Statuses, error bodies, headers and security on every operation."""
    components = schema.setdefault("components", {})
    components.setdefault("schemas", {})["Error"] = ERROR_SCHEMA
    for unused in ("HTTPValidationError", "ValidationError"):
        components["schemas"].pop(unused, None)
    components["securitySchemes"] = {
        "bearer": {
            "type": "http",
            "scheme": "bearer",
            "description": "an API key; the role is the scope the operation needs",
        }
    }
    for path, ops in schema["paths"].items():
        for method, op in ops.items():
            responses = op.setdefault("responses", {})
            # FastAPI's own 422 (HTTPValidationError) is replaced by ours where it can happen.
            responses.pop("422", None)
            for status, response in list(responses.items()):
                if status.startswith("2"):
                    response.setdefault("headers", {}).update(_RATE_HEADERS)
            statuses: list[str] = []
            if path.startswith("/v1/"):
                statuses += ["401", "403", "429"]
            if "requestBody" in op:
                statuses += ["400", "413", "422"]
            if op.get("parameters"):
                statuses += ["422"]
            statuses += _EXTRA_STATUSES.get((method, path), ())
            for status in sorted(set(statuses)):
                responses[status] = _error(_STATUS_TEXT[status])
            if "429" in responses:
                responses["429"]["headers"] = {
                    "Retry-After": {"schema": {"type": "integer"}},
                    **_RATE_HEADERS,
                }
            if "401" in responses:
                responses["401"]["headers"] = {"WWW-Authenticate": {"schema": {"type": "string"}}}
            for param in op.get("parameters", ()):
                if param.get("name") == "customer_id":
                    param["schema"] = dict(_ID)
            scope = SCOPE_OF.get((method, path))
            if scope is not None:
                op["security"] = [{"bearer": [scope]}]
                op["description"] = (op.get("description") or "") + f"\n\nNeeds scope `{scope}`."
    ready = schema["paths"].get("/readyz", {}).get("get")
    if ready is not None:
        ready["responses"]["503"] = {
            "description": "Not ready: Redis unreachable or no ruleset loaded",
            **_json({"type": "object"}),
        }
    text_put = schema["paths"].get("/v1/rulesets/{name}", {}).get("put")
    if text_put is not None:
        text_put["requestBody"]["required"] = True


def build_schema(app: FastAPI, state: Any = None) -> dict[str, Any]:
    """The whole document for `app`, typed by `state`'s live rulesets when given."""
    schema = get_openapi(
        title=app.title, version=app.version, description=app.description, routes=app.routes
    )
    paths, components = hot_paths(state)
    schema.setdefault("paths", {}).update(paths)
    schema.setdefault("components", {}).setdefault("schemas", {}).update(components)
    _typed_bodies(schema, state)
    _finish(schema)
    if state is not None:
        public = sorted(state.keys.public)
        for method, path in SCOPE_OF:
            op = schema["paths"][path][method]
            if SCOPE_OF[(method, path)] in public:
                op["security"].append({})  # public: a key is optional
    return schema


def install(app: FastAPI) -> None:
    """Make `app.openapi()` the document above, rebuilt when the live rulesets change."""
    cache: dict[Any, dict[str, Any]] = {}

    def build() -> dict[str, Any]:
        state = getattr(app.state, "arbiter", None)
        stamp = (
            tuple(sorted((n, lv.plan.version) for n, lv in state.rulesets.live.items()))
            if state is not None
            else None
        )
        if stamp not in cache:
            cache.clear()
            cache[stamp] = build_schema(app, state)
        app.openapi_schema = cache[stamp]
        return cache[stamp]

    app.openapi = build  # type: ignore[method-assign]

"""OpenAPI description of the hot-path routes, which FastAPI cannot see.

`/v1/decide` and `/v1/feedback` are plain Starlette routes decoded by msgspec;
their request and response schemas come from the same msgspec Structs.
"""

from __future__ import annotations

from typing import Any

import msgspec
from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from arbiter.engine.records import DecideRequest, Decision
from arbiter.server.routes_decide import FeedbackIn

_REF = "#/components/schemas/{name}"

ERROR_SCHEMA = {
    "type": "object",
    "properties": {
        "error": {
            "type": "object",
            "properties": {
                "code": {"type": "string"},
                "message": {"type": "string"},
                "field": {"type": "string"},
            },
            "required": ["code", "message"],
        }
    },
}


def _json(schema: dict[str, Any]) -> dict[str, Any]:
    return {"content": {"application/json": {"schema": schema}}}


def _error(description: str) -> dict[str, Any]:
    return {"description": description, **_json({"$ref": _REF.format(name="Error")})}


def hot_paths() -> tuple[dict[str, Any], dict[str, Any]]:
    """(paths, component schemas) for decide and feedback."""
    (req, dec, fb), components = msgspec.json.schema_components(
        [DecideRequest, Decision, FeedbackIn], ref_template=_REF
    )
    components["Error"] = ERROR_SCHEMA
    accepted = {
        "type": "object",
        "properties": {"accepted": {"type": "boolean"}, "duplicate": {"type": "boolean"}},
    }
    paths = {
        "/v1/decide": {
            "post": {
                "tags": ["decisions"],
                "summary": "Decide the next best action(s)",
                "requestBody": {"required": True, **_json(req)},
                "responses": {
                    "200": {"description": "The decision", **_json(dec)},
                    "401": _error("Missing key"),
                    "403": _error("Key lacks the decide scope"),
                    "404": _error("Unknown ruleset"),
                    "422": _error("Invalid request; `field` names the field"),
                },
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
                    },
                    "404": _error("Unknown or expired decision"),
                    "422": _error("Invalid request; `field` names the field"),
                },
            }
        },
    }
    return paths, components


def install(app: FastAPI) -> None:
    """Make `app.openapi()` include the hot-path routes."""

    def build() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = get_openapi(
            title=app.title, version=app.version, description=app.description, routes=app.routes
        )
        paths, components = hot_paths()
        schema.setdefault("paths", {}).update(paths)
        schema.setdefault("components", {}).setdefault("schemas", {}).update(components)
        app.openapi_schema = schema
        return schema

    app.openapi = build  # type: ignore[method-assign]

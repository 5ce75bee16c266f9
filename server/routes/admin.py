"""Profiles, events, rulesets, health: FastAPI routes (not on the decision hot path)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Header, Request
from fastapi.responses import PlainTextResponse, Response
from pydantic import BaseModel, Field, StrictFloat, StrictInt, StrictStr
from redis.exceptions import RedisError

from arbiter import dsl
from arbiter.dsl.types import Type
from arbiter.engine.store.profiles import Event
from arbiter.engine.triggers.schedule import schedule_triggers
from arbiter.engine.validate import ValueProblem, normalize, normalize_all
from arbiter.server.background.intake import (
    live_grouped,
    live_outcome_types,
    live_triggers,
    refresh_metrics,
)
from arbiter.server.errors import ApiError
from arbiter.server.responses import JSONResponse
from arbiter.server.rulesets import NameMismatch, NoEarlierVersion
from arbiter.server.security.access import authorize
from arbiter.server.state import AppState
from arbiter.server.telemetry.lag import learner_lag

router = APIRouter()
Auth = Annotated[str | None, Header(alias="Authorization", include_in_schema=False)]
# Well under the body limit at typical event sizes, so an over-long batch gets a 422
# naming `events`, not a 413 for the body.
MAX_EVENTS = 1_000


def _st(request: Request) -> AppState:
    state: AppState = request.app.state.arbiter
    return state


def _profile_schema(st: AppState) -> dict[str, Type]:
    schema: dict[str, Type] = {}
    for live in st.rulesets.live.values():
        for key, ty in live.profile_schema.items():
            schema.setdefault(key, ty)
    return schema


def _check_customer(customer_id: str) -> None:
    if not customer_id or len(customer_id) > 256:
        raise ApiError(
            422, "invalid_request", "customer_id must be 1-256 characters", "customer_id"
        )


async def _redis_call(awaitable: Any) -> Any:
    try:
        return await awaitable
    except (RedisError, OSError) as exc:
        raise ApiError(
            503, "unavailable", f"cannot reach Redis: {type(exc).__name__}: {exc}"
        ) from None


# ----------------------------------------------------------------- profiles


@router.get("/v1/profiles/{customer_id}", tags=["profiles"])
async def get_profile(customer_id: str, request: Request, authorization: Auth = None) -> Any:
    """A customer's attributes and the last time of each event type."""
    st = _st(request)
    await authorize(request, "profiles:read")
    _check_customer(customer_id)
    resolved = await _redis_call(st.admin_store.resolve(customer_id))
    attributes = await _redis_call(st.admin_store.get_profile(resolved))
    last_seen = await _redis_call(st.admin_store.event_summary(resolved))
    if not attributes and not last_seen:
        raise ApiError(
            404, "unknown_customer", f"nothing is stored on '{customer_id}'", "customer_id"
        )
    body = {"customer_id": customer_id, "attributes": attributes, "last_seen": last_seen}
    if resolved != customer_id:
        body["resolved_id"] = resolved  # a linked anonymous id reads its customer
    return body


async def _profile_write(
    request: Request, customer_id: str, attributes: dict[str, Any]
) -> tuple[AppState, dict[str, Any], str]:
    """Auth, id and type checks shared by PUT and PATCH: the normalised values, and the
    customer the id resolves to (a linked anonymous id writes its customer's profile)."""
    st = _st(request)
    await authorize(request, "profiles:write")
    _check_customer(customer_id)
    try:
        values = normalize_all(_profile_schema(st), attributes)
    except ValueProblem as p:
        raise ApiError(422, "invalid_request", str(p), p.field) from None
    return st, values, await _redis_call(st.admin_store.resolve(customer_id))


@router.put("/v1/profiles/{customer_id}", tags=["profiles"])
async def put_profile(
    customer_id: str,
    request: Request,
    attributes: Annotated[dict[str, Any], Body()],
    authorization: Auth = None,
) -> Any:
    """Replace a customer's attributes; values are checked against the declared profile types."""
    st, values, resolved = await _profile_write(request, customer_id, attributes)
    values = {k: v for k, v in values.items() if v is not None}
    await _redis_call(st.admin_store.put_profile(resolved, values))
    return {"customer_id": customer_id, "attributes": values}


@router.patch("/v1/profiles/{customer_id}", tags=["profiles"])
async def patch_profile(
    customer_id: str,
    request: Request,
    attributes: Annotated[dict[str, Any], Body()],
    authorization: Auth = None,
) -> Any:
    """Merge attributes in; `null` removes one."""
    st, values, resolved = await _profile_write(request, customer_id, attributes)
    await _redis_call(st.admin_store.patch_profile(resolved, values))
    merged = await _redis_call(st.admin_store.get_profile(resolved))
    return {"customer_id": customer_id, "attributes": merged}


@router.delete("/v1/profiles/{customer_id}", tags=["profiles"])
async def delete_profile(customer_id: str, request: Request, authorization: Auth = None) -> Any:
    """Erase everything held on a person: attributes, windows, caps, decision-log entries.

    The id may be a customer or an anonymous id linked to one: the customer
    and every id linked to it are erased together.
    """
    st = _st(request)
    await authorize(request, "profiles:write")
    _check_customer(customer_id)
    await st.log.flush()
    root = await _redis_call(st.admin_store.resolve(customer_id))
    linked = await _redis_call(st.admin_store.identities.linked(root))
    deleted = await _redis_call(st.admin_store.erase(customer_id))
    erased_ids = sorted({root, *linked} - {customer_id})
    return {"customer_id": customer_id, "erased_keys": deleted, "erased_linked_ids": erased_ids}


# ------------------------------------------------------------------- events


class EventIn(BaseModel):
    customer_id: str = Field(min_length=1, max_length=256)
    type: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    # Strict: JSON `true` is not a time (pydantic would read it as 1.0).
    ts: StrictFloat | StrictInt | StrictStr | None = None
    event_id: str | None = Field(default=None, max_length=128)
    properties: dict[str, Any] = Field(default_factory=dict)


class EventsIn(BaseModel):
    events: list[EventIn] = Field(max_length=MAX_EVENTS)


def _event_schema(st: AppState) -> dict[str, dict[str, Type]]:
    schema: dict[str, dict[str, Type]] = {}
    for live in st.rulesets.live.values():
        for name, fields in live.plan.checked.events.items():
            schema.setdefault(name, fields)
    return schema


@router.post("/v1/events", status_code=202, tags=["events"])
async def post_events(body: EventsIn, request: Request, authorization: Auth = None) -> Any:
    """Count events into their customers' time windows (idempotent per `event_id`)."""
    st = _st(request)
    await authorize(request, "events")
    now = st.clock()
    schema = _event_schema(st)
    events: list[Event] = []
    for i, ev in enumerate(body.events):
        prefix = f"events.{i}"
        try:
            ts = now if ev.ts is None else normalize(f"{prefix}.ts", Type("time"), ev.ts)
            props = normalize_all(schema.get(ev.type, {}), ev.properties, f"{prefix}.properties.")
        except ValueProblem as p:
            raise ApiError(422, "invalid_request", str(p), p.field) from None
        if ts > now + 300:
            raise ApiError(422, "invalid_request", f"{prefix}.ts is in the future", f"{prefix}.ts")
        events.append(Event(ev.customer_id, ev.type, ts, props, ev.event_id))
    outcomes = live_outcome_types(st)
    counted = await _redis_call(
        st.admin_store.add_events(
            events,
            now=now,  # arrival on the app's clock, as the events' own times are checked
            outcomes=outcomes,
            outcome_maxlen=st.settings.decision_stream_maxlen,
            grouped=live_grouped(st),
        )
    )
    specs = live_triggers(st)
    if specs:
        await _redis_call(
            schedule_triggers(st.admin_redis, specs, events, now, shards=st.settings.trigger_shards)
        )
    st.metrics.events.inc(counted)
    return {"received": len(events), "counted": counted, "duplicates": len(events) - counted}


# ----------------------------------------------------------------- rulesets


def _live_summary(st: AppState, name: str) -> dict[str, Any]:
    live = st.rulesets.live[name]
    return {
        "name": name,
        "version": live.plan.version,
        "version_no": live.version_no,
        "default": st.rulesets.default == name,
        "actions": [a.name for a in live.plan.actions],
    }


@router.get("/v1/rulesets", tags=["rulesets"])
async def list_rulesets(request: Request, authorization: Auth = None) -> Any:
    """Live rulesets of this server."""
    st = _st(request)
    await authorize(request, "rulesets:read")
    return {"rulesets": [_live_summary(st, name) for name in sorted(st.rulesets.live)]}


@router.get("/v1/rulesets/{name}", tags=["rulesets"])
async def get_ruleset(name: str, request: Request, authorization: Auth = None) -> Any:
    """The live version of a ruleset, with its text."""
    st = _st(request)
    await authorize(request, "rulesets:read")
    if name not in st.rulesets.live:
        raise ApiError(404, "unknown_ruleset", f"no ruleset named '{name}'", "name")
    summary = _live_summary(st, name)
    summary["versions"] = await _redis_call(st.rulesets.versions(name))
    summary["text"] = st.rulesets.live[name].text
    return summary


def _rules_invalid(exc: dsl.RulesError) -> JSONResponse:
    body = ApiError(
        422,
        "rules_invalid",
        exc.format(),
        extra={"diagnostics": [d.to_json() for d in exc.diagnostics]},
    ).body()
    return JSONResponse(body, status_code=422)


@router.put(
    "/v1/rulesets/{name}",
    tags=["rulesets"],
    openapi_extra={"requestBody": {"content": {"text/plain": {"schema": {"type": "string"}}}}},
)
async def put_ruleset(name: str, request: Request, authorization: Auth = None) -> Response:
    """Upload `.rules` text; if it checks and compiles it becomes live, else 422 and nothing changes."""
    st = _st(request)
    await authorize(request, "rulesets:write")
    raw = await request.body()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ApiError(400, "bad_encoding", "the body must be UTF-8 .rules text") from None
    try:
        author = request.headers.get("x-arbiter-author")
        live = await st.rulesets.put(name, text, author=author[:128] if author else None)
    except dsl.RulesError as exc:
        return _rules_invalid(exc)
    except NameMismatch as exc:
        raise ApiError(422, "name_mismatch", str(exc), "name") from None
    except (RedisError, OSError) as exc:
        raise ApiError(
            503, "unavailable", f"cannot reach Redis: {type(exc).__name__}: {exc}"
        ) from None
    body = _live_summary(st, name)
    body["warnings"] = [d.to_json() for d in live.plan.checked.warnings]
    return JSONResponse(body)


@router.post("/v1/rulesets/{name}/rollback", tags=["rulesets"])
async def rollback_ruleset(name: str, request: Request, authorization: Auth = None) -> Any:
    """Make the previous version live again."""
    st = _st(request)
    await authorize(request, "rulesets:write")
    if name not in st.rulesets.live:
        raise ApiError(404, "unknown_ruleset", f"no ruleset named '{name}'", "name")
    try:
        await st.rulesets.rollback(name)
    except NoEarlierVersion as exc:
        raise ApiError(409, "no_earlier_version", str(exc)) from None
    except dsl.RulesError as exc:
        return _rules_invalid(exc)
    return _live_summary(st, name)


# ------------------------------------------------------------------- health


@router.get("/healthz", tags=["health"])
async def healthz() -> Any:
    """Liveness: the process answers."""
    return {"status": "ok"}


@router.get("/readyz", tags=["health"])
async def readyz(request: Request) -> Any:
    """Readiness: Redis answers and at least one ruleset is loaded."""
    st = _st(request)
    problems = []
    try:
        await st.admin_redis.ping()
    except (RedisError, OSError) as exc:
        problems.append(f"redis: {exc}")
    if not st.rulesets.live:
        problems.append("no ruleset loaded")
    if problems:
        return JSONResponse({"status": "unready", "problems": problems}, status_code=503)
    return {"status": "ready", "rulesets": sorted(st.rulesets.live)}


@router.get("/metrics", tags=["health"], response_class=PlainTextResponse)
async def metrics(request: Request) -> Response:
    """Prometheus metrics."""
    st = _st(request)
    await refresh_metrics(st)
    st.metrics.learner_lag.update(await learner_lag(st.admin_redis, st.clock()))
    return Response(st.metrics.render(), media_type="text/plain; version=0.0.4")

"""The hot path: `POST /v1/decide` (feedback is `server.routes.feedback`).

A plain Starlette endpoint, not a FastAPI one: bodies are decoded straight
into msgspec Structs and answers encoded by one reused encoder, so a decision
does not pay FastAPI's dependency and pydantic machinery. Its OpenAPI
description is added by `server.openapi`; `server.fast_path` serves it ahead
of the middleware stack.
"""

from __future__ import annotations

import time

import msgspec
from redis.exceptions import RedisError
from starlette.requests import Request
from starlette.responses import Response

from arbiter.engine.decision.decide import decide
from arbiter.engine.decision.policies import contacts_of
from arbiter.engine.learning.attribution import exposures_of
from arbiter.engine.records import (
    ENCODER,
    REQUEST_DECODER,
    DecideRequest,
    Inputs,
)
from arbiter.engine.validate import ValueProblem, check_request, normalize_all
from arbiter.server.errors import ApiError, from_msgspec
from arbiter.server.security.access import Access, access_of, authorize
from arbiter.server.security.limits import check_decide, check_depth
from arbiter.server.state import AppState, new_decision_id
from arbiter.server.telemetry.stages import StageClock, TimedOracle

_REDIS_DOWN = (RedisError, OSError, TimeoutError)
# Only for a `limit` sent as an integral float (3.0); lax mode also turns "3" into 3,
# so it is used only after the strict decoder named that one problem.
_LAX_DECODER = msgspec.json.Decoder(DecideRequest, strict=False)
_JSON = "application/json"


def _state(request: Request) -> AppState:
    state: AppState = request.app.state.arbiter
    return state


def _sentence(p: ValueProblem) -> str:
    # "customer_id must not be empty", as this route has always worded it.
    return f"{p.field} {p.message}" if p.field in ("customer_id", "limit") else str(p)


async def handle_decide(
    st: AppState, body: bytes, authorization: str | None, access: Access | None = None
) -> bytes:
    """Decide for one request body; the JSON answer, or `ApiError`.

    With `access`, the caller was admitted already (`server.security.access.admit`)
    and the decision id is noted there for the access log.
    """
    started = time.perf_counter()
    if access is None:
        st.keys.require("decide", authorization)
    check_depth(body)
    try:
        req = REQUEST_DECODER.decode(body)
    except msgspec.ValidationError as exc:
        # JSON Schema counts 3.0 as an integer; msgspec's strict int does not.
        if "Expected `int`, got `float` - at `$.limit`" not in str(exc):
            raise from_msgspec(exc) from None
        try:
            req = _LAX_DECODER.decode(body)
        except msgspec.DecodeError as lax:
            raise from_msgspec(lax) from None
    except msgspec.DecodeError as exc:
        raise from_msgspec(exc) from None
    # One validation path (engine.validate), shared with `arbiter decide`; the size
    # limits of the edge (server.security.limits) first.
    try:
        check_request(req)
        check_decide(req.customer_id, req.context, req.ruleset)
        live = st.rulesets.get(req.ruleset)
        if live is None:
            raise ApiError(404, "unknown_ruleset", f"no ruleset named '{req.ruleset}'", "ruleset")
        req.context = normalize_all(live.context_schema, req.context, "context.")
    except ValueProblem as p:
        raise ApiError(422, "invalid_request", _sentence(p), p.field) from None

    now = st.clock()
    metrics = st.metrics
    read_started = time.perf_counter()
    try:
        inputs = await st.store.fetch(req.customer_id, live.plan.needs, now)
    except _REDIS_DOWN as exc:
        # Decide on what needs no profile (context-only rules, the default).
        inputs = Inputs(degraded=True)
        cause = "redis_timeout" if isinstance(exc, TimeoutError) else "redis_error"
        metrics.degraded.labels(cause).inc()
        metrics.redis_errors.labels("decide_read", cause.removeprefix("redis_")).inc()
    decision_id = new_decision_id(now)
    if access is not None:
        access.decision_id = decision_id
    oracle = TimedOracle(live.models, live.bandits)
    clock = StageClock(oracle)
    decide_started = clock._mark
    metrics.stage_of["redis_read"].observe(decide_started - read_started)
    decision, record = decide(
        live.plan, req, inputs, decision_id=decision_id, now=now, oracle=oracle, lap=clock.lap
    )
    record.timings = {
        "fetch": round((decide_started - read_started) * 1000, 3),
        "decide": round((time.perf_counter() - decide_started) * 1000, 3),
    }
    contacts = []
    channel = req.context.get("channel")
    for out in decision.actions:
        spec = live.plan.action(out.action)
        if spec.cap is not None:
            contacts.append((spec.name, spec.cap.window_seconds))
        # Contact policies and contact history count through the same write (no-op without).
        contacts += contacts_of(live.plan, spec, channel)
    exposures = exposures_of(live.plan.checked.bandits, record) if record.bandits else ()
    # Never blocks; a full queue drops its oldest (counted).
    st.log.submit(record, contacts, exposures)
    clock.lap("log")
    encoded = ENCODER.encode(decision)
    clock.lap("encode")
    stage_of = metrics.stage_of
    for stage, seconds in clock.finish().items():
        stage_of[stage].observe(seconds)
    if record.errors:
        metrics.rule_errors.labels(live.name).inc(len(record.errors))
    metrics.decisions_of[live.name, "true" if inputs.degraded else "false"].inc()
    version = live.plan.version
    for out in decision.actions:
        metrics.actions_of[live.name, version, out.action].inc()
    if not decision.actions:
        metrics.actions_of[live.name, version, "none"].inc()
    metrics.latency.observe(time.perf_counter() - started)
    return encoded


async def decide_endpoint(request: Request) -> Response:
    """Decide the next best action(s) for one customer in one context."""
    access = access_of(request.scope)
    await authorize(request, "decide")
    body = await handle_decide(_state(request), await request.body(), None, access=access)
    return Response(body, media_type=_JSON)

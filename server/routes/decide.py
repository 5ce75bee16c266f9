"""The hot path: `POST /v1/decide` and `POST /v1/feedback`.

These are plain Starlette endpoints, not FastAPI ones: bodies are decoded
straight into msgspec Structs and answers encoded by one reused encoder, so a
decision does not pay FastAPI's dependency and pydantic machinery. Their
OpenAPI description is added by `server.openapi`.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import msgspec
from redis.exceptions import RedisError
from starlette.requests import Request
from starlette.responses import Response

from arbiter.engine.decision.decide import decide
from arbiter.engine.decision.policies import contacts_of, rejections_of
from arbiter.engine.decision.window_span import keep_seconds
from arbiter.engine.learning.attribution import exposures_of
from arbiter.engine.learning.reward_writer import append_reward
from arbiter.engine.records import (
    ENCODER,
    RECORD_DECODER,
    REQUEST_DECODER,
    DecideRequest,
    DecisionRecord,
    Inputs,
)
from arbiter.engine.store import keys
from arbiter.engine.validate import ValueProblem, check_request, normalize_all
from arbiter.server.errors import ApiError, from_msgspec
from arbiter.server.security.access import Access, access_of, authorize
from arbiter.server.security.limits import check_decide, check_depth
from arbiter.server.state import AppState, decision_time, new_decision_id
from arbiter.server.telemetry.stages import StageClock, TimedOracle

FEEDBACK_RETRY_AFTER_S = 1
_REDIS_DOWN = (RedisError, OSError, TimeoutError)


class FeedbackIn(msgspec.Struct, forbid_unknown_fields=True):
    """`POST /v1/feedback` body."""

    decision_id: str
    action: str
    reward: float


FEEDBACK_DECODER = msgspec.json.Decoder(FeedbackIn)
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


async def find_decision(st: AppState, decision_id: str) -> DecisionRecord | None:
    """A decision's record: still queued in this worker, or stored in Redis."""
    pending = st.log.pending.get(decision_id)
    if pending is not None:
        return pending
    raw = await st.admin_redis.get(keys.decision(decision_id))
    return RECORD_DECODER.decode(raw) if raw is not None else None


# Feedback may reach another worker (or machine) before the decision's record
# has left its maker's write-behind queue (it lingers ~5 ms a batch). For an id
# that says it was made within the last `RECENT_DECISION_S`, look again for up
# to `RECORD_WAIT_S` before answering 404, instead of refusing a valid reward.
RECENT_DECISION_S = 2.0
RECORD_WAIT_S = 0.25
_RECORD_POLL_S = 0.005


async def find_recent_decision(st: AppState, decision_id: str) -> DecisionRecord | None:
    """`find_decision`, waiting briefly for a record another worker is still writing."""
    record = await find_decision(st, decision_id)
    made = decision_time(decision_id)
    if record is not None or made is None or st.clock() - made > RECENT_DECISION_S:
        return record
    # Bounded by the monotonic clock: the app's clock may be a test's fixed one.
    give_up = time.monotonic() + RECORD_WAIT_S
    while record is None and time.monotonic() < give_up:
        await asyncio.sleep(_RECORD_POLL_S)
        record = await find_decision(st, decision_id)
    return record


async def feedback_endpoint(request: Request) -> Response:
    """Record the outcome of a decision's action (a click, a purchase, a rejection)."""
    st = _state(request)
    await authorize(request, "feedback")
    try:
        fb = FEEDBACK_DECODER.decode(await request.body())
    except msgspec.DecodeError as exc:
        raise from_msgspec(exc) from None
    try:
        record = await find_recent_decision(st, fb.decision_id)
    except _REDIS_DOWN as exc:
        raise _unavailable(exc) from None
    if record is None:
        raise ApiError(
            404,
            "unknown_decision",
            f"no decision '{fb.decision_id}' (or it expired)",
            "decision_id",
        )
    offered = [a.action for a in record.actions]
    if fb.action not in offered:
        # 409, not 422: the body is well formed; it conflicts with what the decision returned.
        raise ApiError(
            409,
            "action_not_offered",
            f"action '{fb.action}' was not returned by this decision (it returned {offered})",
            "action",
        )
    now = st.clock()
    try:
        if fb.decision_id in st.log.pending:
            # The learner joins each reward to the stored record and drops the
            # reward if the record is missing. Feedback sent within the log's
            # linger (a site sending reward 0 at once) would overtake its record
            # (6% of rewards lost in benchmarks/bandit_simulation.py): store it first.
            await st.log.flush_through(fb.decision_id)
        # The marker and the stream entry commit together: a failure here leaves
        # neither (the retry records the reward) or both (the retry is a duplicate).
        outcome = await append_reward(
            st.admin_redis, fb.decision_id, fb.action, fb.reward, now,
            marker_ttl_s=st.settings.decision_ttl_s,
            stream_maxlen=st.settings.decision_stream_maxlen,
        )  # fmt: skip
        if outcome.reward <= 0:
            # Idempotent, and redone on a duplicate: a failure after the append is
            # made good by the client's retry.
            await _count_rejection(st, record, fb, now)
    except _REDIS_DOWN as exc:
        st.metrics.feedback.labels("unavailable").inc()
        st.metrics.redis_errors.labels("feedback", "error").inc()
        raise _unavailable(exc) from None
    if not outcome.appended:
        st.metrics.feedback.labels("duplicate").inc()
        return Response(
            ENCODER.encode({"accepted": False, "duplicate": True}), 202, media_type=_JSON
        )
    st.metrics.feedback.labels("accepted").inc()
    body: dict[str, Any] = {"accepted": True, "duplicate": False}
    return Response(ENCODER.encode(body), 202, media_type=_JSON)


def _unavailable(exc: BaseException) -> ApiError:
    """503 with Retry-After: nothing (or all) of the feedback was written; retrying is safe."""
    return ApiError(
        503,
        "unavailable",
        f"cannot reach Redis: {type(exc).__name__}: {exc}",
        extra_headers={"Retry-After": str(FEEDBACK_RETRY_AFTER_S)},
    )


async def _count_rejection(
    st: AppState, record: DecisionRecord, fb: FeedbackIn, now: float
) -> None:
    live = st.rulesets.get(record.ruleset.name)
    if live is None or fb.action not in live.plan.action_index:
        return
    spec = live.plan.action(fb.action)
    targets = rejections_of(live.plan, spec, record.request.context.get("channel"))
    if spec.fatigue is not None:
        keep = keep_seconds(spec.fatigue.window_seconds) + keep_seconds(spec.fatigue.period_seconds)
        targets.append((fb.action, keep))
    # The customer the id resolved to then, or is linked to now.
    owner = record.inputs.resolved_id or record.request.customer_id
    owner = await st.admin_store.resolve(owner)
    # The action's own fatigue, and fatigue across offers of its channel and tags;
    # counted once per (decision, action), so a retried rejection is not counted twice.
    for name, keep in targets:
        await st.admin_store.record_rejection(
            owner, name, now, keep, once_as=f"fb:{fb.decision_id}:{fb.action}"
        )

"""The hot path: `POST /v1/decide` and `POST /v1/feedback`.

These are plain Starlette endpoints, not FastAPI ones: bodies are decoded
straight into msgspec Structs and answers encoded by one reused encoder, so a
decision does not pay FastAPI's dependency and pydantic machinery. Their
OpenAPI description is added by `server.openapi`.
"""

from __future__ import annotations

import time
from typing import Any

import msgspec
from redis.exceptions import RedisError
from starlette.requests import Request
from starlette.responses import Response

from arbiter.engine.decision.decide import decide
from arbiter.engine.decision.oracle import LiveOracle
from arbiter.engine.learning.reward_writer import append_reward
from arbiter.engine.records import ENCODER, RECORD_DECODER, REQUEST_DECODER, DecisionRecord, Inputs
from arbiter.engine.store import keys
from arbiter.engine.validate import ValueProblem, normalize_all
from arbiter.server.errors import ApiError, from_msgspec
from arbiter.server.state import AppState, new_decision_id

MAX_LIMIT = 50
FEEDBACK_RETRY_AFTER_S = 1
_REDIS_DOWN = (RedisError, OSError, TimeoutError)


class FeedbackIn(msgspec.Struct, forbid_unknown_fields=True):
    """`POST /v1/feedback` body."""

    decision_id: str
    action: str
    reward: float


FEEDBACK_DECODER = msgspec.json.Decoder(FeedbackIn)
_JSON = "application/json"


def _state(request: Request) -> AppState:
    state: AppState = request.app.state.arbiter
    return state


async def handle_decide(st: AppState, body: bytes, authorization: str | None) -> bytes:
    """Decide for one request body; the JSON answer, or `ApiError`."""
    started = time.perf_counter()
    st.keys.require("decide", authorization)
    try:
        req = REQUEST_DECODER.decode(body)
    except msgspec.DecodeError as exc:
        raise from_msgspec(exc) from None
    if not req.customer_id:
        raise ApiError(422, "invalid_request", "customer_id must not be empty", "customer_id")
    if not 1 <= req.limit <= MAX_LIMIT:
        raise ApiError(422, "invalid_request", f"limit must be between 1 and {MAX_LIMIT}", "limit")
    live = st.rulesets.get(req.ruleset)
    if live is None:
        raise ApiError(404, "unknown_ruleset", f"no ruleset named '{req.ruleset}'", "ruleset")
    try:
        req.context = normalize_all(live.context_schema, req.context, "context.")
    except ValueProblem as p:
        raise ApiError(422, "invalid_request", str(p), p.field) from None

    now = st.clock()
    try:
        inputs = await st.store.fetch(req.customer_id, live.plan.needs, now)
    except _REDIS_DOWN:
        # Decide on what needs no profile (context-only rules, the default).
        inputs = Inputs(degraded=True)
    decision_id = new_decision_id(now)
    oracle = LiveOracle(live.models, live.bandits)
    decision, record = decide(
        live.plan, req, inputs, decision_id=decision_id, now=now, oracle=oracle
    )
    contacts = []
    for out in decision.actions:
        spec = live.plan.action(out.action)
        if spec.cap is not None:
            contacts.append((spec.name, spec.cap.window_seconds))
    if not st.log.submit(record, contacts):
        st.metrics.log_dropped.inc()
    if record.errors:
        st.metrics.rule_errors.labels(live.name).inc(len(record.errors))
    st.metrics.decisions.labels(live.name, "true" if inputs.degraded else "false").inc()
    st.metrics.latency.observe(time.perf_counter() - started)
    return ENCODER.encode(decision)


async def decide_endpoint(request: Request) -> Response:
    """Decide the next best action(s) for one customer in one context."""
    body = await handle_decide(
        _state(request), await request.body(), request.headers.get("authorization")
    )
    return Response(body, media_type=_JSON)


async def find_decision(st: AppState, decision_id: str) -> DecisionRecord | None:
    """A decision's record: still queued in this worker, or stored in Redis."""
    pending = st.log.pending.get(decision_id)
    if pending is not None:
        return pending
    raw = await st.admin_redis.get(keys.decision(decision_id))
    return RECORD_DECODER.decode(raw) if raw is not None else None


async def feedback_endpoint(request: Request) -> Response:
    """Record the outcome of a decision's action (a click, a purchase, a rejection)."""
    st = _state(request)
    st.keys.require("decide", request.headers.get("authorization"))
    try:
        fb = FEEDBACK_DECODER.decode(await request.body())
    except msgspec.DecodeError as exc:
        raise from_msgspec(exc) from None
    try:
        record = await find_decision(st, fb.decision_id)
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
        raise ApiError(
            422,
            "invalid_request",
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
        f"cannot reach Redis: {exc}",
        headers={"Retry-After": str(FEEDBACK_RETRY_AFTER_S)},
    )


async def _count_rejection(
    st: AppState, record: DecisionRecord, fb: FeedbackIn, now: float
) -> None:
    live = st.rulesets.get(record.ruleset.name)
    if live is None or fb.action not in live.plan.action_index:
        return
    fatigue = live.plan.action(fb.action).fatigue
    if fatigue is not None:
        keep = fatigue.window_seconds + fatigue.period_seconds
        await st.admin_store.record_rejection(
            record.request.customer_id, fb.action, now, keep,
            once_as=f"fb:{fb.decision_id}:{fb.action}",
        )  # fmt: skip

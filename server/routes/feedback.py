"""`POST /v1/feedback`: the outcome of a decision's action (a click, a purchase, a rejection).

Served like decide: `server.fast_path` answers it ahead of FastAPI's
middleware stack (the Starlette route below is its OpenAPI face and serves
any caller that reaches the router), and both call :func:`handle_feedback`.

Its Redis work is a few small batches that ride the round trips of the
decisions being read at the same moment (`engine.store.batcher`: a round trip
costs Redis more than the commands in it, and feedback's own were a quarter
of Redis' CPU per decision at one feedback in ten decisions). Scripts go by
``EVALSHA`` and are loaded only on NOSCRIPT. They keep their own deadline (the
admin client's 5 s), not the decisions' 50 ms: a loaded worker's event loop
alone can hold a batch that long, and a decision then degrades while a reward
should still be recorded.

1. the decision's record (``GET``), unless this worker still holds it;
2. the reward (`engine.learning.reward_writer`: marker and stream entry in one
   script, so exactly once), with, for a reward ≤ 0, the ``GET`` of the
   customer's identity link the rejection is counted under;
3. for a rejection, every fatigue counter it touches in one batch
   (`engine.learning.rejections`, each counted once per decision and action).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Sequence
from typing import Any

import msgspec
from redis.exceptions import RedisError
from starlette.requests import Request
from starlette.responses import Response

from arbiter.engine.decision.policies import rejections_of
from arbiter.engine.decision.window_span import keep_seconds
from arbiter.engine.learning import rejections, reward_writer
from arbiter.engine.learning.reward_writer import Reward, RewardOutcome
from arbiter.engine.records import ENCODER, RECORD_DECODER, DecisionRecord
from arbiter.engine.store import keys, raw_commands
from arbiter.engine.store.compression import plain_record
from arbiter.server.errors import ApiError, from_msgspec
from arbiter.server.security.access import authorize
from arbiter.server.security.limits import check_depth
from arbiter.server.state import ADMIN_TIMEOUT_S, AppState, decision_time

FEEDBACK_RETRY_AFTER_S = 1
_REDIS_DOWN = (RedisError, OSError, TimeoutError)
_JSON = "application/json"
ACCEPTED = ENCODER.encode({"accepted": True, "duplicate": False})
DUPLICATE = ENCODER.encode({"accepted": False, "duplicate": True})


class FeedbackIn(msgspec.Struct, forbid_unknown_fields=True):
    """`POST /v1/feedback` body."""

    decision_id: str
    action: str
    reward: float


FEEDBACK_DECODER = msgspec.json.Decoder(FeedbackIn)


async def find_decision(st: AppState, decision_id: str) -> DecisionRecord | None:
    """A decision's record: still queued in this worker, or stored in Redis."""
    pending = st.log.pending.get(decision_id)
    if pending is not None:
        return pending
    (raw,) = await st.store.round_trips.read([("GET", keys.decision(decision_id))], ADMIN_TIMEOUT_S)
    plain = await plain_record(st.admin_redis, raw)
    return RECORD_DECODER.decode(plain) if plain is not None else None


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


async def handle_feedback(st: AppState, body: bytes) -> bytes:
    """Record one feedback body (the caller was admitted); the 202 answer, or `ApiError`."""
    check_depth(body)
    try:
        fb = FEEDBACK_DECODER.decode(body)
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
        outcome = await _record(st, record, fb, now)
    except _REDIS_DOWN as exc:
        st.metrics.feedback.labels("unavailable").inc()
        st.metrics.redis_errors.labels("feedback", "error").inc()
        raise _unavailable(exc) from None
    if not outcome.appended:
        st.metrics.feedback.labels("duplicate").inc()
        return DUPLICATE
    st.metrics.feedback.labels("accepted").inc()
    return ACCEPTED


async def _record(
    st: AppState, record: DecisionRecord, fb: FeedbackIn, now: float
) -> RewardOutcome:
    """Append the reward and, if the reward on record is ≤ 0, count the rejection.

    The marker and the stream entry commit together: a failure leaves neither
    (the retry records the reward) or both (the retry is a duplicate). The
    rejection is idempotent and redone on a duplicate, so a failure after the
    append is made good by the client's retry.
    """
    redis = st.admin_redis  # loads the scripts; the commands ride `round_trips`
    round_trips = st.store.round_trips

    def write(commands: Sequence[raw_commands.Command]) -> Awaitable[list[Any]]:
        return round_trips.write(commands, ADMIN_TIMEOUT_S)

    append = reward_writer.append_command(
        Reward(fb.decision_id, fb.action, fb.reward, now),
        marker_ttl_s=st.settings.decision_ttl_s,
        stream_maxlen=st.settings.decision_stream_maxlen,
    )
    targets = _rejection_targets(st, record, fb.action)
    # The customer the id resolved to then; it may be linked to another one now.
    owner = record.inputs.resolved_id or record.request.customer_id
    # A rejection likely follows: its identity lookup rides with the append.
    commands: list[tuple[Any, ...]] = [append]
    if targets and fb.reward <= 0:
        commands.append(("GET", keys.alias(owner)))
    replies = await raw_commands.send_scripted(redis, commands, reward_writer.SCRIPTS, via=write)
    outcome = reward_writer.outcome_of(replies[0])
    if outcome.reward > 0 or not targets:
        return outcome
    if len(replies) > 1:
        link = replies[1]
    else:  # a duplicate of an earlier rejection, sent now with a positive reward
        (link,) = await round_trips.read([("GET", keys.alias(owner))], ADMIN_TIMEOUT_S)
    if isinstance(link, Exception):
        raise link
    if link is not None:
        owner = link.decode()
    # The action's own fatigue, and fatigue across offers of its channel and tags;
    # counted once per (decision, action), so a retried rejection is not counted twice.
    counted = rejections.rejection_commands(
        owner, targets, now, once_as=f"fb:{fb.decision_id}:{fb.action}"
    )
    counts = await raw_commands.send_scripted(redis, counted, rejections.SCRIPTS, via=write)
    for reply in counts:
        if isinstance(reply, Exception):
            raise reply
    return outcome


def _rejection_targets(st: AppState, record: DecisionRecord, action: str) -> list[tuple[str, int]]:
    """The fatigue counters a rejection of ``action`` counts in (name, seconds kept)."""
    live = st.rulesets.get(record.ruleset.name)
    if live is None or action not in live.plan.action_index:
        return []
    spec = live.plan.action(action)
    targets = rejections_of(live.plan, spec, record.request.context.get("channel"))
    if spec.fatigue is not None:
        keep = keep_seconds(spec.fatigue.window_seconds) + keep_seconds(spec.fatigue.period_seconds)
        targets.append((action, keep))
    return targets


def _unavailable(exc: BaseException) -> ApiError:
    """503 with Retry-After: nothing (or all) of the feedback was written; retrying is safe."""
    return ApiError(
        503,
        "unavailable",
        f"cannot reach Redis: {type(exc).__name__}: {exc}",
        extra_headers={"Retry-After": str(FEEDBACK_RETRY_AFTER_S)},
    )


async def feedback_endpoint(request: Request) -> Response:
    """Record the outcome of a decision's action (a click, a purchase, a rejection)."""
    st: AppState = request.app.state.arbiter
    await authorize(request, "feedback")
    return Response(await handle_feedback(st, await request.body()), 202, media_type=_JSON)

"""`POST /v1/identify`: link an anonymous id to a customer and merge its history."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Header, Request
from pydantic import BaseModel, Field
from redis.exceptions import RedisError

from arbiter.engine.store.identity import IdentityConflict, InvalidIdentify
from arbiter.server.background.intake import live_actions
from arbiter.server.errors import ApiError
from arbiter.server.security.access import authorize
from arbiter.server.state import AppState

router = APIRouter()
Auth = Annotated[str | None, Header(alias="Authorization", include_in_schema=False)]


class IdentifyIn(BaseModel):
    """`POST /v1/identify` body."""

    anonymous_id: str = Field(min_length=1, max_length=256)
    customer_id: str = Field(min_length=1, max_length=256)


@router.post(
    "/v1/identify",
    tags=["profiles"],
    responses={
        409: {"description": "an id is linked in a way that forbids this link"},
        422: {"description": "invalid body (e.g. the two ids are equal)"},
        503: {"description": "Redis unreachable; the merge is safe to retry"},
    },
)
async def identify(body: IdentifyIn, request: Request, authorization: Auth = None) -> Any:
    """Link `anonymous_id` to `customer_id` and merge the anonymous history into the customer's.

    Idempotent: repeating it (for instance after a 503 or a timeout) completes
    an interrupted merge and counts nothing twice.
    """
    st: AppState = request.app.state.arbiter
    # Linking merges one customer's data into another's: a profile write.
    await authorize(request, "profiles:write")
    try:
        report = await st.admin_store.identities.identify(
            body.anonymous_id, body.customer_id, live_actions(st), st.clock()
        )
    except InvalidIdentify as exc:
        raise ApiError(422, "invalid_request", str(exc), "anonymous_id") from None
    except IdentityConflict as exc:
        raise ApiError(409, "identity_conflict", str(exc), "anonymous_id") from None
    except (RedisError, OSError) as exc:
        raise ApiError(
            503,
            "unavailable",
            f"cannot reach Redis: {type(exc).__name__}: {exc}; repeat the request to finish",
            extra_headers={"retry-after": "1"},
        ) from None
    st.metrics.identifies.labels("linked" if report.newly_linked else "repeated").inc()
    return {
        "anonymous_id": report.anonymous_id,
        "customer_id": report.customer_id,
        "linked": report.newly_linked,
        "merged_keys": report.keys_merged,
    }

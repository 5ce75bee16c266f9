"""`/v1/keys`: the Redis key store over HTTP (scope `admin`), as `arbiter keys` does it.

Servers with `ARBITER_KEYS_REDIS=true` put a change in force within one reload
interval (server.security.keystore); the answers say whether this server
reads the store (`in_force`). A created or rotated key is in the answer once,
never stored.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Header, Path, Query, Request
from pydantic import AwareDatetime, BaseModel, Field
from redis.exceptions import RedisError

from arbiter.server.errors import ApiError
from arbiter.server.security.access import authorize
from arbiter.server.security.auth import Scope
from arbiter.server.security.keystore import AsyncKeyStore, KeyStoreError
from arbiter.server.state import AppState

router = APIRouter()
Auth = Annotated[str | None, Header(alias="Authorization", include_in_schema=False)]
NAME = r"^[A-Za-z0-9._-]{1,64}$"
# Ten years: a longer grace is no rotation.
MAX_GRACE_S = 10 * 365 * 86400


class NewKey(BaseModel):
    """A key to create in the store."""

    name: str = Field(pattern=NAME, description="Shown in access logs and rate limits")
    scopes: list[Scope] = Field(min_length=1, max_length=9)
    rate_limit: str | None = Field(
        default=None,
        pattern=r"^[1-9][0-9]{0,8}/[1-9][0-9]{0,5}[smh]$",
        description="e.g. 600/60s",
    )
    origins: list[Annotated[str, Field(min_length=1, max_length=256)]] | None = Field(
        default=None, max_length=100, description="Browser origins the key may be used from"
    )
    expires: AwareDatetime | None = Field(default=None, description="Refused afterwards (401)")


def _st(request: Request) -> AppState:
    state: AppState = request.app.state.arbiter
    return state


async def _store_call(awaitable: Any) -> Any:
    try:
        return await awaitable
    except KeyStoreError as exc:
        raise ApiError(exc.status, _CODES[exc.status], str(exc), "name") from None
    except (RedisError, OSError) as exc:
        raise ApiError(
            503, "unavailable", f"cannot reach Redis: {type(exc).__name__}: {exc}"
        ) from None


_CODES = {404: "unknown_key", 409: "conflict", 422: "invalid_request"}

KeyName = Annotated[str, Path(pattern=NAME, description="The key's name")]


@router.get("/v1/keys", tags=["keys"])
async def list_keys(request: Request, authorization: Auth = None) -> Any:
    """The keys of the Redis key store: names, scopes, limits, expiry; never a key."""
    st = _st(request)
    await authorize(request, "admin")
    keys = await _store_call(AsyncKeyStore(st.admin_redis).list())
    return {"in_force": st.settings.keys_redis, "keys": [k.__dict__ for k in keys]}


@router.post("/v1/keys", tags=["keys"], status_code=201)
async def create_key(body: NewKey, request: Request, authorization: Auth = None) -> Any:
    """Create a key in the store; the answer holds the key, once."""
    st = _st(request)
    await authorize(request, "admin")
    expires = body.expires.isoformat() if body.expires is not None else None
    key = await _store_call(
        AsyncKeyStore(st.admin_redis).create(
            body.name,
            list(dict.fromkeys(body.scopes)),
            rate_limit=body.rate_limit,
            origins=body.origins,
            expires=expires,
        )
    )
    return {"name": body.name, "key": key, "in_force": st.settings.keys_redis}


@router.delete("/v1/keys/{name}", tags=["keys"])
async def revoke_key(name: KeyName, request: Request, authorization: Auth = None) -> Any:
    """Revoke a key: refused on every server within one reload interval."""
    st = _st(request)
    await authorize(request, "admin")
    await _store_call(AsyncKeyStore(st.admin_redis).revoke(name))
    return {"name": name, "revoked": True}


@router.post("/v1/keys/{name}/rotate", tags=["keys"])
async def rotate_key(
    name: KeyName,
    request: Request,
    grace_s: Annotated[int, Query(ge=0, le=MAX_GRACE_S)] = 86400,
    authorization: Auth = None,
) -> Any:
    """A new key for `name`; the old one keeps working `grace_s` seconds (default a day)."""
    st = _st(request)
    await authorize(request, "admin")
    key = await _store_call(AsyncKeyStore(st.admin_redis).rotate(name, grace_s))
    return {"name": name, "key": key, "previous_valid_s": grace_s}

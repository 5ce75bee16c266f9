"""Feedback when Redis fails half-way: a 503 the client can retry, never a lost reward."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient
from redis.exceptions import ConnectionError as RedisConnectionError
from support.server import settings

from arbiter.engine.store import keys
from arbiter.engine.store.client import connect_sync
from arbiter.server.app import create_app


def test_reward_append_fails_then_the_retry_is_accepted_once(
    redis_url: str, tmp_path: Path
) -> None:
    with TestClient(create_app(settings(redis_url, tmp_path))) as c:
        d = c.post("/v1/decide", json={"customer_id": "a", "context": {"channel": "web"}}).json()
        fb = {"decision_id": d["decision_id"], "action": d["actions"][0]["action"], "reward": 1}
        redis = c.app.state.arbiter.admin_redis  # type: ignore[attr-defined]
        real_xadd = redis.xadd

        async def fails_once(*args: Any, **kwargs: Any) -> Any:
            redis.xadd = real_xadd
            raise RedisConnectionError("injected: Redis went away after the duplicate marker")

        redis.xadd = fails_once
        r = c.post("/v1/feedback", json=fb)
        assert r.status_code == 503 and r.headers["retry-after"] == "1"
        r = c.post("/v1/feedback", json=fb)
        assert r.status_code == 202 and r.json() == {"accepted": True, "duplicate": False}
        assert c.post("/v1/feedback", json=fb).json()["duplicate"] is True
    raw = connect_sync(redis_url)
    try:
        assert raw.xlen(keys.REWARD_STREAM) == 1
    finally:
        raw.close()

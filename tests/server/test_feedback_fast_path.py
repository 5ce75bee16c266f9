"""`POST /v1/feedback` on the fast path (`server.fast_path`), on real Redis and a real Cluster.

The fast path must answer exactly as the Starlette route behind FastAPI's
stack did: the same statuses, error bodies and headers, the same metrics, the
same exactly-once reward and once-only rejection, also when Redis has lost its
scripts (NOSCRIPT) and on a Redis Cluster.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from support.redis import run_with_client
from support.server import ADMIN, settings

from arbiter.engine.store import contact_history, keys
from arbiter.engine.store.client import AsyncRedisClient, connect_sync
from arbiter.server.app import create_app
from arbiter.server.security.auth import key_entry

VIP = {"visits": 40, "lifetime_value": 5000, "orders_90d": 4}
Answer = tuple[int, dict[str, str], bytes]


@pytest.fixture
def client(redis_url: str, tmp_path: Path) -> Iterator[TestClient]:
    keys_file = tmp_path / "keys.toml"
    keys_file.write_text(
        key_entry("site", "key-site", ["decide", "feedback"])
        + key_entry("metered", "key-metered", ["feedback"], rate_limit="2/60s")
    )
    app = create_app(settings(redis_url, tmp_path, keys_file=str(keys_file)))
    with TestClient(app, headers={"Authorization": "Bearer key-site"}) as c:
        yield c


def post_asgi(
    client: TestClient,
    call: Callable[[Any, Any, Any], Awaitable[None]],
    body: bytes,
    key: str = "key-site",
) -> Answer:
    """POST `body` to /v1/feedback through the ASGI callable `call`, on the app's loop."""

    async def run() -> list[dict[str, Any]]:
        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "POST",
            "scheme": "http",
            "path": "/v1/feedback",
            "raw_path": b"/v1/feedback",
            "query_string": b"",
            "root_path": "",
            "headers": [
                (b"host", b"testserver"),
                (b"content-type", b"application/json"),
                (b"authorization", f"Bearer {key}".encode()),
            ],
            "client": ("127.0.0.1", 50000),
            "server": ("testserver", 80),
        }
        sent: list[dict[str, Any]] = []
        delivered = False

        async def receive() -> dict[str, Any]:
            nonlocal delivered
            if not delivered:
                delivered = True
                return {"type": "http.request", "body": body, "more_body": False}
            await asyncio.Event().wait()  # the client never goes away
            raise AssertionError("unreachable")

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        await call(scope, receive, send)
        return sent

    messages = client.portal.call(run)  # type: ignore[union-attr]
    start = next(m for m in messages if m["type"] == "http.response.start")
    headers = {k.decode().lower(): v.decode() for k, v in start["headers"]}
    payload = b"".join(m.get("body", b"") for m in messages if m["type"] == "http.response.body")
    return start["status"], headers, payload


def decide(client: TestClient, customer: str) -> dict[str, Any]:
    r = client.post("/v1/decide", json={"customer_id": customer, "context": {"channel": "web"}})
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def metric(client: TestClient, name: str, **labels: str) -> float:
    for family in text_string_to_metric_families(client.get("/metrics", headers=ADMIN).text):
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return float(s.value)
    return 0.0


def rejections(redis_url: str, customer: str, action: str) -> int:
    async def read(redis: AsyncRedisClient) -> Any:
        field = contact_history.rejection_field(action)
        return await redis.hget(keys.contact_history(customer), field)  # type: ignore[misc]

    return len(contact_history.times(run_with_client(redis_url, read)))


def stream_length(redis_url: str) -> int:
    async def read(redis: AsyncRedisClient) -> int:
        return int(await redis.xlen(keys.REWARD_STREAM))

    return run_with_client(redis_url, read)


def test_the_fast_path_answers_as_the_framework_route_without_entering_it(
    client: TestClient, redis_url: str
) -> None:
    app = client.app
    assert isinstance(app, FastAPI)
    client.put("/v1/profiles/v", json=VIP, headers=ADMIN)
    d = decide(client, "v")
    action = d["actions"][0]["action"]
    made = d["decision_id"]

    def body(**fields: Any) -> bytes:
        return orjson.dumps({"decision_id": made, "action": action, "reward": 1, **fields})

    cases = [
        b'{"decision_id": "x", "action": "a"}',  # a missing field
        b'{"decision_id": "x", "action": "a", "reward": "high"}',  # a wrong type
        b'{"decision_id": "x", "action": "a", "reward": 1, "extra": 2}',  # an unknown field
        b'{"decision_id": ',  # not JSON
        b'{"decision_id": [' + b"[" * 5000 + b"]" * 5000 + b"]}",  # nested too deep
        orjson.dumps({"decision_id": "0" * 32, "action": action, "reward": 1}),  # unknown
        body(action="not_offered"),
        body(),  # accepted
        body(),  # a duplicate
    ]
    # The Starlette route behind FastAPI's stack (what served feedback before)...
    framework = [
        post_asgi(client, lambda s, r, se: FastAPI.__call__(app, s, r, se), c) for c in cases
    ]
    # ...against the app itself, with FastAPI's stack made unusable: the fast path never enters it.
    built = app.middleware_stack

    async def refuse(scope: Any, receive: Any, send: Any) -> None:
        raise AssertionError("feedback went through FastAPI's middleware stack")

    app.middleware_stack = refuse
    try:
        fast = [post_asgi(client, app, c) for c in cases[:-2]]
    finally:
        app.middleware_stack = built
    # The last two were recorded by the framework route already: the fast path must
    # now call them duplicates, and a fresh decision's feedback accepted then duplicate.
    d2 = decide(client, "v")
    again = orjson.dumps({"decision_id": d2["decision_id"], "action": action, "reward": 1})
    app.middleware_stack = refuse
    try:
        fast += [post_asgi(client, app, again), post_asgi(client, app, again)]
        repeat = post_asgi(client, app, cases[-1])
    finally:
        app.middleware_stack = built

    statuses = [status for status, _, _ in framework]
    assert statuses == [422, 422, 422, 400, 413, 404, 409, 202, 202]
    for (f_status, f_headers, f_body), (status, headers, payload) in zip(
        framework[:-2], fast[:-2], strict=True
    ):
        assert (status, orjson.loads(payload)) == (f_status, orjson.loads(f_body))
        assert headers["content-type"] == f_headers["content-type"] == "application/json"
    names = [orjson.loads(p)["error"].get("field") for _, _, p in fast[:3]]
    assert names == ["reward", "reward", "extra"]
    assert orjson.loads(fast[4][2])["error"]["code"] == "too_deep"
    assert orjson.loads(fast[5][2])["error"] == orjson.loads(framework[5][2])["error"]
    assert orjson.loads(fast[5][2])["error"]["code"] == "unknown_decision"
    assert orjson.loads(fast[6][2])["error"]["code"] == "action_not_offered"
    assert [orjson.loads(b) for _, _, b in framework[-2:]] == [
        {"accepted": True, "duplicate": False},
        {"accepted": False, "duplicate": True},
    ]
    assert [(s, orjson.loads(b)) for s, _, b in fast[-2:]] == [
        (202, {"accepted": True, "duplicate": False}),
        (202, {"accepted": False, "duplicate": True}),
    ]
    assert (repeat[0], orjson.loads(repeat[2])) == (202, {"accepted": False, "duplicate": True})
    assert stream_length(redis_url) == 2


def test_fast_feedback_counts_its_metrics_and_refuses_bad_keys(client: TestClient) -> None:
    client.put("/v1/profiles/c1", json={"visits": 1}, headers=ADMIN)
    d = decide(client, "c1")
    fb = {"decision_id": d["decision_id"], "action": d["actions"][0]["action"], "reward": 1}
    assert client.post("/v1/feedback", json=fb).status_code == 202
    assert client.post("/v1/feedback", json=fb).json() == {"accepted": False, "duplicate": True}
    assert client.post("/v1/feedback", json={**fb, "action": "nope"}).status_code == 409
    assert metric(client, "arbiter_feedback_total", outcome="accepted") == 1
    assert metric(client, "arbiter_feedback_total", outcome="duplicate") == 1
    requests = "arbiter_http_requests_total"
    assert metric(client, requests, route="/v1/feedback", method="POST", status="202") == 2
    assert metric(client, requests, route="/v1/feedback", method="POST", status="409") == 1
    assert metric(client, "arbiter_http_request_seconds_count", route="/v1/feedback") == 3

    r = client.post("/v1/feedback", json=fb, headers={"Authorization": "Bearer wrong"})
    assert r.status_code == 401 and r.headers["www-authenticate"].startswith("Bearer")
    r = client.post("/v1/feedback", json=fb, headers=ADMIN)  # admin may do everything
    assert r.status_code == 202
    # An admitted caller's malformed body.
    assert client.post("/v1/feedback", content=b"{", headers=ADMIN).status_code == 400
    metered = {"Authorization": "Bearer key-metered"}
    for remaining in (1, 0):
        r = client.post("/v1/feedback", json=fb, headers=metered)
        assert r.status_code == 202
        assert r.headers["ratelimit"].startswith(f'"quota";r={remaining};')
    r = client.post("/v1/feedback", json=fb, headers=metered)
    assert r.status_code == 429 and r.json()["error"]["code"] == "rate_limited"
    assert int(r.headers["retry-after"]) >= 1


def test_a_key_without_the_feedback_scope_is_403_on_the_fast_path(
    redis_url: str, tmp_path: Path
) -> None:
    keys_file = tmp_path / "keys.toml"
    keys_file.write_text(key_entry("decider", "key-decider", ["decide"]))
    app = create_app(settings(redis_url, tmp_path, keys_file=str(keys_file)))
    with TestClient(app) as c:
        r = c.post(
            "/v1/feedback",
            content=b"not even json",
            headers={"Authorization": "Bearer key-decider"},
        )
        assert r.status_code == 403 and r.json()["error"]["code"] == "forbidden"
        assert "feedback" in r.json()["error"]["message"]


def test_oversized_feedback_is_413_naming_the_body(redis_url: str, tmp_path: Path) -> None:
    app = create_app(settings(redis_url, tmp_path, max_body_bytes=1024))
    with TestClient(app) as c:
        big = b'{"decision_id": "' + b"x" * 2000 + b'", "action": "a", "reward": 1}'
        r = c.post("/v1/feedback", content=big, headers={"content-type": "application/json"})
        assert r.status_code == 413
        assert r.json()["error"] == {
            "code": "too_large",
            "message": "request body over 1024 bytes",
            "field": "body",
        }


def vip_decision(client: TestClient, customer: str) -> dict[str, Any]:
    """A decision for a VIP ``customer``, who is offered ``vip_lounge`` (fatigue counted)."""
    client.put(f"/v1/profiles/{customer}", json=VIP, headers=ADMIN)
    d = decide(client, customer)
    assert d["actions"][0]["action"] == "vip_lounge"
    return d


def test_a_rejection_is_counted_once_after_redis_lost_its_scripts(
    client: TestClient, redis_url: str
) -> None:
    d = vip_decision(client, "v")
    sync = connect_sync(redis_url)
    try:
        sync.script_flush()  # a restarted Redis: EVALSHA answers NOSCRIPT
    finally:
        sync.close()
    fb = {"decision_id": d["decision_id"], "action": "vip_lounge", "reward": 0}
    assert client.post("/v1/feedback", json=fb).json() == {"accepted": True, "duplicate": False}
    assert client.post("/v1/feedback", json=fb).json() == {"accepted": False, "duplicate": True}
    # A positive reward for an action already rejected is a duplicate and counts nothing.
    assert client.post("/v1/feedback", json={**fb, "reward": 1}).status_code == 202
    assert rejections(redis_url, "v", "vip_lounge") == 1
    assert stream_length(redis_url) == 1


def test_a_rejection_of_a_linked_customer_counts_for_the_customer(
    client: TestClient, redis_url: str
) -> None:
    # The decision was made for an anonymous id, linked to a known customer since.
    d = vip_decision(client, "anon-7")
    r = client.post(
        "/v1/identify", json={"anonymous_id": "anon-7", "customer_id": "known-7"}, headers=ADMIN
    )
    assert r.status_code == 200, r.text
    fb = {"decision_id": d["decision_id"], "action": "vip_lounge", "reward": 0}
    assert client.post("/v1/feedback", json=fb).status_code == 202
    assert rejections(redis_url, "known-7", "vip_lounge") == 1
    assert rejections(redis_url, "anon-7", "vip_lounge") == 0


def test_feedback_on_a_redis_cluster(redis_cluster_url: str, tmp_path: Path) -> None:
    # raw_commands goes through redis-py's cluster pipeline there: each command to its shard.
    app = create_app(settings(redis_cluster_url, tmp_path))
    with TestClient(app) as c:
        c.put("/v1/profiles/v", json=VIP, headers=ADMIN)
        d = decide(c, "v")
        assert d["actions"][0]["action"] == "vip_lounge"
        # Every shard forgets its scripts: the reward and the rejection load theirs again.
        assert run_with_client(redis_cluster_url, lambda redis: redis.script_flush())
        fb = {"decision_id": d["decision_id"], "action": "vip_lounge", "reward": 0}
        assert c.post("/v1/feedback", json=fb).json() == {"accepted": True, "duplicate": False}
        assert c.post("/v1/feedback", json=fb).json() == {"accepted": False, "duplicate": True}
        missing = {**fb, "decision_id": "0" * 32}
        assert c.post("/v1/feedback", json=missing).status_code == 404
        assert c.post("/v1/feedback", json={**fb, "action": "x"}).status_code == 409
    assert rejections(redis_cluster_url, "v", "vip_lounge") == 1
    assert stream_length(redis_cluster_url) == 1

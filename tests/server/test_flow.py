"""The HTTP flow a user walks through, against real (embedded) Redis."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from support.server import ADMIN, settings

from arbiter.engine.log.replay import read_stream, replay
from arbiter.engine.store import keys
from arbiter.engine.store.client import connect, connect_sync
from arbiter.engine.store.profiles import ProfileStore
from arbiter.server.app import create_app


@pytest.fixture
def client(redis_url: str, tmp_path: Path) -> Any:
    with TestClient(create_app(settings(redis_url, tmp_path))) as c:
        yield c


def decide(client: TestClient, customer: str, **context: Any) -> dict[str, Any]:
    r = client.post("/v1/decide", json={"customer_id": customer, "context": context})
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def flush(client: TestClient) -> None:
    state = client.app.state.arbiter  # type: ignore[attr-defined]
    client.portal.call(state.log.flush)  # type: ignore[union-attr]


def test_profile_decide_feedback_replay(client: TestClient, redis_url: str) -> None:
    r = client.put("/v1/profiles/c42", json={"visits": 1, "country": "DE"}, headers=ADMIN)
    assert r.status_code == 200
    d = decide(client, "c42", channel="web")
    assert [a["action"] for a in d["actions"]] == ["welcome_offer"]
    assert d["actions"][0]["payload"] == {"title": "Welcome!", "discount": 10}
    assert d["ruleset"]["name"] == "shop"
    assert d["degraded"] is False
    fb = {"decision_id": d["decision_id"], "action": "welcome_offer", "reward": 1}
    r = client.post("/v1/feedback", json=fb)
    assert r.status_code == 202
    assert r.json() == {"accepted": True, "duplicate": False}
    r = client.post("/v1/feedback", json=fb)
    assert r.status_code == 202 and r.json()["duplicate"] is True

    flush(client)
    redis = connect_sync(redis_url)
    try:
        rewards = redis.xrange(keys.REWARD_STREAM)
        assert len(rewards) == 1  # the duplicate was not appended
        records = list(read_stream(redis, keys.DECISION_STREAM))
    finally:
        redis.close()
    assert [r.decision_id for r in records] == [d["decision_id"]]
    plan = client.app.state.arbiter.rulesets.get("shop").plan  # type: ignore[attr-defined]
    result = replay(plan, records[0])
    assert result.identical and result.same_plan


def test_rules_pick_by_profile_and_context(client: TestClient) -> None:
    client.put(
        "/v1/profiles/vip1",
        json={"visits": 40, "lifetime_value": 5000, "orders_90d": 4},
        headers=ADMIN,
    )
    assert [a["action"] for a in decide(client, "vip1", channel="web")["actions"]] == ["vip_lounge"]
    # Unknown customer: rules on missing values do not match; the default answers.
    assert [a["action"] for a in decide(client, "nobody", channel="web")["actions"]] == [
        "bestsellers"
    ]
    # Context-only rule.
    assert [a["action"] for a in decide(client, "nobody", channel="app")["actions"]] == [
        "app_banner"
    ]


def test_contact_cap_is_counted(client: TestClient) -> None:
    client.put("/v1/profiles/c1", json={"visits": 1}, headers=ADMIN)
    assert decide(client, "c1", channel="web")["actions"][0]["action"] == "welcome_offer"
    flush(client)
    # `cap 1 per 7d`: the second decision may not offer it again.
    assert decide(client, "c1", channel="web")["actions"][0]["action"] == "bestsellers"


def test_events_feed_windows(client: TestClient) -> None:
    client.put("/v1/profiles/c7", json={"visits": 5, "consents": ["email"]}, headers=ADMIN)
    r = client.post(
        "/v1/events",
        json={"events": [{"customer_id": "c7", "type": "add_to_cart", "event_id": "e1"}]},
        headers=ADMIN,
    )
    assert r.status_code == 202 and r.json()["counted"] == 1
    assert decide(client, "c7", channel="email")["actions"][0]["action"] == "cart_reminder"


def test_explain(client: TestClient) -> None:
    client.put("/v1/profiles/c9", json={"visits": 1}, headers=ADMIN)
    body = {"customer_id": "c9", "context": {"channel": "web"}, "explain": True}
    exp = client.post("/v1/decide", json=body).json()["explanation"]
    assert exp["segments"]["new_visitor"] is True
    assert exp["fired"][0]["offers"] == "welcome_offer"
    assert exp["fired"][0]["rule"].endswith("shop.rules:25:1")


@pytest.mark.parametrize(
    ("body", "status", "field"),
    [
        ({"context": {}}, 422, "customer_id"),
        ({"customer_id": 5}, 422, "customer_id"),
        ({"customer_id": ""}, 422, "customer_id"),
        ({"customer_id": "a", "context": []}, 422, "context"),
        ({"customer_id": "a", "context": {"channel": "fax"}}, 422, "context.channel"),
        ({"customer_id": "a", "limit": 0}, 422, "limit"),
        ({"customer_id": "a", "limit": "3"}, 422, "limit"),
        ({"customer_id": "a", "ruleset": "nope"}, 404, "ruleset"),
        ({"customer_id": "a", "surprise": 1}, 422, "surprise"),
    ],
)
def test_decide_bad_input_names_the_field(
    client: TestClient, body: dict[str, Any], status: int, field: str
) -> None:
    r = client.post("/v1/decide", json=body)
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert err["field"] == field
    assert err["message"]


def test_malformed_json_is_400(client: TestClient) -> None:
    r = client.post("/v1/decide", content=b"{nope", headers={"content-type": "application/json"})
    assert r.status_code == 400
    assert r.json()["error"]["code"] == "malformed_json"


@pytest.mark.parametrize(
    ("body", "status", "field"),
    [
        ({"decision_id": "missing", "action": "x", "reward": 1}, 404, "decision_id"),
        ({"action": "x", "reward": 1}, 422, "decision_id"),
        ({"decision_id": "d", "action": "x", "reward": "lots"}, 422, "reward"),
    ],
)
def test_feedback_bad_input(
    client: TestClient, body: dict[str, Any], status: int, field: str
) -> None:
    r = client.post("/v1/feedback", json=body)
    assert r.status_code == status, r.text
    assert r.json()["error"]["field"] == field


def test_feedback_for_an_action_not_returned(client: TestClient) -> None:
    d = decide(client, "zz", channel="web")
    r = client.post(
        "/v1/feedback", json={"decision_id": d["decision_id"], "action": "vip_lounge", "reward": 1}
    )
    assert r.status_code == 409 and r.json()["error"]["field"] == "action"


def test_profile_writes_are_typed_and_need_admin(client: TestClient) -> None:
    r = client.put("/v1/profiles/c1", json={"visits": "many"}, headers=ADMIN)
    assert r.status_code == 422 and r.json()["error"]["field"] == "visits"
    r = client.put("/v1/profiles/c1", json={"visits": 1})
    assert r.status_code == 401
    r = client.put("/v1/profiles/c1", json={"visits": 1}, headers={"Authorization": "Bearer wrong"})
    assert r.status_code == 401  # an unknown key is not authenticated (RFC 6750 invalid_token)
    r = client.put("/v1/profiles/c1", json=[1, 2], headers=ADMIN)
    assert r.status_code == 422


def test_patch_merges_and_delete_erases(client: TestClient, redis_url: str) -> None:
    client.put("/v1/profiles/c5", json={"visits": 3, "country": "FR"}, headers=ADMIN)
    r = client.patch("/v1/profiles/c5", json={"visits": 4, "country": None}, headers=ADMIN)
    assert r.json()["attributes"] == {"visits": 4}
    decide(client, "c5", channel="web")
    client.post(
        "/v1/events",
        json={"events": [{"customer_id": "c5", "type": "purchase", "properties": {"amount": 9.5}}]},
        headers=ADMIN,
    )
    r = client.delete("/v1/profiles/c5", headers=ADMIN)
    assert r.status_code == 200 and r.json()["erased_keys"] >= 2
    assert client.get("/v1/profiles/c5", headers=ADMIN).status_code == 404
    redis = connect_sync(redis_url)
    try:
        left = [k for k in redis.scan_iter(match="*{c5}*")]
        in_log = [
            r for r in read_stream(redis, keys.DECISION_STREAM) if r.request.customer_id == "c5"
        ]
    finally:
        redis.close()
    assert left == [] and in_log == []


def test_decide_key_required_when_configured(redis_url: str, tmp_path: Path) -> None:
    app = create_app(settings(redis_url, tmp_path, decide_key="dk"))
    with TestClient(app) as c:
        assert c.post("/v1/decide", json={"customer_id": "a"}).status_code == 401
        ok = c.post("/v1/decide", json={"customer_id": "a"}, headers={"Authorization": "Bearer dk"})
        assert ok.status_code == 200
        admin = c.post("/v1/decide", json={"customer_id": "a"}, headers=ADMIN)
        assert admin.status_code == 200


def test_writes_refused_without_admin_key(redis_url: str, tmp_path: Path) -> None:
    app = create_app(settings(redis_url, tmp_path, admin_key=None))
    with TestClient(app) as c:
        r = c.put("/v1/profiles/c1", json={"visits": 1}, headers=ADMIN)
        assert r.status_code == 403 and r.json()["error"]["code"] == "admin_disabled"


def test_health_and_docs(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/readyz").json()["status"] == "ready"
    spec = client.get("/openapi.json").json()
    assert "/v1/decide" in spec["paths"] and "/v1/feedback" in spec["paths"]
    decide(client, "m1", channel="web")
    assert b"arbiter_decisions_total" in client.get("/metrics").content


def test_rulesets_put_rollback(client: TestClient) -> None:
    live = client.get("/v1/rulesets/shop", headers=ADMIN).json()
    bad = live["text"].replace("offer welcome_offer", "offer welcom_offer")
    r = client.put("/v1/rulesets/shop", content=bad.encode(), headers=ADMIN)
    assert r.status_code == 422
    err = r.json()["error"]
    assert err["code"] == "rules_invalid"
    assert err["diagnostics"][0]["code"] == "unknown-action"
    assert "did you mean 'welcome_offer'" in err["message"]
    # The live version is untouched.
    assert client.get("/v1/rulesets/shop", headers=ADMIN).json()["version"] == live["version"]

    new = live["text"].replace("default bestsellers", "default app_banner")
    r = client.put("/v1/rulesets/shop", content=new.encode(), headers=ADMIN)
    assert r.status_code == 200, r.text
    # The new default is app-only, so a web visitor with no matching rule gets nothing.
    assert decide(client, "nobody", channel="web")["actions"] == []
    r = client.post("/v1/rulesets/shop/rollback", headers=ADMIN)
    assert r.status_code == 200 and r.json()["version"] == live["version"]
    assert decide(client, "nobody", channel="web")["actions"][0]["action"] == "bestsellers"


def test_degraded_when_redis_is_down(redis_url: str, tmp_path: Path) -> None:
    app = create_app(settings(redis_url, tmp_path))
    with TestClient(app) as c:
        state = app.state.arbiter
        c.put(
            "/v1/profiles/v1",
            json={"visits": 40, "lifetime_value": 5000, "orders_90d": 4},
            headers=ADMIN,
        )
        real = state.store
        # A real client pointed at a port nobody listens on: connection refused.
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            dead_port = s.getsockname()[1]
        dead = connect(f"redis://127.0.0.1:{dead_port}", socket_timeout=0.05)
        state.store = ProfileStore(dead)
        try:
            d = decide(c, "v1", channel="app")
        finally:
            state.store = real
            c.portal.call(dead.aclose)  # type: ignore[union-attr]
        assert d["degraded"] is True
        assert [a["action"] for a in d["actions"]] == [
            "app_banner"
        ]  # context-only rule still works
        d = decide(c, "v1", channel="app")
        assert d["degraded"] is False and d["actions"][0]["action"] == "vip_lounge"


def test_concurrent_decisions(client: TestClient) -> None:
    async def many() -> list[int]:
        import httpx2

        transport = httpx2.ASGITransport(app=client.app)
        async with httpx2.AsyncClient(transport=transport, base_url="http://t") as ac:
            rs = await asyncio.gather(
                *(ac.post("/v1/decide", json={"customer_id": f"u{i}"}) for i in range(50))
            )
        return [r.status_code for r in rs]

    assert client.portal.call(many) == [200] * 50  # type: ignore[union-attr]

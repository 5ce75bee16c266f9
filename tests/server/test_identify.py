"""`POST /v1/identify` over HTTP, and what it changes for decide, profiles and erasure."""

from __future__ import annotations

from pathlib import Path

from fastapi.testclient import TestClient
from support.server import ADMIN, settings

from arbiter.engine.log.replay import read_stream
from arbiter.engine.store import keys
from arbiter.engine.store.client import connect_sync
from arbiter.server.app import create_app


def test_identify_answers_and_errors(redis_url: str, tmp_path: Path) -> None:
    with TestClient(create_app(settings(redis_url, tmp_path))) as c:
        body = {"anonymous_id": "cookie-1", "customer_id": "alice"}
        assert c.post("/v1/identify", json=body).status_code == 401
        r = c.post("/v1/identify", json=body, headers=ADMIN)
        assert r.status_code == 200, r.text
        assert r.json() == {
            "anonymous_id": "cookie-1",
            "customer_id": "alice",
            "linked": True,
            "merged_keys": 0,
        }
        again = c.post("/v1/identify", json=body, headers=ADMIN)
        assert again.status_code == 200 and again.json()["linked"] is False
        r = c.post(
            "/v1/identify", json={"anonymous_id": "cookie-1", "customer_id": "bob"}, headers=ADMIN
        )
        assert r.status_code == 409
        assert r.json()["error"] == {
            "code": "identity_conflict",
            "message": "'cookie-1' is already linked to another customer",
            "field": "anonymous_id",
        }
        r = c.post("/v1/identify", json={"anonymous_id": "x", "customer_id": "x"}, headers=ADMIN)
        assert r.status_code == 422 and r.json()["error"]["field"] == "anonymous_id"
        r = c.post("/v1/identify", json={"anonymous_id": "x"}, headers=ADMIN)
        assert r.status_code == 422 and "customer_id" in r.json()["error"]["field"]
        assert "arbiter_identifies_total" in c.get("/metrics").text
        assert "/v1/identify" in c.get("/openapi.json").json()["paths"]


def test_after_login_both_ids_are_one_person_until_erased(redis_url: str, tmp_path: Path) -> None:
    with TestClient(create_app(settings(redis_url, tmp_path))) as c:
        events = [{"customer_id": "cookie-2", "type": "add_to_cart", "event_id": "e1"}]
        assert c.post("/v1/events", json={"events": events}, headers=ADMIN).status_code == 202
        c.put("/v1/profiles/carol", json={"visits": 3, "consents": ["email"]}, headers=ADMIN)
        r = c.post(
            "/v1/identify",
            json={"anonymous_id": "cookie-2", "customer_id": "carol"},
            headers=ADMIN,
        )
        # The window hash (with its last-seen times, layout 3) and the event ids.
        assert r.json()["merged_keys"] >= 2
        # A decision for the anonymous id reads carol: her consent, the cart put in anonymously.
        r = c.post("/v1/decide", json={"customer_id": "cookie-2", "context": {"channel": "email"}})
        assert [a["action"] for a in r.json()["actions"]] == ["cart_reminder"]
        decision_id = r.json()["decision_id"]
        # The profile routes resolve the id too.
        r = c.get("/v1/profiles/cookie-2", headers=ADMIN)
        assert r.json()["resolved_id"] == "carol" and r.json()["attributes"]["visits"] == 3
        c.patch("/v1/profiles/cookie-2", json={"country": "FR"}, headers=ADMIN)
        assert c.get("/v1/profiles/carol", headers=ADMIN).json()["attributes"]["country"] == "FR"
        c.portal.call(c.app.state.arbiter.log.flush)  # type: ignore[attr-defined,union-attr]
        sync = connect_sync(redis_url)
        try:
            record = next(
                r for r in read_stream(sync, keys.DECISION_STREAM) if r.decision_id == decision_id
            )
            # The record says which id was resolved to which.
            assert record.request.customer_id == "cookie-2"
            assert record.inputs.resolved_id == "carol"
            assert (
                sync.lrange(keys.decision_index("carol"), 0, -1)[-1] == f"d:{decision_id}".encode()
            )
        finally:
            sync.close()
        r = c.delete("/v1/profiles/cookie-2", headers=ADMIN)
        assert r.status_code == 200 and r.json()["erased_linked_ids"] == ["carol"]
        assert c.get("/v1/profiles/carol", headers=ADMIN).status_code == 404
        assert c.get("/v1/profiles/cookie-2", headers=ADMIN).status_code == 404

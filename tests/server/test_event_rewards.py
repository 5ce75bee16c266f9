"""Rewards from events through the server: decide over HTTP, send a purchase, the bandit learns."""

from __future__ import annotations

import time
from pathlib import Path

from fastapi.testclient import TestClient
from support.server import ADMIN, settings

from arbiter.engine.learning.bandit_store import load_published
from arbiter.engine.store import keys
from arbiter.engine.store.client import connect, connect_sync
from arbiter.server.app import create_app

RULES = """ruleset hero
context { device: string }
event purchase { amount: number }
action banner_a { value 1 }
action banner_b { value 1 }
when true offer banner_a
when true offer banner_b
bandit home over [banner_a, banner_b] features (context.device)
  reward purchase within 1h value amount
"""


def test_a_purchase_event_rewards_the_decision_and_the_bandit_learns(
    redis_url: str, tmp_path: Path
) -> None:
    rules = tmp_path / "hero.rules"
    rules.write_text(RULES)
    app = create_app(settings(redis_url, tmp_path, rules_path=str(rules), attribution_grace_ms=0))
    sync = connect_sync(redis_url)
    with TestClient(app) as client:
        r = client.post("/v1/decide", json={"customer_id": "c1", "context": {"device": "m"}})
        assert r.status_code == 200, r.text
        decision = r.json()
        shown = decision["actions"][0]["action"]
        r = client.post(
            "/v1/events",
            json={
                "events": [{"customer_id": "c1", "type": "purchase", "properties": {"amount": 30}}]
            },
            headers=ADMIN,
        )
        assert r.status_code == 202, r.text
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            entries = sync.xrange(keys.REWARD_STREAM)
            if entries:
                break
            time.sleep(0.02)
        [(_, fields)] = sync.xrange(keys.REWARD_STREAM)
        assert fields[b"decision_id"].decode() == decision["decision_id"]
        assert (fields[b"action"].decode(), fields[b"reward"], fields[b"source"]) == (
            shown,
            b"30.0",
            b"event",
        )

        # The in-process learner learns it and publishes a version.
        async def published() -> int:
            client_ = connect(redis_url)
            try:
                return (await load_published(client_, "hero", "home")).version
            finally:
                await client_.aclose()

        while time.monotonic() < deadline and client.portal.call(published) == 0:  # type: ignore[union-attr]
            time.sleep(0.02)
        assert client.portal.call(published) >= 1  # type: ignore[union-attr]
        # Explicit feedback for the same decision now counts as a duplicate.
        r = client.post(
            "/v1/feedback",
            json={"decision_id": decision["decision_id"], "action": shown, "reward": 1},
        )
        assert r.status_code == 202 and r.json()["duplicate"] is True
    sync.close()


def test_arbiter_ingest_feeds_the_outcome_stream_with_registered_types(
    redis_url: str, tmp_path: Path
) -> None:
    import json

    from arbiter.server.cli.ingest import ingest_main

    sync = connect_sync(redis_url)
    sync.sadd(keys.OUTCOME_TYPES, "purchase")  # what a server registers on activation
    path = tmp_path / "events.jsonl"
    lines = [
        {"customer_id": "c1", "type": "purchase", "event_id": "o1", "properties": {"amount": 5}},
        {"customer_id": "c1", "type": "page_view"},
        {"customer_id": "c1", "type": "purchase", "event_id": "o1", "properties": {"amount": 5}},
    ]
    path.write_text("".join(json.dumps(x) + "\n" for x in lines))
    assert ingest_main(str(path), redis_url=lambda: (redis_url, None)) == 0
    [(_, fields)] = sync.xrange(keys.OUTCOME_STREAM)  # the repeated event id counts once
    assert (fields[b"customer_id"], fields[b"type"]) == (b"c1", b"purchase")
    assert json.loads(fields[b"properties"]) == {"amount": 5}
    sync.close()

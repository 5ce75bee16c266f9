"""Triggers through the server: an add-to-cart sent to POST /v1/events is decided for email when due."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from support.server import ADMIN, settings

from arbiter.engine.store import keys
from arbiter.engine.store.client import connect_sync
from arbiter.server.app import create_app

RULES = """ruleset cart
context { channel: one of [web, email] }
profile { consents: set<string> }
event add_to_cart
event purchase
action cart_reminder { value 15 channels [email] requires consent "email" }
when count(add_to_cart within 1d) > 0 offer cart_reminder
trigger recovery on add_to_cart after 1h unless purchase decide for channel email
"""


def test_a_due_trigger_is_published_to_the_outbound_stream(redis_url: str, tmp_path: Path) -> None:
    rules = tmp_path / "cart.rules"
    rules.write_text(RULES)
    sync = connect_sync(redis_url)
    with TestClient(create_app(settings(redis_url, tmp_path, rules_path=str(rules)))) as client:
        for cid in ("c1", "c2"):
            r = client.put(f"/v1/profiles/{cid}", json={"consents": ["email"]}, headers=ADMIN)
            assert r.status_code == 200, r.text
        ago = time.time() - 3601  # the add-to-cart was an hour ago: due now
        events = [
            {"customer_id": "c1", "type": "add_to_cart", "ts": ago, "event_id": "a1"},
            {"customer_id": "c2", "type": "add_to_cart", "ts": ago, "event_id": "a2"},
            {"customer_id": "c2", "type": "purchase", "ts": ago + 60},
        ]
        assert client.post("/v1/events", json={"events": events}, headers=ADMIN).status_code == 202
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and not sync.xlen(keys.TRIGGER_STREAM):
            time.sleep(0.02)
        time.sleep(0.3)  # c2's firing, due at the same time, must not follow
        entries = sync.xrange(keys.TRIGGER_STREAM)
        assert [f[b"customer_id"] for _, f in entries] == [b"c1"]
        fields = entries[0][1]
        assert (fields[b"trigger"], fields[b"channel"]) == (b"recovery", b"email")
        assert b"cart_reminder" in fields[b"actions"]
    sync.close()


def test_arbiter_ingest_with_rules_schedules_triggers(redis_url: str, tmp_path: Path) -> None:
    import json

    from arbiter.server.cli.ingest import ingest_main

    rules = tmp_path / "cart.rules"
    rules.write_text(RULES)
    path = tmp_path / "events.jsonl"
    line = {"customer_id": "c9", "type": "add_to_cart", "ts": time.time(), "event_id": "x"}
    path.write_text(json.dumps(line) + "\n" + json.dumps(line) + "\n")
    assert ingest_main(str(path), redis_url=lambda: (redis_url, None), rules=str(rules)) == 0
    sync = connect_sync(redis_url)
    assert sync.zcard(keys.TRIGGERS_DUE) == 1  # the same event twice: one firing
    assert sync.zcard(keys.triggers("c9")) == 1
    sync.close()


def test_webhook_settings_fail_fast() -> None:
    import pytest

    from arbiter.server.settings import Settings, SettingsError

    with pytest.raises(SettingsError, match="http"):
        Settings.from_env({"ARBITER_TRIGGER_WEBHOOK_URL": "ftp://x"}, env_file=None)
    with pytest.raises(SettingsError, match="SECRET"):
        Settings.from_env({"ARBITER_TRIGGER_WEBHOOK_URL": "http://127.0.0.1:9/"}, env_file=None)
    ok = Settings.from_env(
        {
            "ARBITER_TRIGGER_WEBHOOK_URL": "http://127.0.0.1:9/",
            "ARBITER_TRIGGER_WEBHOOK_SECRET": "s",
        },
        env_file=None,
    )
    assert ok.trigger_webhook_url == "http://127.0.0.1:9/"


def test_a_served_trigger_is_posted_to_the_webhook(redis_url: str, tmp_path: Path) -> None:
    import json
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from arbiter.engine.triggers.webhook import sign

    got: list[tuple[str, bytes]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["content-length"]))
            got.append((self.headers["x-arbiter-signature"], body))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            return

    hook = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=hook.serve_forever, daemon=True).start()
    rules = tmp_path / "cart.rules"
    rules.write_text(RULES)
    url = f"http://127.0.0.1:{hook.server_address[1]}/"
    app = create_app(
        settings(
            redis_url,
            tmp_path,
            rules_path=str(rules),
            trigger_webhook_url=url,
            trigger_webhook_secret="k",
        )
    )
    try:
        with TestClient(app) as client:
            client.put("/v1/profiles/c1", json={"consents": ["email"]}, headers=ADMIN)
            event = {"customer_id": "c1", "type": "add_to_cart", "ts": time.time() - 3601}
            assert (
                client.post("/v1/events", json={"events": [event]}, headers=ADMIN).status_code
                == 202
            )
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline and not got:
                time.sleep(0.02)
    finally:
        hook.shutdown()
        hook.server_close()
    [(signature, body)] = got
    assert signature == sign(b"k", body)
    assert json.loads(body)["customer_id"] == "c1"


def test_a_sharded_schedule_through_the_server_and_arbiter_ingest(
    redis_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import dataclasses
    import json

    from arbiter.engine.triggers.schedule import shard_of
    from arbiter.server.cli.ingest import ingest_main
    from arbiter.server.settings import Settings, SettingsError

    with pytest.raises(SettingsError, match="ARBITER_TRIGGER_SHARDS"):
        Settings.from_env({"ARBITER_TRIGGER_SHARDS": "0"}, env_file=None)
    rules = tmp_path / "cart.rules"
    rules.write_text(RULES)
    sync = connect_sync(redis_url)
    # arbiter ingest reads the count from the environment, as the servers do.
    monkeypatch.setenv("ARBITER_TRIGGER_SHARDS", "3")
    path = tmp_path / "events.jsonl"
    lines = [
        {"customer_id": f"i{n}", "type": "add_to_cart", "ts": time.time(), "event_id": f"x{n}"}
        for n in range(12)
    ]
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    assert ingest_main(str(path), redis_url=lambda: (redis_url, None), rules=str(rules)) == 0
    counts = [sync.zcard(keys.triggers_due(k)) for k in range(3)]
    assert sum(counts) == 12 and all(counts), counts
    for member in sync.zrange(keys.triggers_due(1), 0, -1):
        assert shard_of(json.loads(member)[0], 3) == 1
    # The server schedules and fires over the same shards.
    base = settings(redis_url, tmp_path, rules_path=str(rules))
    app = create_app(dataclasses.replace(base, trigger_shards=3))
    with TestClient(app) as client:
        ago = time.time() - 3601
        events = []
        for n in range(6):
            cid = f"s{n}"
            r = client.put(f"/v1/profiles/{cid}", json={"consents": ["email"]}, headers=ADMIN)
            assert r.status_code == 200, r.text
            events.append({"customer_id": cid, "type": "add_to_cart", "ts": ago, "event_id": cid})
        assert client.post("/v1/events", json={"events": events}, headers=ADMIN).status_code == 202
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and sync.xlen(keys.TRIGGER_STREAM) < 6:
            time.sleep(0.02)
        published = sorted(f[b"customer_id"] for _, f in sync.xrange(keys.TRIGGER_STREAM))
        assert published == [f"s{n}".encode() for n in range(6)]
    sync.close()

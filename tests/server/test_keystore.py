"""The Redis key store: keys created, revoked and rotated while servers run, on real Redis."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from support.redis import run_with_client
from support.server import ADMIN, settings

from arbiter.engine.store.client import AsyncRedisClient, connect, connect_sync
from arbiter.server.app import create_app
from arbiter.server.cli.main import main
from arbiter.server.errors import ApiError
from arbiter.server.security.auth import KeyRing, key_entry
from arbiter.server.security.keystore import (
    KeyStore,
    KeyStoreError,
    make_record,
    parse_duration,
    record_keys,
    refresh,
    watch_key_store,
)

DECIDE = {"customer_id": "c1", "context": {"channel": "web"}}
# The servers under test re-read the store every 50 ms (support.server.settings); a change
# must be in force well within this bound, which only guards the test against hanging.
WITHIN_S = 10.0


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture
def store(redis_url: str) -> Iterator[KeyStore]:
    client = connect_sync(redis_url)
    yield KeyStore(client)
    client.close()


@pytest.fixture
def servers(redis_url: str, tmp_path: Path) -> Iterator[list[TestClient]]:
    """Two app instances (two workers or machines) on one Redis, reading the key store."""
    with ExitStack() as stack:
        clients = [
            stack.enter_context(
                TestClient(create_app(settings(redis_url, tmp_path / f"s{i}", keys_redis=True)))
            )
            for i in range(2)
        ]
        yield clients


def eventually(check: Callable[[], bool]) -> bool:
    """Whether `check` holds within WITHIN_S (polled; it is not a timing assertion)."""
    deadline = time.monotonic() + WITHIN_S
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.02)
    return check()


def status(client: TestClient, key: str) -> int:
    return client.post("/v1/decide", json=DECIDE, headers=bearer(key)).status_code


def test_created_key_works_on_every_server_and_revoked_is_refused(
    servers: list[TestClient], store: KeyStore
) -> None:
    key = store.create("web-frontend", ["decide"])
    assert all(eventually(lambda c=c: status(c, key) == 200) for c in servers)
    # The scope is checked as for any key.
    r = servers[0].get("/v1/rulesets", headers=bearer(key))
    assert r.status_code == 403 and "web-frontend" in r.json()["error"]["message"]
    store.revoke("web-frontend")
    assert all(eventually(lambda c=c: status(c, key) == 401) for c in servers)
    r = servers[1].post("/v1/decide", json=DECIDE, headers=bearer(key))
    assert r.json()["error"]["code"] == "unauthorized"


def test_rotate_keeps_the_old_key_for_its_grace_then_refuses_it(
    servers: list[TestClient], store: KeyStore
) -> None:
    old = store.create("crm", ["decide"])
    assert eventually(lambda: status(servers[0], old) == 200)
    graced = store.rotate("crm", grace_s=3600)
    assert all(eventually(lambda c=c: status(c, graced) == 200) for c in servers)
    assert all(status(c, old) == 200 for c in servers)  # within its grace
    newest = store.rotate("crm", grace_s=0)  # the grace of `graced` ends at once
    assert all(eventually(lambda c=c: status(c, newest) == 200) for c in servers)
    for c in servers:
        r = c.post("/v1/decide", json=DECIDE, headers=bearer(graced))
        assert r.status_code == 401 and r.json()["error"]["code"] == "key_expired"
        # Only the last previous key is kept: the first one is gone altogether.
        assert status(c, old) == 401


def test_access_log_names_a_store_key(servers: list[TestClient], store: KeyStore) -> None:
    key = store.create("partner-x", ["decide"])
    assert eventually(lambda: status(servers[0], key) == 200)
    lines: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(record.getMessage())

    handler = Keep()
    logger = logging.getLogger("arbiter.access")
    logger.addHandler(handler)
    try:
        assert status(servers[0], key) == 200
    finally:
        logger.removeHandler(handler)
    entry = json.loads(lines[-1])
    assert entry["key"] == "partner-x"
    assert key not in "\n".join(lines)


def test_key_file_and_store_together(redis_url: str, tmp_path: Path, store: KeyStore) -> None:
    keys_file = tmp_path / "keys.toml"
    keys_file.write_text(key_entry("from-file", "file-key", ["decide"]))
    from_redis = store.create("from-redis", ["rulesets:read"])
    app = create_app(settings(redis_url, tmp_path, keys_file=str(keys_file), keys_redis=True))
    with TestClient(app) as client:
        # Read at start: the store's keys work from the first request.
        assert client.get("/v1/rulesets", headers=bearer(from_redis)).status_code == 200
        assert status(client, "file-key") == 200
        assert client.get("/v1/rulesets", headers=bearer("file-key")).status_code == 403
        assert status(client, from_redis) == 403
        assert status(client, "admin-key") == 200
        # With the store on, decide is not public by default.
        assert client.post("/v1/decide", json=DECIDE).status_code == 401


def test_store_off_ignores_its_keys(redis_url: str, tmp_path: Path, store: KeyStore) -> None:
    key = store.create("unused", ["decide"])
    with TestClient(create_app(settings(redis_url, tmp_path, decide_key="d"))) as client:
        assert status(client, key) == 401


def test_keys_last_read_stay_when_redis_is_down(
    redis_url: str, store: KeyStore, caplog: pytest.LogCaptureFixture
) -> None:
    key = store.create("kept", ["decide"])
    ring = KeyRing(None, None)

    async def load(client: AsyncRedisClient) -> bool:
        return await refresh(ring, client)

    assert run_with_client(redis_url, load)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]

    async def watch_dead() -> None:
        dead = connect(f"redis://127.0.0.1:{port}/0", socket_timeout=0.2, connect_timeout=0.2)
        stop = asyncio.Event()
        task = asyncio.create_task(watch_key_store(ring, dead, 0.01, stop))
        await asyncio.sleep(0.2)  # several failed reads
        stop.set()
        await task
        await dead.aclose()

    with caplog.at_level(logging.WARNING, logger="arbiter.server"):
        asyncio.run(watch_dead())
    assert ring.authenticate("decide", f"Bearer {key}").name == "kept"
    # Said once, not at every interval.
    assert sum("did not answer" in r.getMessage() for r in caplog.records) == 1


def test_store_commands_refuse_what_they_cannot_do(store: KeyStore) -> None:
    store.create("a", ["decide"])
    with pytest.raises(KeyStoreError, match="exists"):
        store.create("a", ["decide"])
    with pytest.raises(KeyStoreError, match="no key named 'b'"):
        store.revoke("b")
    with pytest.raises(KeyStoreError, match="no key named 'b'"):
        store.rotate("b", 0)
    with pytest.raises(KeyStoreError, match="unknown scope"):
        store.create("c", ["decide", "root"])
    with pytest.raises(KeyStoreError, match="key name"):
        store.create("has space", ["decide"])
    with pytest.raises(KeyStoreError, match="rate limit"):
        store.create("d", ["decide"], rate_limit="lots")
    with pytest.raises(KeyStoreError, match="expires"):
        store.create("e", ["decide"], expires="tomorrow")
    assert [k.name for k in store.list()] == ["a"]
    assert store.version() == 1  # refused writes change nothing


def test_records_hold_digests_and_the_previous_key_until_its_grace(store: KeyStore) -> None:
    key = store.create("x", ["decide"], expires="2030-01-01T00:00:00Z")
    raw = store.redis.hgetall("arb:{keys}")
    assert key.encode() not in b"".join([*raw.keys(), *raw.values()])
    store.rotate("x", grace_s=parse_duration("1h", "grace"))
    record = store.records()["x"]
    current, previous = record_keys(record, "x")
    assert previous.expires is not None and current.expires is not None
    assert previous.expires <= current.expires
    assert time.time() + 3500 < previous.expires <= time.time() + 3600
    # The previous key never outlives the key itself.
    record["previous_expires"] = "2031-01-01T00:00:00Z"
    assert record_keys(record, "x")[1].expires == current.expires
    assert make_record("y", "k", ["decide"])["sha256"] != "k"
    assert parse_duration("90s", "g") == 90 and parse_duration("7d", "g") == 7 * 86400
    with pytest.raises(KeyStoreError):
        parse_duration("soon", "--grace")


def test_cli_create_list_rotate_revoke(
    redis_url: str, capsys: pytest.CaptureFixture[str], store: KeyStore
) -> None:
    args = ["--redis", redis_url]
    assert main(["keys", "create", "shop", "--scopes", "decide,feedback", "--rate-limit",
                 "600/60s", "--origins", "https://shop.example", *args]) == 0  # fmt: skip
    key = capsys.readouterr().out.strip()
    assert key.startswith("ak_")
    ring = KeyRing(None, None)
    run_with_client(redis_url, lambda c: refresh(ring, c))
    principal = ring.authenticate("feedback", f"Bearer {key}")
    assert principal.name == "shop" and principal.rate_limit is not None
    assert main(["keys", "list", "--json", *args]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert listed[0]["name"] == "shop" and listed[0]["scopes"] == ["decide", "feedback"]
    assert key not in json.dumps(listed)
    assert main(["keys", "rotate", "shop", "--grace", "0s", *args]) == 0
    rotated = capsys.readouterr().out.strip()
    assert rotated.startswith("ak_") and rotated != key
    assert main(["keys", "list", *args]) == 0
    assert "previous key until" in capsys.readouterr().out
    assert main(["keys", "revoke", "shop", *args]) == 0
    assert main(["keys", "revoke", "shop", *args]) == 1
    assert "no key named 'shop'" in capsys.readouterr().err
    assert main(["keys", "create", "z", "--scopes", "nope", *args]) == 1
    assert store.list() == []


def test_store_on_a_cluster(redis_cluster_url: str) -> None:
    client = connect_sync(redis_cluster_url)
    try:
        store = KeyStore(client)
        for name in [k.name for k in store.list()]:
            store.revoke(name)
        key = store.create("on-cluster", ["events"])
        store.rotate("on-cluster", 60)
    finally:
        client.close()
    ring = KeyRing(None, None)
    assert run_with_client(redis_cluster_url, lambda c: refresh(ring, c))
    assert ring.authenticate("events", f"Bearer {key}").name == "on-cluster"
    with pytest.raises(ApiError) as refused:
        ring.authenticate("events", ADMIN["Authorization"])  # not a key of this ring
    assert refused.value.status == 401


def test_keys_over_http(servers: list[TestClient]) -> None:
    a, b = servers
    r = a.post("/v1/keys", json={"name": "via-http", "scopes": ["decide"]}, headers=ADMIN)
    assert r.status_code == 201 and r.json()["in_force"] is True
    key = r.json()["key"]
    assert all(eventually(lambda c=c: status(c, key) == 200) for c in servers)
    again = a.post("/v1/keys", json={"name": "via-http", "scopes": ["decide"]}, headers=ADMIN)
    assert again.status_code == 409 and again.json()["error"]["field"] == "name"
    listed = b.get("/v1/keys", headers=ADMIN).json()["keys"]
    assert [k["name"] for k in listed] == ["via-http"] and key not in json.dumps(listed)
    r = b.post("/v1/keys/via-http/rotate", params={"grace_s": 0}, headers=ADMIN)
    assert r.status_code == 200
    new = r.json()["key"]
    assert all(eventually(lambda c=c: status(c, new) == 200) for c in servers)
    assert all(status(c, key) == 401 for c in servers)
    # Only an admin key manages keys: the new decide key may not.
    assert a.get("/v1/keys", headers=bearer(new)).status_code == 403
    assert a.delete("/v1/keys/via-http", headers=ADMIN).status_code == 200
    assert all(eventually(lambda c=c: status(c, new) == 401) for c in servers)
    assert a.delete("/v1/keys/via-http", headers=ADMIN).status_code == 404
    bad = a.post("/v1/keys", json={"name": "x y", "scopes": ["root"]}, headers=ADMIN)
    assert bad.status_code == 422


def test_an_expired_store_key_is_refused_by_name(
    servers: list[TestClient], store: KeyStore
) -> None:
    live = store.create("until-2099", ["decide"], expires="2099-01-01T00:00:00Z")
    gone = store.create("until-2020", ["decide"], expires="2020-01-01T00:00:00Z")
    assert eventually(lambda: status(servers[0], live) == 200)
    r = servers[0].post("/v1/decide", json=DECIDE, headers=bearer(gone))
    assert r.status_code == 401 and r.json()["error"]["code"] == "key_expired"
    assert "until-2020" in r.json()["error"]["message"]

"""Two `arbiter serve` processes (one of them with 2 workers) on one Redis agree.

Real processes on 127.0.0.1 free ports, real Redis: a version made live on one
is live on the other within the reload interval, a contact cap counted by one
holds on the other, and every logged decision, whichever process made it,
replays identically against the plan the other serves.
"""

from __future__ import annotations

import http.client
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support.server import CASES

from arbiter import dsl
from arbiter.engine.codegen.compiler import compile_plan
from arbiter.engine.log.replay import read_stream, replay
from arbiter.engine.store import keys
from arbiter.engine.store.client import connect_sync

KEY = "multi-admin"
RELOAD_MS = 200


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def call(port: int, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        data = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
        headers = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}
        conn.request(method, path, body=data, headers=headers)
        resp = conn.getresponse()
        raw = resp.read()
    finally:
        conn.close()
    return resp.status, json.loads(raw) if raw else None


def start(redis_url: str, tmp: Path, workers: int) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    env = {
        **os.environ,
        "ARBITER_REDIS_URL": redis_url,
        "ARBITER_ADMIN_KEY": KEY,
        "ARBITER_DATA_DIR": str(tmp / f"data{port}"),
        "ARBITER_RELOAD_INTERVAL_MS": str(RELOAD_MS),
        "ARBITER_ACCESS_LOG_SAMPLE": "0",
        # Not a test of the read deadline: on a loaded machine 50 ms can pass, and a
        # degraded answer (no profile) would hide what is tested here.
        "ARBITER_REDIS_TIMEOUT_MS": "5000",
    }
    argv = [sys.executable, "-m", "arbiter.server.cli", "serve", "--rules", str(tmp / "rules")]
    argv += ["--port", str(port), "--workers", str(workers), "--log-level", "warning"]
    log = tmp / f"serve{port}.log"
    with log.open("wb") as err:
        proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=err)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if call(port, "GET", "/readyz")[0] == 200:
                return proc, port
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise AssertionError(
        f"arbiter serve did not start: {proc.stderr.read() if proc.stderr else ''}"
    )


@pytest.fixture
def two_servers(redis_url: str, tmp_path: Path) -> Iterator[tuple[int, int]]:
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "shop.rules").write_text((CASES / "shop.rules").read_text())
    a, port_a = start(redis_url, tmp_path, workers=2)
    try:
        b, port_b = start(redis_url, tmp_path, workers=1)
        try:
            yield port_a, port_b
        finally:
            b.terminate()
            b.wait(timeout=20)
    finally:
        a.terminate()
        a.wait(timeout=20)


def test_versions_caps_and_replays_agree(
    two_servers: tuple[int, int], redis_url: str, tmp_path: Path
) -> None:
    port_a, port_b = two_servers
    # A cap counted by one process holds on the other (the count lives in Redis).
    assert call(port_a, "PUT", "/v1/profiles/new1", {"visits": 1})[0] == 200
    first = call(
        port_a, "POST", "/v1/decide", {"customer_id": "new1", "context": {"channel": "web"}}
    )
    assert [a["action"] for a in first[1]["actions"]] == ["welcome_offer"]
    time.sleep(0.1)  # the write-behind log counts the contact (5 ms linger)
    for port in (port_b, port_a, port_b):
        again = call(
            port, "POST", "/v1/decide", {"customer_id": "new1", "context": {"channel": "web"}}
        )
        assert [a["action"] for a in again[1]["actions"]] != ["welcome_offer"]

    # A version made live on A is live on every worker of both within the reload interval.
    status, live = call(port_a, "GET", "/v1/rulesets/shop")
    new = live["text"].replace("default bestsellers", "default app_banner")
    status, put = call(port_a, "PUT", "/v1/rulesets/shop", new.encode())
    assert status == 200
    time.sleep(3 * RELOAD_MS / 1000)
    for port in (port_a, port_a, port_a, port_b):  # port_a: connections spread over 2 workers
        body = {"customer_id": "nobody", "context": {"channel": "app"}}
        assert call(port, "POST", "/v1/decide", body)[1]["ruleset"]["version"] == put["version"]

    # Every logged decision replays identically against the plan the other process serves.
    time.sleep(0.1)
    raw = connect_sync(redis_url)
    try:
        records = list(read_stream(raw, keys.DECISION_STREAM))
    finally:
        raw.close()
    plans = {
        v: compile_plan(dsl.load_checked(tmp_path / "rules" / "shop.rules", text))
        for v, text in ((live["version"], live["text"]), (put["version"], new))
    }
    assert len(records) >= 8
    for record in records:
        result = replay(plans[record.ruleset.version], record)
        assert result.identical and result.same_plan, record.decision_id

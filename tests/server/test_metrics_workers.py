"""`/metrics` of `arbiter serve --workers 2` counts what every worker did.

A real `arbiter serve` on a free 127.0.0.1 port and real Redis: N decisions,
spread by the kernel over the two workers, scraped from whichever worker
takes the connection, total exactly N; a killed worker's counts stay in the
totals and its live gauges go.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families
from support.server import CASES

KEY = "workers-admin"
RELOAD_MS = 100
N = 40
# Only bounds the polling below, so that a broken server fails the test instead of hanging it.
WITHIN_S = 60.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def call(port: int, method: str, path: str, body: Any = None) -> tuple[int, bytes]:
    # A new connection per call: the kernel hands each to either worker.
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        data = None if body is None else json.dumps(body).encode()
        headers = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}
        conn.request(method, path, body=data, headers=headers)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    status, raw = call(port, "GET", "/metrics")
    assert status == 200
    out: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for family in text_string_to_metric_families(raw.decode()):
        for s in family.samples:
            key = (s.name, tuple(sorted(s.labels.items())))
            out[key] = out.get(key, 0.0) + s.value
    return out


def total(
    found: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **want: str
) -> float:
    return sum(
        v for (n, labels), v in found.items()
        if n == name and all(dict(labels).get(k) == x for k, x in want.items())
    )  # fmt: skip


def eventually(check: Callable[[], bool]) -> bool:
    deadline = time.monotonic() + WITHIN_S
    while time.monotonic() < deadline:
        try:
            if check():
                return True
        except OSError:
            pass  # a worker being replaced
        time.sleep(0.1)
    return check()


def workers_of(pid: int) -> list[int]:
    """uvicorn's worker processes (its supervisor also forks a resource tracker)."""
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return []
    out = []
    for child in map(int, children):
        try:
            if b"spawn_main" in Path(f"/proc/{child}/cmdline").read_bytes():
                out.append(child)
        except OSError:
            continue
    return out


@pytest.fixture
def served(redis_url: str, tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "shop.rules").write_text((CASES / "shop.rules").read_text())
    port = free_port()
    env = {
        **os.environ,
        "ARBITER_REDIS_URL": redis_url,
        "ARBITER_ADMIN_KEY": KEY,
        "ARBITER_DATA_DIR": str(tmp_path / "data"),
        "ARBITER_RELOAD_INTERVAL_MS": str(RELOAD_MS),
        "ARBITER_ACCESS_LOG_SAMPLE": "0",
        "ARBITER_REDIS_TIMEOUT_MS": "5000",
    }
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    argv = [sys.executable, "-m", "arbiter.server.cli", "serve", "--rules", str(tmp_path / "rules")]
    argv += ["--port", str(port), "--workers", "2", "--log-level", "warning"]
    with (tmp_path / "serve.log").open("wb") as err:
        proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=err)
    try:
        # Both workers up: each counts itself in arbiter_workers (summed over live workers).
        up = eventually(lambda: total(scrape(port), "arbiter_workers") == 2)
        assert up, (tmp_path / "serve.log").read_text()
        yield proc, port
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)


def test_metrics_total_every_worker(served: tuple[subprocess.Popen[bytes], int]) -> None:
    proc, port = served
    body = {"customer_id": "c1", "context": {"channel": "web"}}
    assert [call(port, "POST", "/v1/decide", body)[0] for _ in range(N)] == [200] * N
    for _ in range(4):  # whichever worker answers the scrape
        found = scrape(port)
        assert total(found, "arbiter_decisions_total") == N
        assert total(found, "arbiter_decide_seconds_count") == N
        assert total(found, "arbiter_http_requests_total", route="/v1/decide") == N
        assert total(found, "arbiter_workers") == 2
        # `arbiter serve` tunes each worker's garbage collector (server.gc_pauses).
        assert total(found, "arbiter_gc_frozen_objects") > 0
    # State read from each worker's objects (the decision log's) is summed too.
    assert eventually(lambda: total(scrape(port), "arbiter_decision_log_written_total") == N)

    # A killed worker: its counts stay in the totals, its live gauges go; uvicorn replaces it.
    killed = workers_of(proc.pid)[0]
    os.kill(killed, signal.SIGKILL)
    assert eventually(lambda: killed not in workers_of(proc.pid) and len(workers_of(proc.pid)) == 2)
    assert eventually(lambda: total(scrape(port), "arbiter_workers") == 2)
    found = scrape(port)
    assert total(found, "arbiter_decisions_total") == N
    assert total(found, "arbiter_decision_log_written_total") == N

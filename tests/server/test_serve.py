"""`arbiter serve` as a real process: whatever it starts, it stops, on SIGTERM and SIGINT.

Started on a fresh data directory (so it starts an embedded `redis-server`),
given a profile over HTTP, then sent the signal a supervisor (SIGTERM) or a
terminal (SIGINT) sends. The process must exit, its Redis must be gone, and
the profile must be on disk for the next start.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import redis
from support.redis import process_gone
from support.server import CASES

from arbiter.engine.store import keys
from arbiter.engine.store.embedded import EmbeddedRedis

START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 30.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until_serving(proc: subprocess.Popen[bytes], base: str) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"arbiter serve exited early: {proc.communicate()}")
        try:
            with urllib.request.urlopen(f"{base}/readyz", timeout=1) as r:
                if json.loads(r.read())["status"] == "ready":
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.1)
    raise AssertionError(f"arbiter serve did not answer within {START_TIMEOUT_S}s")


def put_profile(base: str, customer: str, attrs: dict[str, object]) -> None:
    req = urllib.request.Request(
        f"{base}/v1/profiles/{customer}",
        data=json.dumps(attrs).encode(),
        method="PUT",
        headers={"Authorization": "Bearer admin-key", "content-type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=10) as r:
        assert r.status == 200


def wait_gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process_gone(pid):
            return True
        time.sleep(0.05)
    return process_gone(pid)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_serve_stops_its_embedded_redis_with_data_saved(tmp_path: Path, sig: int) -> None:
    data_dir = tmp_path / "data"
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("ARBITER_")}
    env |= {"ARBITER_DATA_DIR": str(data_dir), "ARBITER_ADMIN_KEY": "admin-key"}
    cmd = [sys.executable, "-m", "arbiter.server.cli", "serve", "--port", str(port)]
    cmd += ["--rules", str(CASES / "shop.rules"), "--log-level", "warning"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    redis_pid: int | None = None
    try:
        wait_until_serving(proc, base)
        socket_path = data_dir / "redis" / "redis.sock"
        with redis.Redis(unix_socket_path=str(socket_path), socket_timeout=5) as client:
            redis_pid = int(client.info("server")["process_id"])
        assert redis_pid != proc.pid and not process_gone(redis_pid)
        put_profile(base, "c1", {"visits": 3, "country": "DE"})

        proc.send_signal(sig)
        _, err = proc.communicate(timeout=STOP_TIMEOUT_S)
        # It dies of the signal it was sent, as a supervisor expects, after its cleanup.
        assert proc.returncode == -sig, (proc.returncode, err.decode())
        assert wait_gone(redis_pid, 5.0), f"redis-server {redis_pid} outlived arbiter serve"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if redis_pid is not None and not process_gone(redis_pid):
            os.kill(redis_pid, signal.SIGKILL)  # do not leave it behind for other tests

    # Saved: the next start on the same directory finds the profile.
    with EmbeddedRedis(data_dir / "redis") as again:
        client = redis.Redis(unix_socket_path=str(again.socket_path), socket_timeout=5)
        try:
            assert client.hgetall(keys.profile("c1")) == {b"visits": b"3", b"country": b'"DE"'}
        finally:
            client.close()

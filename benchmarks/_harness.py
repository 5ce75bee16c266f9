"""Shared benchmark plumbing: servers on 127.0.0.1, bounded request loops, wrk.

Every load generated here goes to 127.0.0.1 only, is bounded in count and
time, and stops by itself.
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tarfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from io import BytesIO
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def wait_ready(port: int, path: str = "/readyz", timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            conn = http.client.HTTPConnection(HOST, port, timeout=1)
            conn.request("GET", path)
            if conn.getresponse().status == 200:
                return
        except OSError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"server on port {port} did not become ready")


@contextmanager
def server(
    argv: Sequence[str], port: int, env: dict[str, str], ready_path: str = "/readyz"
) -> Iterator[subprocess.Popen[bytes]]:
    """Run a server process until the block ends (it is always terminated)."""
    proc = subprocess.Popen(
        list(argv),
        cwd=ROOT,
        env={**os.environ, **env},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        wait_ready(port, ready_path)
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


def echo_argv(port: int) -> list[str]:
    """The FastAPI JSON echo (`benchmarks.echo_app`) under uvicorn with uvloop and
    httptools, served as `arbiter serve` serves decide: the baseline every HTTP
    benchmark compares against."""
    return [
        sys.executable,
        "-m",
        "uvicorn",
        "benchmarks.echo_app:app",
        "--host",
        HOST,
        "--port",
        str(port),
        "--loop",
        "uvloop",
        "--http",
        "httptools",
        "--log-level",
        "warning",
        "--no-access-log",
    ]


def arbiter_argv(rules: str, port: int, workers: int = 1) -> list[str]:
    return [
        sys.executable,
        "-m",
        "arbiter.server.cli",
        "serve",
        "--rules",
        rules,
        "--port",
        str(port),
        "--workers",
        str(workers),
        "--log-level",
        "warning",
    ]


class Client:
    """One keep-alive HTTP/1.1 connection to 127.0.0.1."""

    def __init__(self, port: int, headers: dict[str, str] | None = None) -> None:
        self.conn = http.client.HTTPConnection(HOST, port, timeout=5)
        self.headers = {"content-type": "application/json", **(headers or {})}

    def call(self, method: str, path: str, body: Any = None) -> tuple[int, bytes]:
        data = (
            None
            if body is None
            else (body if isinstance(body, bytes) else json.dumps(body).encode())
        )
        self.conn.request(method, path, body=data, headers=self.headers)
        resp = self.conn.getresponse()
        return resp.status, resp.read()


def timed_loop(client: Client, path: str, bodies: Sequence[bytes], n: int) -> list[float]:
    """`n` sequential POSTs (bounded), returning each latency in seconds."""
    out = []
    for i in range(n):
        t0 = time.perf_counter()
        status, _ = client.call("POST", path, bodies[i % len(bodies)])
        out.append(time.perf_counter() - t0)
        if status != 200:
            raise RuntimeError(f"{path} answered {status}")
    return out


def summary(samples: Sequence[float]) -> dict[str, float]:
    s = sorted(samples)
    return {
        "median_ms": statistics.median(s) * 1000,
        "p99_ms": s[int(len(s) * 0.99) - 1] * 1000,
        "mean_ms": statistics.fmean(s) * 1000,
    }


def wrk(
    port: int,
    path: str,
    body: bytes,
    seconds: int = 5,
    connections: int = 32,
    headers: dict[str, str] | None = None,
) -> float | None:
    """Requests/s from wrk (2 threads) against 127.0.0.1, or None when wrk is not installed."""
    exe = shutil.which("wrk")
    if exe is None:
        return None
    script = ROOT / "benchmarks" / ".wrk_post.lua"
    hdrs = "".join(f'wrk.headers["{k}"] = "{v}"\n' for k, v in (headers or {}).items())
    script.write_text(
        'wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n'
        + hdrs
        + f"wrk.body = {json.dumps(body.decode())}\n"
    )
    out = subprocess.run(
        [
            exe,
            "-t2",
            f"-c{connections}",
            f"-d{seconds}s",
            "-s",
            str(script),
            f"http://{HOST}:{port}{path}",
        ],
        capture_output=True,
        text=True,
        timeout=seconds + 30,
    ).stdout
    script.unlink(missing_ok=True)
    for line in out.splitlines():
        if line.startswith("Requests/sec:"):
            return float(line.split()[1])
    if "Non-2xx" in out:
        raise RuntimeError(f"wrk saw errors:\n{out}")
    return None


def baseline_tree(ref: str, into: Path) -> Path:
    """`ref`'s dsl/engine/server laid out as the `arbiter` package under `into`: a server
    started with `into` first on PYTHONPATH runs that version (a before/after baseline)."""
    blob = subprocess.run(
        ["git", "archive", ref, "dsl", "engine", "server"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout
    with tarfile.open(fileobj=BytesIO(blob)) as tar:
        tar.extractall(into / "arbiter", filter="data")
    return into

"""10,000 decisions through the HTTP API, bandit exploring and learning, events flowing: all
reproduce exactly on replay.

The reference-style ruleset (tests/cases/records/retail_v1.rules: three ONNX
models, the `homepage_hero` bandit, an experiment, the holdout, event
windows) is served by `arbiter serve` on real Redis, on a free port of
127.0.0.1, and called over one keep-alive connection (a `TestClient` costs
several times more per request). Events arrive between decisions, so
aggregates move; feedback on some decisions makes the in-process learner
publish new bandit versions while the run goes on. The server writes its
log to rotating gzipped files and flushes them when stopped. Every logged
record must then replay to the same actions, scores, probabilities, pmfs
and trace.
"""

from __future__ import annotations

import http.client
import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from support.paths import CASES_DIR

from arbiter.engine.log.files import read_records
from arbiter.engine.log.parallel import ReplaySetup, replay_log, split_logs

RULES = CASES_DIR / "records" / "retail_v1.rules"
N = 10_000
CUSTOMERS = 400


class Server:
    """`arbiter serve` in a subprocess on a free port, and one keep-alive connection to it."""

    def __init__(self, redis_url: str, tmp_path: Path, log: Path) -> None:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        env = {
            **os.environ,
            "ARBITER_REDIS_URL": redis_url,
            "ARBITER_ADMIN_KEY": "admin-key",
            "ARBITER_DATA_DIR": str(tmp_path / "data"),
            "ARBITER_DECISION_LOG_DIR": str(log),
            "ARBITER_DECISION_LOG_GZIP": "true",
            "ARBITER_RELOAD_INTERVAL_MS": "50",
        }
        argv = [sys.executable, "-m", "arbiter.server.cli", "serve", "--rules", str(RULES)]
        argv += ["--port", str(self.port), "--log-level", "warning"]
        self.errors = tmp_path / "server.err"
        with self.errors.open("wb") as err:
            self.proc = subprocess.Popen(argv, cwd=tmp_path, env=env, stderr=err)
        deadline = time.monotonic() + 60
        while True:
            try:
                self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
                if self.call("GET", "/readyz")[0] == 200:
                    break
            except OSError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"arbiter serve did not start: {self.errors.read_text()}")
            time.sleep(0.1)

    def call(
        self, method: str, path: str, body: Any = None, admin: bool = False
    ) -> tuple[int, Any]:
        headers = {"content-type": "application/json"}
        if admin:
            headers["authorization"] = "Bearer admin-key"
        data = None if body is None else json.dumps(body).encode()
        self.conn.request(method, path, body=data, headers=headers)
        resp = self.conn.getresponse()
        raw = resp.read()
        return resp.status, json.loads(raw) if raw.startswith(b"{") else raw

    def stop(self) -> None:
        """SIGTERM: the server flushes and closes its log; wait for it."""
        self.conn.close()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                raise


def test_ten_thousand_http_decisions_replay_exactly(redis_url: str, tmp_path: Path) -> None:
    log = tmp_path / "log"
    rng = random.Random(3)
    events = 0
    c = Server(redis_url, tmp_path, log)
    try:
        for i in range(CUSTOMERS):
            profile = {
                "lifetime_value": rng.choice([0, 150, 900, 3000]),
                "orders_90d": rng.randint(0, 5),
                "visits_30d": rng.randint(0, 12),
                "loyalty_tier": rng.choice(["none", "silver", "gold"]),
                "consents": rng.choice([["email"], []]),
                "last_purchase_at": 1.79e9 - rng.randint(0, 120) * 86400,
            }
            assert c.call("PUT", f"/v1/profiles/u{i}", profile, admin=True)[0] < 300
        for i in range(N):
            customer = f"u{rng.randrange(CUSTOMERS)}"
            if i % 20 == 0:
                batch = [
                    {
                        "customer_id": f"u{rng.randrange(CUSTOMERS)}",
                        "type": kind,
                        **({"properties": {"price": 30.0}} if kind == "add_to_cart" else {}),
                        **({"properties": {"amount": 80.0}} if kind == "purchase" else {}),
                    }
                    for kind in rng.choices(
                        ["page_view", "product_view", "add_to_cart", "purchase"], k=20
                    )
                ]
                assert c.call("POST", "/v1/events", {"events": batch}, admin=True)[0] == 202
                events += len(batch)
            context = {
                "channel": rng.choice(["web", "web", "app", "email"]),
                "page": rng.choice(["/", "/", "/cart", "/product/3"]),
                "device": rng.choice(["desktop", "mobile", "tablet"]),
                "cart_value": rng.choice([0, 45, 120]),
            }
            status, answer = c.call(
                "POST", "/v1/decide", {"customer_id": customer, "context": context, "limit": 2}
            )
            assert status == 200, answer
            hero = [a for a in answer["actions"] if a["action"].startswith("hero_")]
            if hero and i % 3 == 0:
                reward = 1.0 if hero[0]["action"] == "hero_sale" else 0.0
                body = {"decision_id": answer["decision_id"], "action": hero[0]["action"]}
                assert c.call("POST", "/v1/feedback", {**body, "reward": reward})[0] == 202
    finally:
        c.stop()
    # uvicorn re-raises SIGTERM once it has shut down cleanly (the lifespan flushed the log).
    assert c.proc.returncode in (0, -signal.SIGTERM)
    records = list(read_records([log]))
    assert len(records) == N and events == N
    explored = [b for r in records for b in r.bandits]
    assert len(explored) > 1000
    assert len({b.version for b in explored}) > 1, "the bandit never published a new version"
    assert len({r.inputs.aggregates.get("count(product_view within 86400s)") for r in records}) > 3

    report = replay_log(ReplaySetup((str(RULES),)), split_logs([log]))
    assert report.total == N
    assert report.mismatches == [] and report.reproduced == N

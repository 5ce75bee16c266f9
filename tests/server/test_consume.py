"""`arbiter consume` as real processes on real Redis, and the in-server consumer's metrics.

100,000 events are produced to 4 shards; two `arbiter consume` processes read
them; one is killed with SIGKILL midway and a new one started in its place.
Afterwards every window total equals the total computed from the produced
events (nothing lost, nothing counted twice), the killed consumer's messages
were claimed by the others, and every invalid message is on the dead-letter
stream with its reason.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient
from support.redis import run_with_client
from support.server import ADMIN, CASES, settings
from support.store import DAY, count

from arbiter.engine.intake.redis_streams import EVENT, RedisStreamSource, wait_drained
from arbiter.engine.plan import AggregateSpec
from arbiter.engine.store import keys
from arbiter.engine.store.profiles import ProfileStore
from arbiter.server.app import create_app

SHOP = str(CASES / "shop.rules")
SHARDS = 4
EVENTS = 100_000
CUSTOMERS = 500
CARTS = count("add_to_cart", 30 * DAY)
BUYS = count("purchase", 30 * DAY)
SPEND = AggregateSpec("sum", "purchase", "amount", 30 * DAY)


def produce(now: float) -> tuple[list[tuple[str, bytes, bytes]], dict[str, Counter[str]], set[int]]:
    """The messages, the expected totals per customer, and the positions of invalid ones."""
    rng = random.Random(13)
    messages: list[tuple[str, bytes, bytes]] = []
    expected: dict[str, Counter[str]] = {}
    invalid: set[int] = set()
    for i in range(EVENTS):
        customer = f"c{rng.randrange(CUSTOMERS)}"
        ts = now - rng.uniform(0, 20 * DAY)
        body: dict[str, Any] = {"customer_id": customer, "ts": ts}
        if i % 997 == 0:
            invalid.add(i)
            body.update(type="purchase", properties={"amount": "free"})  # not a number
        elif rng.random() < 0.3:
            amount = rng.randrange(1, 200)
            body.update(type="purchase", properties={"amount": amount})
            expected.setdefault(customer, Counter()).update({"purchase": 1, "amount": amount})
        else:
            body["type"] = "add_to_cart"
            expected.setdefault(customer, Counter()).update({"add_to_cart": 1})
        if i % 2:
            body["event_id"] = f"e{i}"  # half carry their own id, half rely on the message id
        messages.append((customer, EVENT, json.dumps(body).encode()))
    return messages, expected, invalid


def start(name: str, url: str, tmp_path: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "ARBITER_REDIS_URL": url, "ARBITER_DATA_DIR": str(tmp_path / "data")}
    command = [sys.executable, "-m", "arbiter.server.cli", "consume", "--rules", SHOP]
    command += ["--shards", str(SHARDS), "--name", name, "--claim-idle-ms", "1000"]
    proc = subprocess.Popen(command, env=env, stderr=subprocess.PIPE, cwd=tmp_path)
    assert proc.stderr is not None
    # Its first line says it is running, signal handlers installed.
    first = proc.stderr.readline()
    assert first.startswith(f"arbiter consume: {name} in group".encode()), first
    return proc


def test_100k_events_two_consumers_one_killed_midway(redis_url: str, tmp_path: Path) -> None:
    now = time.time()
    messages, expected, invalid = produce(now)

    async def publish(client: Any) -> list[bytes]:
        source = RedisStreamSource(client, shards=SHARDS)
        await source.setup()
        ids: list[bytes] = []
        for i in range(0, len(messages), 5000):
            ids += await source.publish(messages[i : i + 5000])
        return ids

    ids = run_with_client(redis_url, publish)
    a, b = start("a", redis_url, tmp_path), start("b", redis_url, tmp_path)
    procs = [a, b]
    try:
        # Midway: when a third of every shard has been delivered, kill one consumer hard.
        def delivered_third(client: Any) -> Any:
            async def check() -> bool:
                for k in range(SHARDS):
                    stream = keys.intake_stream(k)
                    groups = await client.xinfo_groups(stream)
                    length = await client.xlen(stream)
                    last = groups[0]["last-delivered-id"]
                    ahead = await client.xrange(stream, min=b"(" + last, count=length)
                    if len(ahead) > length * 2 // 3:
                        return False
                return True

            return check()

        deadline = time.monotonic() + 120
        while not run_with_client(redis_url, delivered_third):
            assert time.monotonic() < deadline, "the consumers made no progress"
            assert a.poll() is None and b.poll() is None, "a consumer exited"
            time.sleep(0.2)
        a.send_signal(signal.SIGKILL)
        a.wait(10)
        c = start("c", redis_url, tmp_path)  # its replacement, under another name
        procs.append(c)

        async def drained(client: Any) -> bool:
            return await wait_drained(RedisStreamSource(client, shards=SHARDS), 180)

        assert run_with_client(redis_url, drained), "the streams were not drained in time"
        for p in (b, c):
            p.send_signal(signal.SIGTERM)
            assert p.wait(30) == 0
            assert b"stopped after" in (p.stderr.read() if p.stderr else b"")
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait(10)
            if p.stderr is not None:
                p.stderr.close()

    async def totals(client: Any) -> Any:
        store = ProfileStore(client)
        customers = sorted(expected)
        got = await asyncio.gather(
            *(store.aggregates(cust, [CARTS, BUYS, SPEND], now + 1) for cust in customers)
        )
        dead = await client.xrange(keys.INTAKE_DEAD_LETTERS)
        pending = {}
        for k in range(SHARDS):
            for row in await client.xinfo_consumers(keys.intake_stream(k), "arbiter"):
                pending[row["name"]] = pending.get(row["name"], 0) + row["pending"]
        return dict(zip(customers, got, strict=True)), dead, pending

    got, dead, pending = run_with_client(redis_url, totals)
    wrong = [
        cust
        for cust, want in expected.items()
        if (got[cust][CARTS.key], got[cust][BUYS.key], got[cust][SPEND.key])
        != (want["add_to_cart"], want["purchase"], want["amount"])
    ]
    assert wrong == [], f"{len(wrong)} customers' windows differ from the produced events"
    assert sum(g[CARTS.key] + g[BUYS.key] for g in got.values()) == EVENTS - len(invalid)
    # The killed consumer held messages unacknowledged; the others claimed them.
    assert pending == {b"a": 0, b"b": 0, b"c": 0}
    # Every invalid message is on the dead-letter stream, with its reason (a SIGKILL
    # between writing a dead letter and acknowledging may write one twice).
    reasons = {f[b"message_id"]: f[b"reason"] for _, f in dead}
    assert set(reasons) == {ids[i] for i in invalid}
    assert set(reasons.values()) == {b"properties.amount: expected a number, got str"}


def test_the_server_consumes_and_reports_lag_and_counts(redis_url: str, tmp_path: Path) -> None:
    app = create_app(settings(redis_url, tmp_path, intake_shards=2, intake_consume=True))
    now = time.time()

    async def publish(client: Any) -> None:
        source = RedisStreamSource(client, shards=2)
        await source.setup()
        await source.publish(
            [
                ("c1", EVENT, json.dumps({"customer_id": "c1", "type": "add_to_cart"}).encode()),
                ("c2", EVENT, b'{"customer_id": "c2"}'),  # no type: dead letter
            ]
        )

    with TestClient(app) as client:
        run_with_client(redis_url, publish)
        deadline = time.monotonic() + 20
        while True:
            text = client.get("/metrics").text
            # A batch's dead letters are counted as met, its events when written after: wait
            # for both (waiting for the dead letter alone raced the write).
            done = 'arbiter_intake_messages_total{outcome="dead_letter"} 1.0' in text
            if done and 'arbiter_intake_messages_total{outcome="counted"}' in text:
                break
            assert time.monotonic() < deadline, text
            time.sleep(0.05)
        assert 'arbiter_intake_messages_total{outcome="counted"} 1.0' in text
        assert 'arbiter_intake_pending{stream="arb:in:{in0}"} 0.0' in text
        assert "arbiter_intake_lag_seconds" in text
        profile = client.get("/v1/profiles/c1", headers=ADMIN).json()
        assert profile["last_seen"]["add_to_cart"] <= now + 60


def test_consume_usage_errors(capsys: Any) -> None:
    from arbiter.server.cli.main import main

    assert main(["consume", "--rules", SHOP, "--shards", "0"]) == 2
    assert "--shards, --batch and --claim-idle-ms must be positive" in capsys.readouterr().err

"""Redis stopped, restarted and slowed under a running app: decide keeps answering in time.

A real `redis-server` on a TCP port this test owns, stopped in the middle of a
bounded run of decisions and started again on the same port and directory.
The app is never restarted: its clients must find Redis again by themselves.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from support.server import ADMIN, settings

from arbiter.engine.log.replay import read_stream
from arbiter.engine.store import keys
from arbiter.engine.store.client import connect_sync
from arbiter.engine.store.embedded import EmbeddedRedis
from arbiter.server.app import create_app

DEADLINE_MS = 50
# What the code guarantees: a decision's Redis read returns by the deadline plus the
# event loop's wake-up delay. Absolute times swing with the machine's load (a read
# against a hanging Redis: ~51 ms quiet, up to ~160 ms seen at load average 12 on
# 2 cores), so the hanging-Redis test times each read side by side with an
# `asyncio.sleep` of the deadline started with it on the same event loop: both wait
# for the same timer tick, and their ratio stays near 1.0 (1.004-1.014 measured, at
# load average 11-13). A read that lasts twice the deadline is a ratio near 2
# (1.86-2.05 with the deadline doubled in engine.store.batcher), so 1.5 tells them apart.
# docs/profiles.md ("Deadlines and degraded mode") states the same.
MAX_RATIO = 1.5
VIP = {"visits": 40, "lifetime_value": 5000, "orders_90d": 4}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def tcp_redis(tmp_path: Path) -> Iterator[EmbeddedRedis]:
    # Persistent, so that what was written before the stop is there after the restart.
    server = EmbeddedRedis(tmp_path / "r", port=free_port(), unix_socket=False, persistent=True)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def read_times(client: TestClient, *, beside_deadline: bool = False) -> list[tuple[float, float]]:
    """(read ms, reference ms) of each decision's Redis read, timed inside the app, in order.

    Wraps the app's own `ProfileStore.fetch` (it still does the real read): the
    deadline bounds this read, and timing it here leaves out what the deadline
    does not cover (the test client's thread hop, routing, rules, JSON). With
    ``beside_deadline``, each read starts an `asyncio.sleep(deadline)` on the same
    loop at the same moment and waits for it: the reference time (else 0).
    """
    state = client.app.state.arbiter  # type: ignore[attr-defined]
    real = state.store.fetch
    times: list[tuple[float, float]] = []

    async def reference() -> float:
        t0 = time.perf_counter()
        await asyncio.sleep(DEADLINE_MS / 1000)
        return (time.perf_counter() - t0) * 1000

    async def timed(*args: Any, **kwargs: Any) -> Any:
        ref = asyncio.get_running_loop().create_task(reference()) if beside_deadline else None
        t0 = time.perf_counter()
        try:
            return await real(*args, **kwargs)
        finally:
            read_ms = (time.perf_counter() - t0) * 1000
            times.append((read_ms, await ref if ref is not None else 0.0))

    state.store.fetch = timed
    return times


@pytest.fixture
def app_client(tcp_redis: EmbeddedRedis, tmp_path: Path) -> Iterator[TestClient]:
    app = create_app(settings(tcp_redis.url, tmp_path, redis_timeout_ms=DEADLINE_MS))
    with TestClient(app) as client:
        assert client.put("/v1/profiles/vip", json=VIP, headers=ADMIN).status_code == 200
        assert (
            client.put("/v1/profiles/plain", json={"visits": 10}, headers=ADMIN).status_code == 200
        )
        yield client


def decide(client: TestClient, customer: str) -> tuple[int, dict[str, Any], float]:
    t0 = time.perf_counter()
    r = client.post("/v1/decide", json={"customer_id": customer, "context": {"channel": "app"}})
    elapsed_ms = (time.perf_counter() - t0) * 1000
    return r.status_code, r.json(), elapsed_ms


def flush(client: TestClient) -> None:
    client.portal.call(client.app.state.arbiter.log.flush)  # type: ignore[attr-defined,union-attr]


def logged_ids(url: str) -> set[str]:
    client = connect_sync(url)
    try:
        return {r.decision_id for r in read_stream(client, keys.DECISION_STREAM)}
    finally:
        client.close()


def test_redis_stopped_and_restarted_mid_run(
    tcp_redis: EmbeddedRedis, app_client: TestClient
) -> None:
    n, stop_at, restart_at = 300, 100, 200
    reads = read_times(app_client)
    rows: list[tuple[int, int, bool, float, str]] = []  # (i, status, degraded, ms, decision id)
    for i in range(n):
        if i == stop_at:
            tcp_redis.stop()  # SHUTDOWN SAVE: what was written so far survives
        if i == restart_at:
            tcp_redis.start()  # same port, same directory
        status, body, ms = decide(app_client, "vip" if i % 2 else "plain")
        rows.append((i, status, body.get("degraded", True), ms, body.get("decision_id", "")))

    statuses = {status for _, status, *_ in rows}
    down = [r for r in rows if stop_at <= r[0] < restart_at]
    assert len(reads) == n  # one read per decision, in order
    down_reads = sorted(ms for ms, _ in reads[stop_at:restart_at])
    print(
        f"\nreads while down: median {down_reads[50]:.2f} ms, worst {down_reads[-1]:.1f} ms; "
        f"end to end (test client): worst {max(r[3] for r in rows):.1f} ms"
    )
    assert statuses == {200}
    # Redis down: the connection is refused at once; a read never waits for it, so
    # nine in ten reads end well within the deadline, even on a loaded machine.
    assert down_reads[90] < DEADLINE_MS / 2, down_reads
    assert all(deg for _, _, deg, _, _ in down)
    # While Redis is up, a decision is degraded only when its read ran out of time (a
    # machine stalled past the deadline: seen under heavy load), never after an error,
    # and rarely. After the restart this holds from the first decision on: its read
    # finds the pooled connection dead and the script gone, and recovers in time.
    up = [i for i in range(n) if not stop_at <= i < restart_at]
    late = [i for i in up if rows[i][2]]
    print(f"degraded while up: {[(i, round(reads[i][0], 1)) for i in late]}")
    assert all(reads[i][0] >= DEADLINE_MS for i in late), [(i, reads[i]) for i in late]
    assert len(late) <= len(up) // 20, late

    # The decision log retried: every decision is in the stream, those made while
    # Redis was down included (they waited in the queue).
    flush(app_client)
    logged = logged_ids(tcp_redis.url)
    missing = [i for i, *_, did in rows if did not in logged]
    assert missing == []


def test_decisions_while_down_answer_from_context_rules(
    tcp_redis: EmbeddedRedis, app_client: TestClient
) -> None:
    tcp_redis.stop()
    try:
        status, body, _ = decide(app_client, "vip")
    finally:
        tcp_redis.start()
    assert status == 200 and body["degraded"] is True
    assert [a["action"] for a in body["actions"]] == ["app_banner"]  # context-only rule
    for _ in range(3):
        status, body, _ = decide(app_client, "vip")
    assert body["degraded"] is False and body["actions"][0]["action"] == "vip_lounge"


def test_hanging_redis_degrades_at_the_deadline(
    tcp_redis: EmbeddedRedis, app_client: TestClient
) -> None:
    for _ in range(5):
        assert decide(app_client, "vip")[1]["degraded"] is False  # warm connections
    reads = read_times(app_client, beside_deadline=True)
    pid = tcp_redis.pid
    assert pid is not None
    # SIGSTOP hangs the whole server (as a long command, a fork or a swap storm would),
    # for as long as the test needs however slow the machine: until SIGCONT.
    os.kill(pid, signal.SIGSTOP)
    try:
        slow = [decide(app_client, "vip" if i % 2 else "plain") for i in range(6)]
    finally:
        os.kill(pid, signal.SIGCONT)
    # Once Redis answers again, nobody gets an answer meant for someone else: a
    # connection abandoned at the deadline must not hand its late reply to the next read.
    after = [decide(app_client, c) for c in ("vip", "plain", "vip", "plain", "vip", "plain")]
    hung = reads[:6]
    ratios = sorted(read / ref for read, ref in hung)
    print(f"\nhung reads: {[round(r, 1) for r, _ in hung]} ms")
    print(f"beside asyncio.sleep({DEADLINE_MS} ms): {[round(f, 1) for _, f in hung]} ms")
    print(f"ratios: {[round(x, 3) for x in ratios]}")
    print(f"end to end (test client): {[round(ms, 1) for *_, ms in slow]} ms")
    assert all(status == 200 and body["degraded"] for status, body, _ in slow)
    # Each read waited for the deadline (Redis was hanging) ...
    assert all(read >= DEADLINE_MS for read, _ in hung), hung
    # ... and no longer: the median read lasts as long as the deadline's own sleep
    # beside it (the median, so one preemption between the two does not count).
    assert ratios[len(ratios) // 2] < MAX_RATIO, hung
    assert all(not body["degraded"] for _, body, _ in after[1:])
    actions = [body["actions"][0]["action"] for _, body, _ in after[1:]]
    assert actions == ["app_banner", "vip_lounge", "app_banner", "vip_lounge", "app_banner"]


def test_log_retry_after_a_partial_write_keeps_one_entry_per_decision(redis_url: str) -> None:
    # The record reached the stream, then the customer-side write (index entry, caps)
    # failed: the retry must not append the record again, or erasure (which follows
    # the index) would leave the first copy behind.
    import asyncio

    from support.store import Decider, shop_plan

    from arbiter.engine.log.writer import DecisionLog
    from arbiter.engine.store.client import connect
    from arbiter.engine.store.profiles import ProfileStore

    class FailsOnce(ProfileStore):
        failed = False

        def after_decision_command(self, *args: Any, **kwargs: Any) -> Any:
            if not self.failed:
                self.failed = True
                raise ConnectionError("injected: Redis went away between the two writes")
            return super().after_decision_command(*args, **kwargs)

    async def main() -> tuple[int, int]:  # stream length after the retry, after erasure
        client = connect(redis_url, socket_timeout=5)
        try:
            store = FailsOnce(client)
            d = Decider(store, shop_plan())
            d.log = DecisionLog(client, store)
            await store.put_profile("c", {"visits": 1})
            with pytest.raises(ConnectionError):
                await d("c", time.time(), channel="web")
            await d.log.flush()  # the retry
            entries = await client.xlen(keys.DECISION_STREAM)
            await store.erase("c")
            return entries, await client.xlen(keys.DECISION_STREAM)
        finally:
            await client.aclose()

    assert asyncio.run(main()) == (1, 0)

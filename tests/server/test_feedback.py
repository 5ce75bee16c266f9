"""`POST /v1/feedback` never loses an accepted reward, on real Redis.

The faults are injected by wrapping how the app's real Redis client sends
commands (`raw_commands.send`, which the feedback's writes go through): the
first batch that would put the reward on the stream fails, either before Redis
ran it (the request never left) or after (the reply was lost). Either way the
client gets a 503 with `Retry-After`, its retry is answered 202, and the reward
stream holds the reward exactly once.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from redis.exceptions import ConnectionError as RedisConnectionError
from support.server import ADMIN, settings

from arbiter.engine.store import contact_history, keys, raw_commands
from arbiter.engine.store.client import connect_sync
from arbiter.server.app import create_app
from arbiter.server.state import new_decision_id


@pytest.fixture
def client(redis_url: str, tmp_path: Path) -> Iterator[TestClient]:
    # raise_server_exceptions=False: a 500 must reach the test as a response, not a raise.
    app = create_app(settings(redis_url, tmp_path))
    with TestClient(app, raise_server_exceptions=False) as c:
        yield c


def _writes_reward(args: tuple[Any, ...]) -> bool:
    """Whether a Redis command would append to the reward stream (directly or by script)."""
    name = str(args[0]).upper()
    stream = keys.REWARD_STREAM.encode()
    touches = any(a in (keys.REWARD_STREAM, stream) for a in args[1:])
    return touches and name in {"XADD", "EVALSHA", "EVAL"}


def fail_first_batch(
    client: TestClient,
    monkeypatch: pytest.MonkeyPatch,
    matches: Callable[[tuple[Any, ...]], bool],
    *,
    after_running: bool,
) -> list[str]:
    """Make the app's next batch with a command that `matches` raise a connection error
    (after Redis ran it if `after_running`: the reply is lost); returns a log."""
    # Feedback's commands ride the decisions' round trips, on the hot path's client.
    redis = client.app.state.arbiter.store.redis  # type: ignore[attr-defined]
    real = raw_commands.send
    failed: list[str] = []

    async def send(target: Any, commands: Sequence[Sequence[Any]]) -> list[Any]:
        if target is redis and not failed and any(matches(tuple(c)) for c in commands):
            failed.append(str(commands[0][0]))
            if after_running:  # Redis ran it; the reply is lost on the way back
                await real(target, commands)
            raise RedisConnectionError("injected: connection reset by peer")
        return await real(target, commands)

    monkeypatch.setattr(raw_commands, "send", send)
    return failed


def fail_first_reward_write(
    client: TestClient, monkeypatch: pytest.MonkeyPatch, *, after_running: bool
) -> list[str]:
    """Make the app's next reward-stream write raise a connection error; returns a log."""
    return fail_first_batch(client, monkeypatch, _writes_reward, after_running=after_running)


def rewards(redis_url: str) -> list[dict[bytes, bytes]]:
    redis = connect_sync(redis_url)
    try:
        return [fields for _, fields in redis.xrange(keys.REWARD_STREAM)]
    finally:
        redis.close()


def decide(client: TestClient, customer: str) -> dict[str, Any]:
    r = client.post("/v1/decide", json={"customer_id": customer, "context": {"channel": "web"}})
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


@pytest.mark.parametrize("after_running", [False, True], ids=["before-redis-ran-it", "reply-lost"])
def test_a_failed_reward_write_is_503_and_the_retry_records_it_once(
    client: TestClient, redis_url: str, after_running: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    client.put("/v1/profiles/c1", json={"visits": 1}, headers=ADMIN)
    d = decide(client, "c1")
    fb = {"decision_id": d["decision_id"], "action": d["actions"][0]["action"], "reward": 1}
    failed = fail_first_reward_write(client, monkeypatch, after_running=after_running)

    first = client.post("/v1/feedback", json=fb)
    assert failed, "the fault was never injected"
    assert first.status_code == 503, first.text
    assert first.json()["error"]["code"] == "unavailable"
    assert int(first.headers["retry-after"]) >= 1

    retry = client.post("/v1/feedback", json=fb)
    assert retry.status_code == 202, retry.text
    # Before Redis ran it, the retry is the first to record it; after, it finds it recorded.
    assert retry.json() == {"accepted": not after_running, "duplicate": after_running}
    again = client.post("/v1/feedback", json=fb)
    assert again.json() == {"accepted": False, "duplicate": True}

    got = rewards(redis_url)
    assert len(got) == 1, got
    assert got[0][b"decision_id"] == d["decision_id"].encode()
    assert float(got[0][b"reward"]) == 1.0


def test_a_failed_rejection_count_is_made_good_by_the_retry(
    client: TestClient, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The reward reached the stream, then counting the rejection (fatigue) failed:
    # the retry is a duplicate, but the rejection is still counted, once.
    vip = {"visits": 40, "lifetime_value": 5000, "orders_90d": 4}
    client.put("/v1/profiles/v", json=vip, headers=ADMIN)
    d = decide(client, "v")
    assert d["actions"][0]["action"] == "vip_lounge"
    fb = {"decision_id": d["decision_id"], "action": "vip_lounge", "reward": 0}

    def counts_rejection(command: tuple[Any, ...]) -> bool:
        # The rejection's write (the customer's contact history).
        return str(command[0]).upper() == "EVALSHA" and keys.contact_history("v") in map(
            str, command
        )

    failed = fail_first_batch(client, monkeypatch, counts_rejection, after_running=False)
    first = client.post("/v1/feedback", json=fb)
    assert failed, "the fault was never injected"
    assert first.status_code == 503 and "retry-after" in first.headers, first.text
    retry = client.post("/v1/feedback", json=fb)
    assert retry.status_code == 202
    client.post("/v1/feedback", json=fb)  # a third time counts nothing more
    sync = connect_sync(redis_url)
    try:
        blob = sync.hget(keys.contact_history("v"), contact_history.rejection_field("vip_lounge"))
        assert len(contact_history.times(blob)) == 1
    finally:
        sync.close()
    assert len(rewards(redis_url)) == 1


def test_feedback_at_another_worker_waits_for_a_record_still_being_written(
    redis_url: str, tmp_path: Path
) -> None:
    # Two servers on one Redis. The first one's write-behind is stalled (the injected
    # fault) for 100 ms after its decision, the time feedback takes to reach the second:
    # the second waits for the record instead of answering 404 to a valid reward.
    maker = create_app(settings(redis_url, tmp_path / "a"))
    other = create_app(settings(redis_url, tmp_path / "b"))
    with TestClient(maker) as a, TestClient(other) as b:
        a.put("/v1/profiles/c9", json={"visits": 1}, headers=ADMIN)
        log = a.app.state.arbiter.log  # type: ignore[attr-defined]
        real_write = log._write_batch
        gate = threading.Event()

        async def stalled_write() -> None:
            while not gate.is_set():
                await asyncio.sleep(0.002)
            await real_write()

        log._write_batch = stalled_write
        d = decide(a, "c9")
        assert d["decision_id"] in log.pending  # not in Redis yet
        threading.Timer(0.1, gate.set).start()
        fb = {"decision_id": d["decision_id"], "action": d["actions"][0]["action"], "reward": 1}
        r = b.post("/v1/feedback", json=fb)
        assert r.status_code == 202, r.text
        assert r.json() == {"accepted": True, "duplicate": False}
    got = rewards(redis_url)
    assert [f[b"decision_id"] for f in got] == [d["decision_id"].encode()]


def test_feedback_for_a_recent_id_that_was_never_made_is_still_404(client: TestClient) -> None:
    made = new_decision_id(time.time())  # well formed and recent, but no decision has it
    r = client.post("/v1/feedback", json={"decision_id": made, "action": "x", "reward": 1})
    assert r.status_code == 404, r.text
    assert r.json()["error"]["field"] == "decision_id"

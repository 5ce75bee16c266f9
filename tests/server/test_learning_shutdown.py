"""A server's in-process learners stop in bounded time at shutdown, even stuck ones.

`LearnerSupervisor.close` sets every learner's stop event, waits, then cancels.
On Python 3.11, `asyncio.wait_for(task, timeout)` cancels a late task once and
then waits for it to end however long that takes; a learner cancelled while its
`finally` publishes to a Redis that does not answer (or whose cancellation an
inner `wait_for` swallowed, CPython gh-86296) never ended, and neither did the
shutdown. Real Redis (its own, paused with SIGSTOP), real learners.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support.paths import ROOT_DIR

from arbiter.engine.learning.bandit_store import bandit_keys
from arbiter.engine.learning.learner import LearnerConfig
from arbiter.engine.store.client import AsyncRedisClient, connect
from arbiter.engine.store.embedded import EmbeddedRedis
from arbiter.server.background import learning
from arbiter.server.background.learning import LearnerSupervisor
from arbiter.server.rulesets import LiveRuleset, build

RETAIL = ROOT_DIR / "rulesets" / "retail.rules"
#: How long the test lets `close` run before calling it hung (it needs well under a second).
HUNG_S = 30.0


@pytest.fixture
def paused_redis(tmp_path: Path) -> Iterator[EmbeddedRedis]:
    """A Redis of this test's own (the test pauses it), resumed and stopped at the end."""
    server = EmbeddedRedis(tmp_path / "redis", persistent=False).start()
    try:
        yield server
    finally:
        assert server.pid is not None
        os.kill(server.pid, signal.SIGCONT)
        server.stop()


def _retail() -> LiveRuleset:
    return build(RETAIL, RETAIL.read_text(encoding="utf-8"), 1, None)


async def _closed_in_time(supervisor: LearnerSupervisor) -> None:
    closing = asyncio.get_running_loop().create_task(supervisor.close())
    done, _ = await asyncio.wait({closing}, timeout=HUNG_S)
    assert closing in done, f"LearnerSupervisor.close still running after {HUNG_S:g} s"
    closing.result()


def test_a_learner_stuck_in_a_redis_read_at_shutdown_is_stopped(
    paused_redis: EmbeddedRedis, caplog: pytest.LogCaptureFixture
) -> None:
    async def scenario() -> None:
        # No socket timeout: a read from a paused Redis waits until it is cancelled.
        client: AsyncRedisClient = connect(paused_redis.url, socket_timeout=None)
        live = _retail()
        config = LearnerConfig(poll_interval=0.02, publish_interval=0.05)
        supervisor = LearnerSupervisor(client, config, stop_timeout=0.3, cancel_timeout=10)
        supervisor.activated(live)
        task = supervisor._running[live.name][2]
        leader = bandit_keys(live.name, next(iter(live.plan.checked.bandits))).leader
        while not await client.exists(leader):  # a learner leads and reads rewards
            await asyncio.sleep(0.02)
        assert paused_redis.pid is not None
        os.kill(paused_redis.pid, signal.SIGSTOP)
        await asyncio.sleep(0.1)  # its next read is sent and never answered
        try:
            await _closed_in_time(supervisor)
            # Stopped, not abandoned: a second cancellation ended its `finally`.
            assert task.done()
            assert "abandoned" not in caplog.text
        finally:
            os.kill(paused_redis.pid, signal.SIGCONT)
            await client.aclose()

    asyncio.run(scenario())


def test_a_learner_that_never_stops_is_abandoned_and_said_so(
    paused_redis: EmbeddedRedis, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    released = asyncio.Event()
    cancellations = 0

    async def stubborn(redis: Any, ruleset: str, *args: Any, **kwargs: Any) -> None:
        # The fault: ignores its stop event and swallows every cancellation, as a
        # learner would whose cancellation an inner wait_for lost, each time.
        nonlocal cancellations
        while not released.is_set():
            try:
                await redis.blpop(["arbiter-test:never"], timeout=0.05)
            except asyncio.CancelledError:
                cancellations += 1

    async def scenario() -> None:
        client: AsyncRedisClient = connect(paused_redis.url, socket_timeout=None)
        monkeypatch.setattr(learning, "run_learners", stubborn)
        supervisor = LearnerSupervisor(client, stop_timeout=0.1, cancel_timeout=0.5)
        live = _retail()
        supervisor.activated(live)
        task = supervisor._running[live.name][2]
        await asyncio.sleep(0.1)
        try:
            with caplog.at_level(logging.ERROR, logger="arbiter.learning"):
                await _closed_in_time(supervisor)
            assert not task.done()
            assert cancellations >= 2  # cancelled again and again, not once
            assert f"learners of ruleset {live.name} did not stop" in caplog.text
            assert "abandoned" in caplog.text
        finally:
            released.set()
            await task
            await client.aclose()

    asyncio.run(scenario())

"""In-process learners: one set per live ruleset with bandits, restarted when they change.

Every worker runs them; the learners' Redis lease keeps exactly one active per
bandit across all workers and machines (see engine.learning.learner). Every
worker also runs one reward attributor (engine.learning.attribution), which
turns outcome events into rewards; attributors share the work, no lease needed.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import Any

from arbiter.engine.learning.attribution import (
    Attributor,
    outcome_types,
    publish_outcome_types,
    tracked_types,
)
from arbiter.engine.learning.learner import LearnerConfig, run_learners
from arbiter.server.rulesets import LiveRuleset

log = logging.getLogger("arbiter.learning")

#: Seconds a learner or the attributor gets to stop on its own at shutdown (publish, release).
STOP_TIMEOUT_S = 5.0
#: Then seconds of repeated cancellations before it is abandoned, and their interval.
CANCEL_TIMEOUT_S = 5.0
CANCEL_INTERVAL_S = 0.1


class LearnerSupervisor:
    """Starts, restarts and stops `run_learners` tasks as rulesets are activated."""

    def __init__(
        self,
        redis: Any,
        config: LearnerConfig | None = None,
        *,
        attributor: Attributor | None = None,
        stop_timeout: float = STOP_TIMEOUT_S,
        cancel_timeout: float = CANCEL_TIMEOUT_S,
    ) -> None:
        self.redis = redis
        self.config = config
        self.attributor = attributor
        self.stop_timeout = stop_timeout
        self.cancel_timeout = cancel_timeout
        self._running: dict[str, tuple[Any, asyncio.Event, asyncio.Task[None]]] = {}
        self._attributing: tuple[asyncio.Event, asyncio.Task[None]] | None = None
        self._side_tasks: set[asyncio.Task[None]] = set()

    def activated(self, live: LiveRuleset) -> None:
        """Called on every activation; (re)starts learners if the bandit declarations changed."""
        decls = live.plan.checked.bandits
        self._attribute(tracked_types(live.plan.checked), bool(outcome_types(decls.values())))
        key = tuple((name, d.exploration, d.rate, d.arms) for name, d in decls.items())
        current = self._running.get(live.name)
        if current is not None and current[0] == key:
            return
        if current is not None:
            current[1].set()
        if not decls:
            self._running.pop(live.name, None)
            return
        stop = asyncio.Event()
        task = asyncio.get_running_loop().create_task(
            self._run(live.name, decls, stop), name=f"learners-{live.name}"
        )
        self._running[live.name] = (key, stop, task)

    def _attribute(self, types: set[str], rewards: bool) -> None:
        """Publish the tracked event types; start the attributor once a bandit rewards on one."""
        if not types:
            return
        loop = asyncio.get_running_loop()
        task = loop.create_task(self._publish_types(types), name="outcome-types")
        self._side_tasks.add(task)
        task.add_done_callback(self._side_tasks.discard)
        if not rewards or self.attributor is None or self._attributing is not None:
            return
        stop = asyncio.Event()
        run = loop.create_task(self.attributor.run_forever(stop), name="attributor")
        self._attributing = (stop, run)

    async def _publish_types(self, types: set[str]) -> None:
        try:
            await publish_outcome_types(self.redis, types)
        except Exception as exc:  # ingesters without the rules miss them until the next activation
            log.warning("cannot publish outcome event types: %s", exc)

    async def _run(self, name: str, decls: Any, stop: asyncio.Event) -> None:
        try:
            await run_learners(self.redis, name, decls, stop, config=self.config)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("learners of ruleset %s stopped", name)

    async def close(self) -> None:
        """Stop every learner and the attributor (learners publish and release their
        leases) and wait for them, in bounded time.

        Each gets `stop_timeout` seconds to stop on its own, then is cancelled, again
        and again for up to `cancel_timeout` seconds: one cancellation is not always
        enough (a task cancelled while its `finally` publishes to a Redis that does not
        answer, or one whose cancellation an `asyncio.wait_for` swallowed, CPython
        gh-86296, keeps running). Whatever still runs then is logged and abandoned,
        rather than hanging the server's shutdown.
        """
        tasks = {
            task: f"learners of ruleset {name}" for name, (_, _, task) in self._running.items()
        }
        for _, stop, _ in self._running.values():
            stop.set()
        if self._attributing is not None:
            stop, task = self._attributing
            stop.set()
            tasks[task] = "reward attributor"
        self._running.clear()
        self._attributing = None
        pending = await _stopped(tasks, self.stop_timeout, self.cancel_timeout)
        for task in pending:
            log.error(
                "%s did not stop within %g s nor %g s of cancellations; abandoned",
                tasks[task],
                self.stop_timeout,
                self.cancel_timeout,
            )


async def _stopped(
    tasks: Mapping[asyncio.Task[None], str], stop_timeout: float, cancel_timeout: float
) -> set[asyncio.Task[None]]:
    """Wait for `tasks` to end, cancelling the late ones repeatedly; the ones left running."""
    loop = asyncio.get_running_loop()
    # asyncio.wait neither cancels nor waits past its timeout (wait_for, on 3.11, waits
    # for the cancelled task to end, however long that takes).
    pending = {task for task in tasks if not task.done()}
    if pending:
        _, pending = await asyncio.wait(pending, timeout=stop_timeout)
    deadline = loop.time() + cancel_timeout
    while pending and loop.time() < deadline:
        for task in pending:
            task.cancel()
        wait = min(CANCEL_INTERVAL_S, max(0.0, deadline - loop.time()))
        _, pending = await asyncio.wait(pending, timeout=wait)
    for task in tasks:
        if task.done() and not task.cancelled() and task.exception() is not None:
            log.warning("%s ended with an error: %r", tasks[task], task.exception())
    return pending


def attributor_for(settings: Any, redis: Any) -> Attributor:
    """The reward attributor a server runs, configured from its settings."""
    return Attributor(
        redis,
        grace=settings.attribution_grace_ms / 1000,
        marker_ttl=settings.decision_ttl_s,
        reward_maxlen=settings.decision_stream_maxlen,
        poll_interval=min(0.1, settings.reload_interval_ms / 1000),
    )

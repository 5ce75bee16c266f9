"""In-process learners: one set per live ruleset with bandits, restarted when they change.

Every worker runs them; the learners' Redis lease keeps exactly one active per
bandit across all workers and machines (see engine.learning.learner).
"""

from __future__ import annotations

import asyncio
import logging
from contextlib import suppress
from typing import Any

from arbiter.engine.learning.learner import LearnerConfig, run_learners
from arbiter.server.rulesets import LiveRuleset

log = logging.getLogger("arbiter.learning")


class LearnerSupervisor:
    """Starts, restarts and stops `run_learners` tasks as rulesets are activated."""

    def __init__(self, redis: Any, config: LearnerConfig | None = None) -> None:
        self.redis = redis
        self.config = config
        self._running: dict[str, tuple[Any, asyncio.Event, asyncio.Task[None]]] = {}

    def activated(self, live: LiveRuleset) -> None:
        """Called on every activation; (re)starts learners if the bandit declarations changed."""
        decls = live.plan.checked.bandits
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

    async def _run(self, name: str, decls: Any, stop: asyncio.Event) -> None:
        try:
            await run_learners(self.redis, name, decls, stop, config=self.config)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("learners of ruleset %s stopped", name)

    async def close(self) -> None:
        """Stop every learner (they release their leases) and wait for them."""
        for _, stop, _ in self._running.values():
            stop.set()
        for _, _, task in self._running.values():
            with suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(task, timeout=5)
        self._running.clear()

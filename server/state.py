"""Resources one server process holds for its lifetime, created in the lifespan."""

from __future__ import annotations

import asyncio
import gc
import os
import time
from dataclasses import dataclass, field
from typing import Any

from arbiter.engine.log.writer import DecisionLog
from arbiter.engine.store.embedded import EmbeddedRedis
from arbiter.engine.store.profiles import ProfileStore
from arbiter.server.rulesets import RulesetManager
from arbiter.server.security.access import AccessLog
from arbiter.server.security.auth import KeyRing
from arbiter.server.security.cors import CorsPolicy
from arbiter.server.security.ratelimit import RateLimiter
from arbiter.server.settings import Settings
from arbiter.server.telemetry.metrics import Metrics

#: How long an admin call, or a feedback, may wait on Redis (the decisions wait far less:
#: `Settings.redis_timeout_ms`).
ADMIN_TIMEOUT_S = 5.0


@dataclass
class AppState:
    """Everything the routes use; reached through `request.app.state.arbiter`."""

    settings: Settings
    redis: Any  # hot-path client: short timeouts
    admin_redis: Any  # admin and background client: longer timeouts
    log_redis: Any  # decision-log writer: bounded per batch
    store: ProfileStore
    admin_store: ProfileStore
    log: DecisionLog
    rulesets: RulesetManager
    keys: KeyRing
    metrics: Metrics
    cors: CorsPolicy
    limiter: RateLimiter
    access_log: AccessLog
    embedded: EmbeddedRedis | None = None
    learners: Any = None  # server.background.learning.LearnerSupervisor, when learning in-process
    intake: Any = None  # engine.intake.consumer.IntakeConsumer, when consuming in-process
    triggers: Any = None  # engine.triggers.runner.TriggerRunner of this worker
    tasks: list[asyncio.Task[Any]] = field(default_factory=list)
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    redis_ok: bool = True

    def gauges(self) -> dict[str, float]:
        """The state-valued metrics (`server.telemetry.metrics.STATE_METRICS`), read at scrape time."""
        return {
            "arbiter_decision_log_queue_depth": len(self.log.pending),
            "arbiter_decision_log_dropped": self.log.dropped,
            "arbiter_decision_log_file_failures": self.log.file_failures,
            "arbiter_decision_log_written": self.log.written,
            "arbiter_decision_log_failures": self.log.failures,
            "arbiter_ratelimit_unavailable": self.limiter.unavailable,
            "arbiter_ruleset_reloads": self.rulesets.reloads,
            "arbiter_ruleset_load_failures": self.rulesets.load_failures,
            "arbiter_model_load_failures": self.rulesets.model_failures,
            "arbiter_gc_frozen_objects": gc.get_freeze_count(),
        }

    def clock(self) -> float:
        """Wall-clock seconds; the one place a decision's time comes from."""
        return time.time()


def new_decision_id(now: float) -> str:
    """Time-ordered, unguessable: 48-bit milliseconds then 80 random bits, as hex."""
    return f"{int(now * 1000):012x}{os.urandom(10).hex()}"


def decision_time(decision_id: str) -> float | None:
    """When a decision id says it was made (seconds), or None if it is not one of ours."""
    if len(decision_id) != 32:
        return None
    try:
        return int(decision_id[:12], 16) / 1000
    except ValueError:
        return None

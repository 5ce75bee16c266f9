"""The FastAPI application: `create_app(settings)`.

Resources (Redis clients, the embedded Redis, rulesets, the decision log, the
learner) live in the lifespan, never in module globals, so tests can build
many apps in one process with `with TestClient(create_app(...))`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager, suppress
from functools import partial
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from starlette.routing import Route

from arbiter.engine.learning.bandit_store import BanditRegistry
from arbiter.engine.learning.learner import LearnerConfig
from arbiter.engine.log.files import RotatingFiles
from arbiter.engine.log.writer import DecisionLog
from arbiter.engine.plan import Plan
from arbiter.engine.store.client import connect
from arbiter.engine.store.compression import RecordCompressor
from arbiter.engine.store.embedded import EmbeddedRedis
from arbiter.engine.store.profiles import ProfileStore
from arbiter.server import errors, gc_pauses, openapi
from arbiter.server.background.intake import start_intake
from arbiter.server.background.keys import start_key_store_watch
from arbiter.server.background.learning import LearnerSupervisor, attributor_for
from arbiter.server.background.triggers import start_trigger_runner
from arbiter.server.fast_path import decide_asgi, feedback_asgi
from arbiter.server.routes.admin import router as admin_router
from arbiter.server.routes.decide import decide_endpoint
from arbiter.server.routes.experiments import router as experiments_router
from arbiter.server.routes.feedback import feedback_endpoint
from arbiter.server.routes.identity import router as identity_router
from arbiter.server.routes.keys import router as keys_router
from arbiter.server.rulesets import LiveRuleset, Resources, RulesetManager
from arbiter.server.security import edge
from arbiter.server.security.access import AccessLog
from arbiter.server.security.cors import CorsPolicy
from arbiter.server.security.ratelimit import RateLimiter
from arbiter.server.settings import Settings
from arbiter.server.state import ADMIN_TIMEOUT_S, AppState
from arbiter.server.studio.routes import mount as mount_studio
from arbiter.server.studio.routes import router as studio_router
from arbiter.server.telemetry.metrics import Metrics

log = logging.getLogger("arbiter.server")


def default_resources(plan: Plan, base_dir: Path) -> Mapping[str, Any]:
    """Load a plan's ONNX models (raises RulesError at the declaration on a mismatch)."""
    from arbiter.engine.scoring.loading import load_models

    return {"models": load_models(plan, base_dir)}


class ArbiterApp(FastAPI):
    """FastAPI, with `POST /v1/decide` and `POST /v1/feedback` answered before the
    middleware stack (see fast_path)."""

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        state = getattr(self.state, "arbiter", None)
        if scope["type"] != "http" or state is None:
            await super().__call__(scope, receive, send)
            return
        inner = super().__call__
        if scope["path"] == "/v1/decide" and scope["method"] == "POST":
            inner = partial(decide_asgi, state)
        elif scope["path"] == "/v1/feedback" and scope["method"] == "POST":
            inner = partial(feedback_asgi, state)
        await edge.handle(state, self.router.routes, scope, receive, send, inner)


def create_app(settings: Settings | None = None, resources: Resources | None = None) -> FastAPI:
    """Build the app. Settings default to the environment; resources to ONNX model loading."""
    settings = settings or Settings.from_env()
    resources = resources or default_resources

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        state = await _start(settings, resources)
        app.state.arbiter = state
        pauses = gc_pauses.PauseWatch(
            lambda generation, seconds: state.metrics.gc_pause_of[generation].observe(seconds)
        )
        pauses.install()
        if settings.gc_tuning:
            gc_pauses.tune()
        try:
            yield
        finally:
            pauses.remove()
            await _stop(state)

    app = ArbiterApp(
        title="Arbiter",
        version="0.1.0",
        description="Real-time next-best-action decisions from .rules files.",
        lifespan=lifespan,
    )
    errors.install(app)
    # The hot path goes first and skips FastAPI's per-request machinery.
    app.router.routes.append(Route("/v1/decide", decide_endpoint, methods=["POST"]))
    app.router.routes.append(Route("/v1/feedback", feedback_endpoint, methods=["POST"]))
    app.include_router(admin_router)
    app.include_router(identity_router)
    app.include_router(keys_router)
    app.include_router(experiments_router)
    app.include_router(studio_router)
    mount_studio(app)
    openapi.install(app)
    return app


def decision_log_files(settings: Settings) -> RotatingFiles | None:
    """The rotating decision log files the settings ask for, if any."""
    if settings.decision_log_dir is None:
        return None
    return RotatingFiles(
        settings.decision_log_dir,
        max_bytes=settings.decision_log_rotate_mb * 1024 * 1024,
        max_seconds=settings.decision_log_rotate_s,
        gzip=settings.decision_log_gzip,
    )


async def _start(settings: Settings, resources: Resources) -> AppState:
    embedded = None
    url = settings.redis_url
    if url is None:
        embedded = EmbeddedRedis.attach_or_start(Path(settings.data_dir) / "redis")
        url = embedded.url
    deadline = settings.redis_timeout_ms / 1000
    # The hot-path and log clients have no per-reply socket timeout: the decision's read
    # is bounded as a whole batch (engine.store.batcher) and log writes per batch, which costs one
    # timer per batch instead of one per reply.
    redis = connect(url, socket_timeout=None, connect_timeout=deadline)
    admin_redis = connect(url, socket_timeout=ADMIN_TIMEOUT_S)
    log_redis = connect(url, socket_timeout=None, connect_timeout=ADMIN_TIMEOUT_S)
    store = ProfileStore(redis, read_deadline_s=deadline)
    admin_store = ProfileStore(admin_redis)
    decision_log = DecisionLog(
        log_redis,
        ProfileStore(log_redis),
        ttl_seconds=settings.decision_ttl_s,
        stream_maxlen=settings.decision_stream_maxlen,
        queue_max=settings.log_queue_max,
        file_path=settings.decision_log_file,
        files=decision_log_files(settings),
        records=settings.decision_log == "on",
        compression=RecordCompressor(enabled=settings.decision_log_compression == "zstd"),
    )
    registry = BanditRegistry(admin_redis, check_interval_ms=settings.reload_interval_ms)
    # Publishing more often than workers poll for new versions is wasted work;
    # less often only adds lag between a reward and the model that uses it.
    reload_s = settings.reload_interval_ms / 1000
    learner_config = LearnerConfig(publish_interval=reload_s, poll_interval=min(0.1, reload_s))
    learners = (
        LearnerSupervisor(
            admin_redis, learner_config, attributor=attributor_for(settings, admin_redis)
        )
        if settings.learner == "inproc"
        else None
    )

    def activated(live: LiveRuleset) -> None:
        if learners is not None:
            learners.activated(live)
        if settings.gc_tuning and gc_pauses.frozen():
            # After the activation returns: the old version's cycles are garbage by then.
            asyncio.get_running_loop().call_soon(gc_pauses.refreeze)

    rulesets = RulesetManager(
        admin_redis,
        Path(settings.rules_path),
        resources,
        bandits=registry,
        on_activate=activated,
    )
    await rulesets.start(settings.default_ruleset)
    state = AppState(
        settings=settings,
        redis=redis,
        admin_redis=admin_redis,
        log_redis=log_redis,
        store=store,
        admin_store=admin_store,
        log=decision_log,
        rulesets=rulesets,
        keys=settings.key_ring(),
        metrics=Metrics(),
        cors=CorsPolicy.parse(settings.cors_origins),
        limiter=RateLimiter(redis, deadline),
        access_log=AccessLog(settings.access_log_sample),
        embedded=embedded,
        learners=learners,
    )
    state.metrics.watch(state.gauges)
    decision_log.start()
    state.tasks.append(start_trigger_runner(state))
    state.tasks.append(
        asyncio.get_running_loop().create_task(registry.watch(state.stop), name="bandit-watch")
    )
    state.tasks.append(
        asyncio.get_running_loop().create_task(
            rulesets.watch(settings.reload_interval_ms / 1000, state.stop), name="ruleset-watch"
        )
    )
    if state.metrics.mirror is not None:  # serve --workers N: keep this worker's share current
        state.tasks.append(
            asyncio.get_running_loop().create_task(
                state.metrics.mirror.run(reload_s, state.stop), name="metrics-mirror"
            )
        )
    if settings.keys_redis:
        state.tasks.append(await start_key_store_watch(state))
    intake = start_intake(state)
    if intake is not None:
        state.tasks.append(intake)
    return state


async def _stop(state: AppState) -> None:
    state.stop.set()
    if state.learners is not None:
        await state.learners.close()
    if state.tasks:
        # Tasks that watch `stop` end between Redis commands; cancel only the stragglers.
        await asyncio.wait(state.tasks, timeout=1.0)
    for task in state.tasks:
        task.cancel()
        with suppress(asyncio.CancelledError, Exception):
            await task
    await state.log.close()
    await state.redis.aclose()
    await state.admin_redis.aclose()
    await state.log_redis.aclose()
    if state.embedded is not None:
        state.embedded.stop()

"""The server's trigger runner (engine.triggers): every worker runs one; claims split the work."""

from __future__ import annotations

import asyncio

from arbiter.engine.triggers.runner import TriggerRunner
from arbiter.engine.triggers.webhook import WebhookDelivery
from arbiter.server.state import AppState


def start_trigger_runner(state: AppState) -> asyncio.Task[None]:
    """Run a `TriggerRunner` over the live rulesets until ``state.stop`` is set (and,
    with ``ARBITER_TRIGGER_WEBHOOK_URL``, a `WebhookDelivery` beside it)."""
    runner = TriggerRunner(
        state.admin_redis,
        state.admin_store,
        state.log,
        state.rulesets.live.get,
        marker_ttl=state.settings.decision_ttl_s,
        stream_maxlen=state.settings.decision_stream_maxlen,
        poll_interval=min(0.1, state.settings.reload_interval_ms / 1000),
        clock=state.clock,
        shards=state.settings.trigger_shards,
        active=lambda: any(live.plan.checked.triggers for live in state.rulesets.live.values()),
    )
    state.triggers = runner
    settings = state.settings
    if settings.trigger_webhook_url and settings.trigger_webhook_secret:
        hook = WebhookDelivery(
            state.admin_redis, settings.trigger_webhook_url, settings.trigger_webhook_secret
        )
        return asyncio.get_running_loop().create_task(
            _both(runner, hook, state.stop), name="triggers"
        )
    return asyncio.get_running_loop().create_task(runner.run_forever(state.stop), name="triggers")


async def _both(runner: TriggerRunner, hook: WebhookDelivery, stop: asyncio.Event) -> None:
    await asyncio.gather(runner.run_forever(stop), hook.run_forever(stop))

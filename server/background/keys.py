"""The Redis key store inside the server: read at start, then watched each reload interval."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from arbiter.server.security.keystore import refresh, watch_key_store
from arbiter.server.state import AppState


async def start_key_store_watch(st: AppState) -> asyncio.Task[Any]:
    """Read the store's keys now (so they work from the first request), then watch it."""
    try:
        await refresh(st.keys, st.admin_redis)
    except Exception:  # Redis down at start: serve the other keys; the watcher retries
        logging.getLogger("arbiter.server").warning(
            "key store: not read at start (Redis did not answer); retried every interval",
            exc_info=True,
        )
    interval = st.settings.reload_interval_ms / 1000
    return asyncio.get_running_loop().create_task(
        watch_key_store(st.keys, st.admin_redis, interval, st.stop), name="key-store-watch"
    )

"""Webhook delivery of triggered decisions, next to the outbound stream.

:class:`WebhookDelivery` reads ``keys.TRIGGER_STREAM`` through its own
consumer group (``webhook``; every worker may run one, each entry goes to
one of them) and POSTs each entry as JSON to the configured URL, signed:

    X-Arbiter-Signature: sha256=<hex HMAC-SHA256 of the body with the secret>
    X-Arbiter-Delivery: <stream entry id>   (the same on every retry: de-duplicate on it)

A 2xx answer acknowledges the entry. Anything else (an error status, a
timeout, a refused connection) leaves it pending; it is tried again after
``retry_ms``, doubling to at most ``max_retry_ms``, and after
``max_attempts`` it is moved to ``keys.TRIGGER_DEAD`` (dead letters) and
acknowledged. Delivery is at least once: a receiver that answered 2xx but
whose answer was lost gets the entry again, with the same delivery id.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import logging
import os
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from redis.exceptions import RedisError

from arbiter.engine.learning.reward_stream import RewardGroup
from arbiter.engine.store import keys

__all__ = ["WebhookDelivery", "WebhookStats", "sign"]

log = logging.getLogger(__name__)
GROUP = "webhook"


def sign(secret: bytes, body: bytes) -> str:
    """The ``X-Arbiter-Signature`` value of ``body``."""
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


@dataclass(slots=True)
class WebhookStats:
    delivered: int = 0
    failed_attempts: int = 0
    dead: int = 0


class WebhookDelivery:
    """POSTs triggered decisions to ``url``; see the module docstring."""

    def __init__(
        self,
        redis: Any,
        url: str,
        secret: str,
        *,
        timeout: float = 5.0,
        retry_ms: int = 1000,
        max_retry_ms: int = 60_000,
        max_attempts: int = 10,
        batch: int = 50,
        poll_interval: float = 0.1,
    ) -> None:
        """A delivery worker; it does no I/O until run."""
        self.redis = redis
        self.url = url
        self.secret = secret.encode()
        self.timeout = timeout
        self.retry_ms = retry_ms
        self.max_retry_ms = max_retry_ms
        self.max_attempts = max_attempts
        self.poll_interval = poll_interval
        self.stats = WebhookStats()
        consumer = f"{socket.gethostname()}:{os.getpid()}:{os.urandom(4).hex()}"
        # Claiming entries idle for retry_ms is the retry: a failed entry stays pending.
        self._group = RewardGroup(
            redis,
            GROUP,
            consumer,
            batch=batch,
            claim_idle_ms=retry_ms,
            claim_every=retry_ms / 1000.0,
            stream=keys.TRIGGER_STREAM,
        )
        self._attempts: dict[bytes, int] = {}
        self._not_before: dict[bytes, float] = {}
        self._created = False

    async def deliver_once(self) -> int:
        """Try every entry read or claimed now; how many were tried."""
        if not self._created:
            await self._group.create()
            self._created = True
        entries = await self._group.read(())
        now = time.monotonic()
        tried = 0
        for entry_id, fields in entries:
            if fields is None:  # trimmed from the stream while pending
                await self.redis.xack(keys.TRIGGER_STREAM, GROUP, entry_id)
                continue
            if self._not_before.get(entry_id, 0.0) > now:
                continue  # backing off: claimed again later
            tried += 1
            await self._try(entry_id, fields)
        return tried

    async def _try(self, entry_id: bytes, fields: Mapping[bytes, bytes]) -> None:
        payload = {k.decode(): v.decode() for k, v in fields.items()}
        payload["actions"] = json.loads(payload.get("actions", "[]"))
        body = json.dumps(payload, separators=(",", ":")).encode()
        delivery = entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)
        ok = await asyncio.to_thread(self._post, body, delivery)
        if ok:
            self.stats.delivered += 1
            self._forget(entry_id)
            await self.redis.xack(keys.TRIGGER_STREAM, GROUP, entry_id)
            return
        self.stats.failed_attempts += 1
        attempts = self._attempts.get(entry_id, 0) + 1
        self._attempts[entry_id] = attempts
        if attempts >= self.max_attempts:
            self.stats.dead += 1
            self._forget(entry_id)
            log.warning("webhook: giving up on %s after %d attempts", delivery, attempts)
            await self.redis.xadd(keys.TRIGGER_DEAD, dict(fields), maxlen=100_000, approximate=True)
            await self.redis.xack(keys.TRIGGER_STREAM, GROUP, entry_id)
            return
        backoff = min(self.retry_ms * 2 ** (attempts - 1), self.max_retry_ms) / 1000.0
        self._not_before[entry_id] = time.monotonic() + backoff

    def _forget(self, entry_id: bytes) -> None:
        self._attempts.pop(entry_id, None)
        self._not_before.pop(entry_id, None)

    def _post(self, body: bytes, delivery: str) -> bool:
        request = urllib.request.Request(
            self.url,
            data=body,
            method="POST",
            headers={
                "content-type": "application/json",
                "x-arbiter-signature": sign(self.secret, body),
                "x-arbiter-delivery": delivery,
            },
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as resp:
                return 200 <= int(resp.status) < 300
        except (urllib.error.URLError, OSError, ValueError) as exc:
            log.info("webhook %s: %s", delivery, exc)
            return False

    async def run_forever(self, stop: asyncio.Event) -> None:
        """Deliver until ``stop`` is set; Redis errors are logged and retried."""
        while not stop.is_set():
            tried = 0
            try:
                tried = await self.deliver_once()
            except (RedisError, OSError) as exc:
                log.warning("webhook delivery: %s", exc)
            if tried:
                continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=self.poll_interval)

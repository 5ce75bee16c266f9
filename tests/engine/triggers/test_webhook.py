"""engine.triggers.webhook against a real HTTP server on 127.0.0.1: signed, retried, once."""

from __future__ import annotations

import asyncio
import hmac
import json
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from support.redis import run_with_client as run

from arbiter.engine.store import keys
from arbiter.engine.store.client import AsyncRedisClient
from arbiter.engine.triggers.webhook import WebhookDelivery, sign

SECRET = "s3cret"


class Receiver:
    """Answers 500 to the first ``fail_first`` requests, then 204; records every request."""

    def __init__(self, fail_first: int) -> None:
        self.fail_first = fail_first
        self.requests: list[tuple[dict[str, str], bytes]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["content-length"]))
                receiver.requests.append(({k.lower(): v for k, v in self.headers.items()}, body))
                self.send_response(500 if len(receiver.requests) <= receiver.fail_first else 204)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver(fail_first=2)
    r.thread.start()
    try:
        yield r
    finally:
        r.server.shutdown()
        r.server.server_close()


async def _publish(redis: AsyncRedisClient) -> bytes:
    entry_id: bytes = await redis.xadd(
        keys.TRIGGER_STREAM,
        {
            "decision_id": "t1",
            "trigger": "cart_recovery",
            "customer_id": "c1",
            "channel": "email",
            "actions": json.dumps([{"action": "cart_reminder", "payload": {"code": "X"}}]),
        },
    )
    return entry_id


def test_a_failed_delivery_is_retried_and_signed(redis_url: str, receiver: Receiver) -> None:
    async def body(redis: AsyncRedisClient) -> None:
        entry_id = await _publish(redis)
        hook = WebhookDelivery(redis, receiver.url, SECRET, retry_ms=50, max_retry_ms=50)
        for _ in range(200):
            await hook.deliver_once()
            if hook.stats.delivered:
                break
            await asyncio.sleep(0.02)
        assert (hook.stats.delivered, hook.stats.failed_attempts) == (1, 2)
        assert len(receiver.requests) == 3
        ids = {h["x-arbiter-delivery"] for h, _ in receiver.requests}
        assert ids == {entry_id.decode()}  # the same delivery id on every retry
        headers, raw = receiver.requests[-1]
        assert hmac.compare_digest(headers["x-arbiter-signature"], sign(SECRET.encode(), raw))
        payload = json.loads(raw)
        assert payload["actions"] == [{"action": "cart_reminder", "payload": {"code": "X"}}]
        assert payload["customer_id"] == "c1"
        info = await redis.xpending(keys.TRIGGER_STREAM, "webhook")
        assert info["pending"] == 0
        await hook.deliver_once()
        assert len(receiver.requests) == 3  # delivered once

    run(redis_url, body)


def test_an_undeliverable_entry_goes_to_the_dead_letters(redis_url: str) -> None:
    async def body(redis: AsyncRedisClient) -> None:
        with socket.socket() as s:  # a port nothing listens on
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        await _publish(redis)
        hook = WebhookDelivery(
            redis, f"http://127.0.0.1:{port}/", SECRET, retry_ms=20, max_retry_ms=20, max_attempts=3
        )
        for _ in range(200):
            await hook.deliver_once()
            if hook.stats.dead:
                break
            await asyncio.sleep(0.02)
        assert (hook.stats.dead, hook.stats.failed_attempts) == (1, 3)
        assert await redis.xlen(keys.TRIGGER_DEAD) == 1
        assert (await redis.xpending(keys.TRIGGER_STREAM, "webhook"))["pending"] == 0

    run(redis_url, body)

"""What the edge layer (CORS, body limit, metrics, access log) adds to one decision, in process.

Alternates 7 times between calling decide's fast path directly and calling
the app (edge, then the same fast path) for 1,000 decisions on real Redis;
prints the best µs per decision of each, so that load from other processes
inflates neither side more than the other.

    python -m benchmarks.edge_overhead
"""

from __future__ import annotations

import asyncio
import json
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from arbiter.engine.store.embedded import EmbeddedRedis
from arbiter.server.app import create_app
from arbiter.server.fast_path import decide_asgi
from arbiter.server.settings import Settings


async def measure(url: str, data_dir: str) -> dict[str, float]:
    settings = Settings(
        redis_url=url,
        admin_key="bench",
        rules_path="tests/cases/server/shop.rules",
        data_dir=data_dir,
        access_log_sample=0.0,
    )
    app = create_app(settings)
    body = json.dumps({"customer_id": "c1", "context": {"channel": "web"}}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]

    def scope() -> dict[str, Any]:
        return {"type": "http", "method": "POST", "path": "/v1/decide", "headers": headers,
                "client": ("127.0.0.1", 1), "query_string": b"", "root_path": ""}  # fmt: skip

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: Any) -> None:
        pass

    best: dict[str, float] = {}
    async with app.router.lifespan_context(app):
        state = app.state.arbiter
        ways: list[tuple[str, Callable[[dict[str, Any]], Awaitable[None]]]] = [
            ("fast path alone", lambda sc: decide_asgi(state, sc, receive, send)),
            ("edge + fast path", lambda sc: app(sc, receive, send)),
        ]
        for name, call in ways * 7:
            for _ in range(100):
                await call(scope())
            n = 1000
            t0 = time.perf_counter()
            for _ in range(n):
                await call(scope())
            best[name] = min(best.get(name, 1e9), (time.perf_counter() - t0) / n * 1e6)
    return best


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp, EmbeddedRedis(Path(tmp) / "redis") as redis:
        best = asyncio.run(measure(redis.url, str(Path(tmp) / "data")))
    for name, us in best.items():
        print(f"{name}: {us:.1f} µs/decision (best of 7 x 1,000)")
    print(f"edge / fast path: {best['edge + fast path'] / best['fast path alone']:.3f}")


if __name__ == "__main__":
    main()

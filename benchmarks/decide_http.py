"""`/v1/decide` over HTTP on 127.0.0.1, next to a bare FastAPI echo on the same machine.

Prints, in one run: latency of 2,000 sequential decisions (median, p99) on one
keep-alive connection, the same for the FastAPI echo, and, when `wrk` is
installed, throughput of both under 32 concurrent connections, with ratios.

    python -m benchmarks.decide_http [--rules FILE] [--requests 2000] [--seconds 5]
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from arbiter.engine.store.embedded import EmbeddedRedis
from benchmarks._harness import (
    Client,
    arbiter_argv,
    echo_argv,
    free_port,
    server,
    summary,
    timed_loop,
    wrk,
)

ADMIN = {"Authorization": "Bearer bench-admin"}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rules", default="tests/cases/server/shop.rules")
    ap.add_argument("--requests", type=int, default=2000)
    ap.add_argument("--seconds", type=int, default=5)
    ap.add_argument("--customers", type=int, default=200)
    args = ap.parse_args()

    bodies = [
        json.dumps({"customer_id": f"c{i}", "context": {"channel": "web"}}).encode()
        for i in range(args.customers)
    ]
    results: dict[str, object] = {}
    with tempfile.TemporaryDirectory() as tmp, EmbeddedRedis(Path(tmp) / "redis") as redis:
        port = free_port()
        env = {
            "ARBITER_REDIS_URL": redis.url,
            "ARBITER_ADMIN_KEY": "bench-admin",
            "ARBITER_DATA_DIR": str(Path(tmp) / "data"),
        }
        with server(arbiter_argv(args.rules, port), port, env):
            client = Client(port, ADMIN)
            for i in range(args.customers):
                client.call(
                    "PUT",
                    f"/v1/profiles/c{i}",
                    {"visits": i % 5, "lifetime_value": i * 20.0, "orders_90d": i % 6},
                )
            timed_loop(client, "/v1/decide", bodies, 200)  # warm up
            results["decide"] = summary(timed_loop(client, "/v1/decide", bodies, args.requests))
            results["decide_rps"] = wrk(port, "/v1/decide", bodies[0], args.seconds)
        port = free_port()
        with server(echo_argv(port), port, {}):
            client = Client(port)
            timed_loop(client, "/echo", bodies, 200)
            results["echo"] = summary(timed_loop(client, "/echo", bodies, args.requests))
            results["echo_rps"] = wrk(port, "/echo", bodies[0], args.seconds)

    d, e = results["decide"], results["echo"]
    assert isinstance(d, dict) and isinstance(e, dict)
    print(f"{'':28}{'median ms':>10}{'p99 ms':>10}{'req/s (wrk)':>14}")
    for name, key in (("POST /v1/decide (arbiter)", "decide"), ("FastAPI pydantic echo", "echo")):
        s = results[key]
        assert isinstance(s, dict)
        rps = results[f"{key}_rps"]
        rps_text = f"{rps:,.0f}" if isinstance(rps, float) else "n/a"
        print(f"{name:28}{s['median_ms']:>10.3f}{s['p99_ms']:>10.3f}{rps_text:>14}")
    print(f"latency ratio decide/echo (median): {d['median_ms'] / e['median_ms']:.2f}")
    if isinstance(results["decide_rps"], float) and isinstance(results["echo_rps"], float):
        print(f"throughput ratio decide/echo: {results['decide_rps'] / results['echo_rps']:.2f}")


if __name__ == "__main__":
    main()

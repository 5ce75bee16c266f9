"""What a studio session costs the decisions served next to it, and how fast it answers.

Prints, in one run against one `arbiter serve` of `rulesets/retail.rules` on
127.0.0.1: the latency of `POST /v1/check` (the studio's check-as-you-type)
and `POST /v1/studio/try`, then the latency of sequential `/v1/decide` calls
alone and while another client posts `/v1/check` back to back (a marketer
typing without pause), with the ratio of the two. Bounded in count.

    python -m benchmarks.studio_check [--requests 1000] [--checks 20]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import threading
from pathlib import Path

from arbiter.engine.store.embedded import EmbeddedRedis
from benchmarks._harness import ROOT, Client, arbiter_argv, free_port, server, summary, timed_loop

ADMIN = {"Authorization": "Bearer bench-admin"}
RULES = "rulesets/retail.rules"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=1000)
    ap.add_argument("--checks", type=int, default=20)
    args = ap.parse_args()
    text = (ROOT / RULES).read_text(encoding="utf-8")
    # Every check a different text, as keystrokes make them (the checker's worker
    # remembers declarations it has parsed: the same text again would cost nothing).
    checks_ = [
        json.dumps({"text": text.replace("> 1000", f"> {1000 + i}")}).encode()
        for i in range(1, 20 * args.requests + 1)
    ]
    try_body = json.dumps(
        {"text": text, "profile": {"visits_30d": 1}, "context": {"channel": "web"}}
    ).encode()
    context = {"channel": "web", "page": "/account", "device": "mobile"}
    bodies = [json.dumps({"customer_id": f"c{i}", "context": context}).encode() for i in range(200)]
    with tempfile.TemporaryDirectory() as tmp, EmbeddedRedis(Path(tmp) / "redis") as redis:
        port = free_port()
        env = {
            "ARBITER_REDIS_URL": redis.url,
            "ARBITER_ADMIN_KEY": "bench-admin",
            "ARBITER_DATA_DIR": str(Path(tmp) / "data"),
            "ARBITER_LEARNER": "off",
        }
        with server(arbiter_argv(RULES, port), port, env):
            client = Client(port, ADMIN)
            for i in range(200):
                client.call("PUT", f"/v1/profiles/c{i}", {"visits_30d": i % 5, "orders_90d": i % 4})
            timed_loop(client, "/v1/check", checks_[-3:], 3)  # warm up (grammar, models)
            timed_loop(client, "/v1/studio/try", [try_body], 3)
            checks = summary(timed_loop(client, "/v1/check", checks_, args.checks))
            tries = summary(timed_loop(client, "/v1/studio/try", [try_body], args.checks))
            timed_loop(client, "/v1/decide", bodies, 200)
            alone = summary(timed_loop(client, "/v1/decide", bodies, args.requests))
            stop = threading.Event()
            done = [0]

            def type_without_pause() -> None:
                studio = Client(port, ADMIN)
                while not stop.is_set() and done[0] < 10 * args.requests:
                    studio.call("POST", "/v1/check", checks_[args.checks + done[0]])
                    done[0] += 1

            typist = threading.Thread(target=type_without_pause)
            typist.start()
            try:
                busy = summary(timed_loop(client, "/v1/decide", bodies, args.requests))
            finally:
                stop.set()
                typist.join()
    print(f"{'':44}{'median ms':>10}{'p99 ms':>10}")
    rows = [
        ("POST /v1/check (retail.rules, keystrokes)", checks),
        ("POST /v1/studio/try (sample customer)", tries),
        ("POST /v1/decide, alone", alone),
        (f"POST /v1/decide, while /v1/check runs ({done[0]})", busy),
    ]
    for name, s in rows:
        print(f"{name:44}{s['median_ms']:>10.2f}{s['p99_ms']:>10.2f}")
    print(
        f"decide while checking / alone: median {busy['median_ms'] / alone['median_ms']:.2f}x, "
        f"p99 {busy['p99_ms'] / alone['p99_ms']:.2f}x"
    )


if __name__ == "__main__":
    main()

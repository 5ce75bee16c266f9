"""Throughput of the Redis Streams intake: `arbiter consume` processes, 1 then 2, side by side.

In one run: `--events` events (70% add-to-cart, 30% purchases with an
amount, 500 customers) are produced to `--shards` intake streams on a real
Redis on 127.0.0.1 (embedded; `--cluster` for a 3-master Redis Cluster),
then consumed by 1 `arbiter consume` process, timed from its start until
every shard is drained (nothing unread, nothing pending); Redis is emptied
and the same is done with 2 processes. Prints events/s for each and the ratio.

    python -m benchmarks.intake_throughput [--events 50000] [--shards 4] [--cluster]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from typing import Any

from arbiter.engine.intake.redis_streams import EVENT, RedisStreamSource, wait_drained
from arbiter.engine.store.client import connect, connect_sync
from arbiter.engine.store.embedded import EmbeddedRedis
from benchmarks._harness import ROOT

RULES = str(ROOT / "tests" / "cases" / "server" / "shop.rules")


def messages(n: int) -> list[tuple[str, bytes, bytes]]:
    rng = random.Random(7)
    now = time.time()
    out = []
    for _ in range(n):
        customer = f"c{rng.randrange(500)}"
        body: dict[str, Any] = {"customer_id": customer, "ts": now - rng.uniform(0, 20 * 86400)}
        if rng.random() < 0.3:
            body.update(type="purchase", properties={"amount": rng.randrange(1, 200)})
        else:
            body["type"] = "add_to_cart"
        out.append((customer, EVENT, json.dumps(body).encode()))
    return out


async def produce(url: str, shards: int, batch: list[tuple[str, bytes, bytes]]) -> None:
    client = connect(url, socket_timeout=60)
    source = RedisStreamSource(client, shards=shards)
    await source.setup()
    for i in range(0, len(batch), 5000):
        await source.publish(batch[i : i + 5000])
    await client.aclose()


async def drained(url: str, shards: int) -> bool:
    client = connect(url, socket_timeout=60)
    try:
        return await wait_drained(RedisStreamSource(client, shards=shards), 600)
    finally:
        await client.aclose()


def flush(urls: list[str]) -> None:
    for u in urls:
        c = connect_sync(u)
        c.flushall()
        c.close()


def run(url: str, node_urls: list[str], shards: int, consumers: int, n: int, tmp: str) -> float:
    flush(node_urls)
    asyncio.run(produce(url, shards, messages(n)))
    env = {**os.environ, "ARBITER_REDIS_URL": url, "ARBITER_DATA_DIR": tmp}
    procs = []
    started = time.perf_counter()
    for k in range(consumers):
        cmd = [sys.executable, "-m", "arbiter.server.cli", "consume", "--rules", RULES]
        cmd += ["--shards", str(shards), "--name", f"bench-{k}"]
        procs.append(subprocess.Popen(cmd, env=env, stderr=subprocess.DEVNULL))
    try:
        assert asyncio.run(drained(url, shards)), "not drained within 600 s"
        elapsed = time.perf_counter() - started
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)
            p.wait(30)
    return n / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=50_000)
    parser.add_argument("--shards", type=int, default=4)
    parser.add_argument("--cluster", action="store_true", help="a 3-master Redis Cluster")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        if args.cluster:
            sys.path.insert(0, str(ROOT / "tests"))
            from support.redis_cluster import RedisClusterProcesses

            cluster = RedisClusterProcesses(tmp, masters=3)
            cluster.start()
            url, nodes, stop = cluster.url, cluster.urls, cluster.stop
        else:
            redis = EmbeddedRedis(tmp)
            redis.start()
            url, nodes, stop = redis.url, [redis.url], redis.stop
        try:
            rates = {}
            for consumers in (1, 2):
                rates[consumers] = run(url, nodes, args.shards, consumers, args.events, tmp)
                print(f"{consumers} consumer(s): {rates[consumers]:,.0f} events/s", flush=True)
        finally:
            stop()
    print(f"2 consumers / 1 consumer: {rates[2] / rates[1]:.2f}")


if __name__ == "__main__":
    main()

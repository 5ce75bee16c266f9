"""Real Redis for tests: pytest fixtures, no mocks.

- ``redis_server`` (session): an :class:`EmbeddedRedis` in a temporary
  directory. When ``ARBITER_REDIS_URL`` is set, that Redis is used instead and
  nothing is started. Careful: ``redis_url`` FLUSHALLs it.
- ``redis_url`` (function): the server's URL, flushed before each test.
- ``redis_cluster`` (session): a 3-master :class:`RedisClusterProcesses`,
  started only when a test asks for it (about 2 s).
- ``redis_cluster_url`` (function): its ``redis+cluster://`` URL, every master
  flushed before each test.

Wire them in with ``pytest_plugins = ["support.redis"]`` in the top
conftest, or ``-p support.redis`` on the command line.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import pytest
import redis

from arbiter.engine.store.client import AsyncRedisClient, connect, connect_sync
from arbiter.engine.store.embedded import EmbeddedRedis
from support.redis_cluster import RedisClusterProcesses

T = TypeVar("T")

__all__ = [
    "ExternalRedis",
    "flush_redis",
    "process_gone",
    "redis_cluster",
    "redis_cluster_url",
    "redis_server",
    "redis_url",
    "run_with_client",
]


@dataclass(frozen=True)
class ExternalRedis:
    """A Redis the tests did not start (``ARBITER_REDIS_URL``); only its URL is known."""

    url: str


def flush_redis(url: str) -> None:
    """FLUSHALL the Redis at ``url``; for a cluster URL, every primary."""
    client = connect_sync(url)
    try:
        if isinstance(client, redis.RedisCluster):
            client.flushall(target_nodes=redis.RedisCluster.PRIMARIES)
        else:
            client.flushall()
    finally:
        client.close()


def process_gone(pid: int) -> bool:
    """True if no live process has ``pid`` (a zombie counts as gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    # The state letter follows the parenthesised command name.
    return stat.rsplit(")", 1)[1].split()[0] in {"Z", "X"}


@pytest.fixture(scope="session")
def redis_server(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[EmbeddedRedis | ExternalRedis]:
    """One Redis for the whole session: ``ARBITER_REDIS_URL`` if set, else embedded."""
    external = os.environ.get("ARBITER_REDIS_URL")
    if external:
        yield ExternalRedis(external)
        return
    server = EmbeddedRedis(tmp_path_factory.mktemp("redis"), persistent=False)
    server.start()
    pid = server.pid
    try:
        yield server
    finally:
        server.stop()
    assert pid is not None and process_gone(pid), f"redis-server {pid} outlived its fixture"


@pytest.fixture
def redis_url(redis_server: EmbeddedRedis | ExternalRedis) -> str:
    """The session Redis's URL, emptied (FLUSHALL) before the test."""
    flush_redis(redis_server.url)
    return redis_server.url


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisClusterProcesses]:
    """A 3-master Redis Cluster on loopback, for the whole session."""
    cluster = RedisClusterProcesses(tmp_path_factory.mktemp("redis-cluster"), masters=3)
    cluster.start()
    pids = cluster.pids
    try:
        yield cluster
    finally:
        cluster.stop()
    left = [pid for pid in pids if not process_gone(pid)]
    assert not left, f"cluster nodes {left} outlived their fixture"


@pytest.fixture
def redis_cluster_url(redis_cluster: RedisClusterProcesses) -> str:
    """The cluster's ``redis+cluster://`` URL, every master emptied before the test."""
    for url in redis_cluster.urls:
        flush_redis(url)
    return redis_cluster.url


def run_with_client(url: str, body: Callable[[AsyncRedisClient], Awaitable[T]]) -> T:
    """Run ``body`` with a fresh asyncio client on ``url`` (closed afterwards), to completion.

    Tasks ``body`` left running (it failed before stopping them) are cancelled,
    and their cleanup awaited, before the client closes.
    """

    async def main() -> T:
        client = connect(url, socket_timeout=5.0)
        try:
            return await body(client)
        finally:
            # Left to asyncio.run, they would be cancelled after aclose(), and a
            # cleanup that still talks to Redis (a learner's run_forever publishes
            # and releases its lease) would open a connection nothing closes. Its
            # ResourceWarning comes out at some later garbage collection, which
            # `filterwarnings = error` turns into the failure of whatever test is
            # running then, far from the cause.
            await _cancel_other_tasks()
            await client.aclose()

    return asyncio.run(main())


async def _cancel_other_tasks() -> None:
    """Cancel every task of the running loop but the caller's, and wait for them to end."""
    others = asyncio.all_tasks() - {asyncio.current_task()}
    while others:
        for task in others:
            task.cancel()
        # Again until they end: on Python 3.11 `asyncio.wait_for` (redis-py's reads
        # use it) swallows a cancellation that lands as its awaited reply arrives
        # (CPython gh-86296, fixed in 3.12), and the task carries on.
        _, others = await asyncio.wait(others, timeout=0.1)

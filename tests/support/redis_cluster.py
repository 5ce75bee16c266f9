"""A throwaway Redis Cluster on loopback, for tests and benchmarks.

:class:`RedisClusterProcesses` starts a few :class:`~engine.store.embedded.EmbeddedRedis`
nodes in cluster mode, assigns slots and joins them, so tests can prove that
one customer's keys stay on one shard. Every wait is bounded; ``stop()``
shuts every node down.
"""

from __future__ import annotations

import contextlib
import os
import random
import socket
import time
from pathlib import Path
from typing import Self

import redis

from arbiter.engine.store.embedded import (
    _POLL_INTERVAL,
    EmbeddedRedis,
    RedisServerError,
    ServerProcesses,
)

__all__ = [
    "CLUSTER_SLOTS",
    "RedisClusterProcesses",
    "start_cluster",
]

CLUSTER_SLOTS = 16384
# Redis Cluster nodes also listen on port + 10000 for the cluster bus
# (redis 6.2 has no cluster-port setting).
_CLUSTER_BUS_OFFSET = 10000


class RedisClusterProcesses(ServerProcesses):
    """A Redis Cluster of ``masters`` nodes on 127.0.0.1, for tests and benchmarks.

    No replicas and no persistence: each start is a fresh, empty cluster.
    ``urls`` holds one plain ``redis://127.0.0.1:PORT`` per master (to reach
    a node directly, e.g. to flush it); ``url`` is the ``redis+cluster://``
    URL of the first node, which :func:`engine.store.client.connect` takes.
    """

    def __init__(
        self,
        directory: str | os.PathLike[str],
        *,
        masters: int = 3,
        base_port: int | None = None,
        startup_timeout: float = 20.0,
        executable: str | None = None,
    ) -> None:
        if masters < 1:
            raise ValueError("a cluster needs at least one master")
        self.directory = Path(directory).absolute()
        self.masters = masters
        self.base_port = base_port
        self.startup_timeout = startup_timeout
        self.executable = executable
        self.nodes: list[EmbeddedRedis] = []

    @property
    def ports(self) -> list[int]:
        """The client ports of the masters, in slot order."""
        return [node.port or 0 for node in self.nodes]

    @property
    def urls(self) -> list[str]:
        """One ``redis://127.0.0.1:PORT`` per master."""
        return [node.url for node in self.nodes]

    @property
    def url(self) -> str:
        """``redis+cluster://127.0.0.1:PORT`` of the first master."""
        if not self.nodes:
            raise RedisServerError("the cluster is not started")
        return f"redis+cluster://127.0.0.1:{self.ports[0]}"

    @property
    def pids(self) -> list[int]:
        """Process ids of the running masters."""
        return [node.pid for node in self.nodes if node.pid is not None]

    def start(self) -> Self:
        """Start the nodes, assign slots, join them, and wait for ``cluster_state:ok``.

        With no ``base_port``, free ports are picked and the whole start is
        retried (up to three times) if a port was taken in between.
        """
        if self.nodes:
            raise RedisServerError("the cluster is already started")
        attempts = 1 if self.base_port is not None else 3
        for attempt in range(1, attempts + 1):
            try:
                self._start_nodes(self._choose_ports())
                break
            except RedisServerError:
                self.stop()
                if attempt == attempts:
                    raise
        try:
            self._create_cluster()
            self._wait_until_ok()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stop every node (killing any that does not exit in time)."""
        nodes, self.nodes = self.nodes, []
        for node in nodes:
            with contextlib.suppress(RedisServerError):
                node.stop()

    @property
    def running(self) -> bool:
        """Whether the nodes are started (and not stopped since)."""
        return bool(self.nodes)

    def __repr__(self) -> str:
        return f"RedisClusterProcesses(ports={self.ports})"

    def _choose_ports(self) -> list[int]:
        if self.base_port is not None:
            return [self.base_port + i for i in range(self.masters)]
        ports: list[int] = []
        # Below the Linux ephemeral range (32768+) so outgoing connections do
        # not take them; the cluster bus port (+10000) must be free as well.
        candidates = random.sample(range(20000, 30000), 200)
        for port in candidates:
            if _tcp_port_free(port) and _tcp_port_free(port + _CLUSTER_BUS_OFFSET):
                ports.append(port)
                if len(ports) == self.masters:
                    return ports
        raise RedisServerError("could not find free ports for the cluster")

    def _start_nodes(self, ports: list[int]) -> None:
        for port in ports:
            node_dir = self.directory / f"node-{port}"
            # Cluster state from an earlier run would make this node rejoin
            # an old, dead cluster.
            for stale in ("nodes.conf", "dump.rdb"):
                with contextlib.suppress(FileNotFoundError):
                    (node_dir / stale).unlink()
            node = EmbeddedRedis(
                node_dir,
                port=port,
                unix_socket=False,
                persistent=False,
                executable=self.executable,
                extra_config={
                    "cluster-enabled": "yes",
                    "cluster-config-file": "nodes.conf",
                    "cluster-node-timeout": "5000",
                    "cluster-announce-ip": "127.0.0.1",
                },
            )
            self.nodes.append(node)
            node.start()

    def _create_cluster(self) -> None:
        # What `redis-cli --cluster create` does, minus its one-second polls:
        # distinct config epochs, contiguous slot ranges, then MEETs.
        per_node, extra = divmod(CLUSTER_SLOTS, self.masters)
        first = 0
        for index, node in enumerate(self.nodes):
            last = first + per_node + (1 if index < extra else 0)
            with node._admin_client(timeout=5.0) as client:
                client.execute_command("CLUSTER", "SET-CONFIG-EPOCH", index + 1)
                client.execute_command("CLUSTER", "ADDSLOTS", *range(first, last))
            first = last
        # Every node meets every other one directly: learning peers through
        # gossip alone can add a second to the start.
        for index, node in enumerate(self.nodes):
            with node._admin_client(timeout=5.0) as client:
                for port in self.ports[index + 1 :]:
                    client.execute_command("CLUSTER", "MEET", "127.0.0.1", port)

    def _wait_until_ok(self) -> None:
        # A fresh master keeps cluster_state:fail for its first two seconds
        # (CLUSTER_WRITABLE_DELAY), so this takes a little over 2 s.
        deadline = time.monotonic() + self.startup_timeout
        pending = list(self.nodes)
        info: dict[str, str] = {}
        while pending:
            node = pending[0]
            info = _cluster_info(node)
            if (
                info.get("cluster_state") == "ok"
                and info.get("cluster_slots_ok") == str(CLUSTER_SLOTS)
                and info.get("cluster_known_nodes") == str(self.masters)
            ):
                pending.pop(0)
                continue
            if time.monotonic() > deadline:
                raise RedisServerError(
                    f"cluster node {node.url} not ready after {self.startup_timeout}s: "
                    f"{info}\n{node.log_tail()}"
                )
            time.sleep(_POLL_INTERVAL)


def start_cluster(
    directory: str | os.PathLike[str], masters: int = 3, base_port: int | None = None
) -> RedisClusterProcesses:
    """Start a ``masters``-node Redis Cluster on loopback and wait until it is ready."""
    return RedisClusterProcesses(directory, masters=masters, base_port=base_port).start()


def _cluster_info(node: EmbeddedRedis) -> dict[str, str]:
    try:
        with node._admin_client(timeout=1.0) as client:
            raw = client.execute_command("CLUSTER", "INFO")
    except redis.RedisError as exc:
        return {"error": str(exc)}
    if isinstance(raw, dict):
        return {str(key): str(value) for key, value in raw.items()}
    text = raw.decode() if isinstance(raw, bytes) else str(raw)
    fields = (line.split(":", 1) for line in text.splitlines() if ":" in line)
    return {key: value.strip() for key, value in fields}


def _tcp_port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True

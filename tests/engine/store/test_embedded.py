"""Real redis-server processes: the embedded server, the cluster harness, the client factory."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
import redis.asyncio
from support.paths import ROOT_DIR
from support.redis import ExternalRedis, process_gone
from support.redis_cluster import CLUSTER_SLOTS, RedisClusterProcesses

from arbiter.engine.store.client import connect, connect_sync, is_cluster
from arbiter.engine.store.embedded import EmbeddedRedis, RedisServerError

REPO = ROOT_DIR


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


@pytest.fixture
def started() -> Iterator[list[EmbeddedRedis]]:
    """Servers a test starts; stopped afterwards even if the test fails."""
    servers: list[EmbeddedRedis] = []
    yield servers
    for server in servers:
        server.stop()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def wait_gone(pid: int, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while not process_gone(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def get(url: str, key: str) -> bytes | None:
    client = connect_sync(url)
    try:
        value = client.get(key)
        assert value is None or isinstance(value, bytes)
        return value
    finally:
        client.close()


def put(url: str, key: str, value: str) -> None:
    client = connect_sync(url)
    try:
        client.set(key, value)
    finally:
        client.close()


# -- EmbeddedRedis ---------------------------------------------------------


def test_start_answers_on_unix_socket_and_stop_ends_the_process(data_dir: Path) -> None:
    server = EmbeddedRedis(data_dir).start()
    pid = server.pid
    assert pid is not None and not process_gone(pid)
    assert server.owns_process
    assert server.url == f"unix://{data_dir}/redis.sock"
    put(server.url, "k", "v")
    assert get(server.url, "k") == b"v"

    server.stop()

    assert process_gone(pid)
    assert server.pid is None
    assert not (data_dir / "redis.sock").exists()
    server.stop()  # a second stop is harmless


def test_tcp_only_server_has_a_redis_url(data_dir: Path) -> None:
    port = free_port()
    with EmbeddedRedis(data_dir, port=port, unix_socket=False) as server:
        assert server.url == f"redis://127.0.0.1:{port}"
        put(server.url, "k", "tcp")
        assert get(server.url, "k") == b"tcp"
    assert not (data_dir / "redis.sock").exists()


def test_data_survives_stop_and_start_on_the_same_directory(data_dir: Path) -> None:
    with EmbeddedRedis(data_dir) as server:
        put(server.url, "arb:{c1}:p", "kept")
    assert (data_dir / "dump.rdb").is_file()

    with EmbeddedRedis(data_dir) as server:
        assert get(server.url, "arb:{c1}:p") == b"kept"


def test_attach_or_start_reuses_a_live_server_and_leaves_it_running(
    data_dir: Path, started: list[EmbeddedRedis]
) -> None:
    owner = EmbeddedRedis(data_dir).start()
    started.append(owner)
    put(owner.url, "k", "shared")

    guest = EmbeddedRedis.attach_or_start(data_dir)
    assert not guest.owns_process
    assert guest.pid == owner.pid
    assert get(guest.url, "k") == b"shared"
    guest.stop()

    assert owner.pid is not None and not process_gone(owner.pid)
    assert get(owner.url, "k") == b"shared"


def test_attach_or_start_starts_a_server_when_none_answers(data_dir: Path) -> None:
    server = EmbeddedRedis.attach_or_start(data_dir)
    pid = server.pid
    try:
        assert server.owns_process and pid is not None
        assert get(server.url, "missing") is None
    finally:
        server.stop()
    assert pid is not None and process_gone(pid)


def test_attach_or_start_reuses_a_server_started_by_another_process(data_dir: Path) -> None:
    # An earlier `arbiter serve` still running while `arbiter replay` starts.
    script = textwrap.dedent(f"""
        import sys
        from arbiter.engine.store.embedded import EmbeddedRedis
        server = EmbeddedRedis({str(data_dir)!r}).start()
        print(server.pid, flush=True)
        sys.stdin.readline()
        server.stop()
    """)
    with subprocess.Popen(
        [sys.executable, "-c", script],
        cwd=REPO,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    ) as owner:
        assert owner.stdin is not None and owner.stdout is not None
        try:
            pid = int(owner.stdout.readline())
            guest = EmbeddedRedis.attach_or_start(data_dir)
            assert guest.pid == pid and not guest.owns_process
            guest.stop()
            assert not process_gone(pid)
        finally:
            owner.stdin.close()
            owner.wait(timeout=10)
    assert owner.returncode == 0
    assert wait_gone(pid)


def test_a_crashed_server_leaves_a_stale_socket_that_a_new_start_replaces(
    data_dir: Path,
) -> None:
    crashed = EmbeddedRedis(data_dir).start()
    assert crashed._process is not None
    crashed._process.kill()  # as if by the OOM killer: no shutdown, socket file left
    crashed._process.wait()
    assert (data_dir / "redis.sock").exists()
    crashed.stop()

    with EmbeddedRedis.attach_or_start(data_dir) as server:
        assert server.owns_process
        put(server.url, "k", "back")
        assert get(server.url, "k") == b"back"


def test_start_refuses_a_directory_whose_server_is_running(
    data_dir: Path, started: list[EmbeddedRedis]
) -> None:
    started.append(EmbeddedRedis(data_dir).start())
    with pytest.raises(RedisServerError, match=r"already answering.*attach_or_start"):
        EmbeddedRedis(data_dir).start()


def test_unusable_directory_is_a_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    with pytest.raises(RedisServerError, match=r"cannot use .*a-file/data as Redis data directory"):
        EmbeddedRedis(blocker / "data").start()


def test_occupied_port_is_a_clear_error_with_the_server_log(data_dir: Path) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        server = EmbeddedRedis(data_dir, port=port)
        with pytest.raises(RedisServerError, match=r"exited with status 1(.|\n)*in use"):
            server.start()
    assert server.pid is None


def test_too_long_socket_path_is_refused_up_front(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="longer than 107 bytes"):
        EmbeddedRedis(tmp_path / ("d" * 120))


def test_servers_left_running_are_stopped_at_interpreter_exit(data_dir: Path) -> None:
    script = textwrap.dedent(f"""
        from arbiter.engine.store.embedded import EmbeddedRedis
        print(EmbeddedRedis({str(data_dir)!r}).start().pid)
    """)
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 0, done.stderr
    assert wait_gone(int(done.stdout))


# -- fixtures ----------------------------------------------------------------


def test_redis_url_fixture_starts_empty(redis_url: str) -> None:
    client = connect_sync(redis_url)
    try:
        assert client.dbsize() == 0
        client.set("left-behind", "1")  # the next test must not see it
    finally:
        client.close()


def test_redis_url_fixture_empties_what_an_earlier_test_left(
    redis_server: EmbeddedRedis | ExternalRedis,
    pytester: pytest.Pytester,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Not left to test order: leave a key behind here, then run a test session on
    # the same Redis (ARBITER_REDIS_URL) whose only test takes `redis_url`.
    client = connect_sync(redis_server.url)
    try:
        client.set("left-behind", "1")
    finally:
        client.close()
    monkeypatch.setenv("ARBITER_REDIS_URL", redis_server.url)
    pytester.makepyfile(
        test_inner="""
        from arbiter.engine.store.client import connect_sync

        def test_sees_an_empty_redis(redis_url):
            client = connect_sync(redis_url)
            try:
                assert client.dbsize() == 0, client.keys("*")
            finally:
                client.close()
        """
    )
    result = pytester.runpytest_inprocess("-p", "support.redis", "-q", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)
    assert get(redis_server.url, "left-behind") is None


# -- the cluster -------------------------------------------------------------


def test_cluster_has_three_masters_covering_every_slot(
    redis_cluster: RedisClusterProcesses,
) -> None:
    assert is_cluster(redis_cluster.url)
    assert redis_cluster.url == f"redis+cluster://127.0.0.1:{redis_cluster.ports[0]}"
    assert len(redis_cluster.urls) == 3
    covered: set[int] = set()
    client = connect_sync(redis_cluster.urls[0])
    try:
        for start, end, *_nodes in client.execute_command("CLUSTER", "SLOTS"):
            covered.update(range(start, end + 1))
    finally:
        client.close()
    assert covered == set(range(CLUSTER_SLOTS))
    cluster_client = connect_sync(redis_cluster.url)
    try:
        assert isinstance(cluster_client, redis.RedisCluster)
        assert len(cluster_client.get_primaries()) == 3
    finally:
        cluster_client.close()


def test_one_customer_pipeline_is_one_slot_through_the_cluster_url(
    redis_cluster_url: str,
) -> None:
    async def round_trip() -> list[object]:
        client = connect(redis_cluster_url, socket_timeout=1.0)
        assert isinstance(client, redis.asyncio.RedisCluster)
        try:
            profile, views = "arb:{c42}:p", "arb:{c42}:e:view"
            assert client.keyslot(profile) == client.keyslot(views)
            async with client.pipeline(transaction=False) as pipe:
                pipe.hset(profile, mapping={"country": "NL", "visits": 3})
                pipe.zadd(views, {"e1": 1.0, "e2": 2.0})
                pipe.hgetall(profile)
                pipe.zcount(views, 0, 10)
                pipe.incr("arb:{c42}:cap:welcome")
                return list(await pipe.execute())
        finally:
            await client.aclose()

    assert asyncio.run(round_trip()) == [2, 2, {b"country": b"NL", b"visits": b"3"}, 2, 1]


def test_customers_spread_over_every_master(
    redis_cluster: RedisClusterProcesses, redis_cluster_url: str
) -> None:
    async def write_profiles() -> None:
        client = connect(redis_cluster_url, socket_timeout=1.0)
        try:
            for n in range(60):
                await client.hset(f"arb:{{c{n}}}:p", "visits", n)
        finally:
            await client.aclose()

    asyncio.run(write_profiles())
    sizes = []
    for url in redis_cluster.urls:
        node = connect_sync(url)
        try:
            sizes.append(node.dbsize())
        finally:
            node.close()
    assert sum(sizes) == 60
    assert all(size > 0 for size in sizes), sizes


def test_cluster_stop_ends_every_node(tmp_path: Path) -> None:
    cluster = RedisClusterProcesses(tmp_path / "cluster", masters=3)
    try:
        cluster.start()
        pids = cluster.pids
        assert len(pids) == 3
        put(cluster.url, "arb:{c1}:p", "x")
        assert get(cluster.url, "arb:{c1}:p") == b"x"
    finally:
        cluster.stop()
    assert all(process_gone(pid) for pid in pids)
    assert cluster.pids == []


# -- the client factory ------------------------------------------------------


def test_connect_picks_the_client_class_from_the_scheme() -> None:
    async def clients() -> list[type]:
        made = [
            connect("redis://127.0.0.1:1"),
            connect("unix:///tmp/nothing.sock"),
            connect("rediss://127.0.0.1:1"),
            connect("redis+cluster://127.0.0.1:1"),
        ]
        for client in made:
            await client.aclose()
        return [type(client) for client in made]

    plain, cluster = redis.asyncio.Redis, redis.asyncio.RedisCluster
    assert asyncio.run(clients()) == [plain, plain, plain, cluster]
    assert is_cluster("redis+cluster://h:1") and not is_cluster("redis://h:1")
    with pytest.raises(ValueError, match="unsupported Redis URL scheme 'http'"):
        connect_sync("http://127.0.0.1:6379")


def test_hot_path_client_times_out_fast_without_retrying(redis_url: str) -> None:
    async def blocked_read() -> float:
        client = connect(redis_url)
        try:
            began = time.monotonic()
            with pytest.raises(redis.TimeoutError):
                await client.blpop(["arb:{c1}:never"], timeout=2)
            return time.monotonic() - began
        finally:
            await client.aclose()

    # 50 ms socket timeout, no retry and no backoff: well under the BLPOP's 2 s.
    assert asyncio.run(blocked_read()) < 0.5

"""One place that turns a Redis URL into a client.

Everything in Arbiter that talks to Redis gets its client here, so that the
settings that matter on the decision path (bytes in and out, short timeouts,
no silent retries) are decided once.

Accepted URLs:

- ``redis://[user:password@]host:port[/db]`` and ``rediss://...`` (TLS)
- ``unix:///absolute/path/redis.sock[?db=N]``
- ``redis+cluster://host:port`` and ``rediss+cluster://host:port``: a Redis
  Cluster, reached through that startup node; the rest of the topology is
  discovered from it.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

import hiredis
import redis
import redis.asyncio
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import NoBackoff
from redis.retry import Retry as SyncRetry

__all__ = [
    "AsyncRedisClient",
    "SyncRedisClient",
    "connect",
    "connect_sync",
    "is_cluster",
]

AsyncRedisClient = redis.asyncio.Redis | redis.asyncio.RedisCluster
SyncRedisClient = redis.Redis | redis.RedisCluster

_CLUSTER_SCHEMES = {"redis+cluster": "redis", "rediss+cluster": "rediss"}
_PLAIN_SCHEMES = frozenset({"redis", "rediss", "unix"})

# Command-line tools and tests are not on a deadline; a slow CI machine should
# not turn into flaky failures there.
_SYNC_SOCKET_TIMEOUT = 5.0


class _HiredisPacking:
    """Packs commands with hiredis' C encoder.

    redis-py's asyncio connections pack commands in pure Python (its sync
    connections already use hiredis); under load that packing was about a
    tenth of a decision's CPU time in profiles.
    """

    def pack_command(self, *args: Any) -> list[bytes]:
        first = args[0]
        if isinstance(first, str) and " " in first:
            # Multi-word commands ("SCRIPT LOAD") go to Redis as separate words.
            args = (*first.split(), *args[1:])
        return [hiredis.pack_command(args)]


class _Connection(_HiredisPacking, redis.asyncio.Connection):
    pass


class _UnixConnection(_HiredisPacking, redis.asyncio.UnixDomainSocketConnection):
    pass


class _SSLConnection(_HiredisPacking, redis.asyncio.SSLConnection):
    pass


_FAST_CLASSES: dict[type[Any], type[Any]] = {
    redis.asyncio.Connection: _Connection,
    redis.asyncio.UnixDomainSocketConnection: _UnixConnection,
    redis.asyncio.SSLConnection: _SSLConnection,
}


def is_cluster(url: str) -> bool:
    """Tell whether ``url`` names a Redis Cluster (``redis+cluster://``)."""
    return _scheme(url) in _CLUSTER_SCHEMES


def connect(
    url: str,
    *,
    socket_timeout: float | None = 0.05,
    connect_timeout: float | None = None,
) -> AsyncRedisClient:
    """Return an asyncio client for ``url``; no I/O happens until first use.

    ``socket_timeout`` bounds every read and write (seconds). The default of
    50 ms suits the decision path, which has a budget of tens of milliseconds;
    pass a longer one for bulk work. ``connect_timeout`` bounds opening a
    connection and defaults to ``socket_timeout``.

    The client returns ``bytes`` (``decode_responses=False``), never retries
    on its own and sends no health-check PINGs: one round trip per call, and
    a failure surfaces at once so the caller can degrade within its deadline.
    The caller owns the client and must ``await client.aclose()`` it.
    """
    scheme = _checked_scheme(url)
    options = _options(socket_timeout, connect_timeout, AsyncRetry(NoBackoff(), 0))
    if scheme in _CLUSTER_SCHEMES:
        return redis.asyncio.RedisCluster.from_url(
            _plain_url(url, scheme),
            connection_class=_SSLConnection if scheme.startswith("rediss") else _Connection,
            **options,
        )
    pool = redis.asyncio.ConnectionPool.from_url(url, **options)
    pool.connection_class = _FAST_CLASSES.get(pool.connection_class, pool.connection_class)
    # from_pool: the client owns the pool, so aclose() closes its connections.
    return redis.asyncio.Redis.from_pool(pool)


def connect_sync(
    url: str,
    *,
    socket_timeout: float = _SYNC_SOCKET_TIMEOUT,
    connect_timeout: float | None = None,
) -> SyncRedisClient:
    """Return a blocking client for ``url``, for command-line tools and tests.

    Same URL forms and the same no-retry, bytes-out behaviour as
    :func:`connect`, but with a 5 s default timeout since nothing here is on
    the decision path. The caller must ``close()`` it.
    """
    scheme = _checked_scheme(url)
    options = _options(socket_timeout, connect_timeout, SyncRetry(NoBackoff(), 0))
    if scheme in _CLUSTER_SCHEMES:
        return redis.RedisCluster.from_url(_plain_url(url, scheme), **options)
    return redis.Redis.from_url(url, **options)


def _options(
    socket_timeout: float | None, connect_timeout: float | None, no_retry: Any
) -> dict[str, Any]:
    """The client options every Arbiter connection uses, sync or async, plain or cluster.

    `no_retry` is a Retry with zero retries, not None: for None redis-py
    substitutes a default that retries three times with exponential backoff.
    """
    return {
        "decode_responses": False,
        "socket_timeout": socket_timeout,
        "socket_connect_timeout": socket_timeout if connect_timeout is None else connect_timeout,
        "retry": no_retry,
        "health_check_interval": 0,
    }


def _scheme(url: str) -> str:
    return urlsplit(url).scheme.lower()


def _checked_scheme(url: str) -> str:
    scheme = _scheme(url)
    if scheme not in _PLAIN_SCHEMES and scheme not in _CLUSTER_SCHEMES:
        known = ", ".join(sorted(_PLAIN_SCHEMES | _CLUSTER_SCHEMES.keys()))
        raise ValueError(f"unsupported Redis URL scheme {scheme!r} in {url!r}; use one of: {known}")
    return scheme


def _plain_url(url: str, scheme: str) -> str:
    # redis-py's cluster client parses ordinary redis:// URLs; the "+cluster"
    # marker is ours, so strip it before handing the URL over.
    return _CLUSTER_SCHEMES[scheme] + url[len(scheme) :]

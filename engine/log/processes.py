"""Worker processes for the log commands (replay, evaluate): how they start, how they report.

**Start method.** On Linux, when this process runs no other thread, workers
are *forked*: they inherit the parent's imports and whatever it prepared
before the pool opened (compiled rules, arrays), so a worker costs
milliseconds, not the ~0.5 s (idle machine) to ~3 s (busy one) of a fresh
interpreter importing Arbiter and building the rules parser. A fork copies
locks in whatever state other threads left them, so with another thread
alive (a progress bar's monitor, a client's background thread), and on
other systems (macOS's frameworks are not fork-safe), workers are spawned
instead: slower to start, same results. Open the pool *before* starting
threads (`arbiter replay` opens it before its progress bar).

Nothing that owns native threads is created before the fork: ONNX models
are loaded by each worker when it first needs them.

**Progress.** Workers add the records they finish to one shared counter
(every `TICK` records, so the parent's bar moves during long pieces); the
parent polls it while it waits for results, which come back whole per task,
in submission order.
"""

from __future__ import annotations

import gc
import multiprocessing
import sys
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor, wait
from typing import Any, Self, TypeVar

__all__ = ["TICK", "PoolOwner", "Progress", "WorkerPool", "open_pool", "start_method"]

T = TypeVar("T")
R = TypeVar("R")
S = TypeVar("S")

#: Records between two progress ticks of a worker.
TICK = 256
#: Seconds between two polls of the shared counter while a result is awaited.
POLL = 0.2

#: A callback taking a count of records just finished.
Progress = Callable[[int], None]

_counter: Any = None  # the shared counter, in a worker


def start_method(preferred: str | None = None) -> str:
    """``preferred`` if given, else ``fork`` where it is safe (see the module docstring)."""
    if preferred is not None:
        return preferred
    if sys.platform.startswith("linux") and threading.active_count() == 1:
        return "fork"
    return "spawn"


def _init(counter: Any, initializer: Callable[..., None] | None, initargs: tuple[Any, ...]) -> None:
    global _counter
    _counter = counter
    if initializer is not None:
        initializer(*initargs)


def tick(count: int) -> None:
    """In a worker: ``count`` more records done (a no-op outside a pool)."""
    if _counter is not None and count:
        with _counter.get_lock():
            _counter.value += count


class WorkerPool:
    """A process pool whose results come back in submission order, with shared progress.

    ``initializer(*initargs)`` runs in each worker (under ``spawn`` it must build
    everything; under ``fork`` the worker already holds what the parent built).
    Use as a context manager; `start_method` tells how workers were started.
    """

    def __init__(
        self,
        jobs: int,
        *,
        initializer: Callable[..., None] | None = None,
        initargs: tuple[Any, ...] = (),
        method: str | None = None,
    ) -> None:
        self.jobs = jobs
        self.start_method = start_method(method)
        context = multiprocessing.get_context(self.start_method)
        self._counter = context.Value("q", 0)
        self._seen = 0
        self._executor = ProcessPoolExecutor(
            jobs,
            mp_context=context,
            initializer=_init,
            initargs=(self._counter, initializer, initargs),
        )
        # Start the workers now (a fork copies the process as it is at this moment, before
        # the caller starts a progress bar's thread); spawned ones start on demand.
        if self.start_method == "fork":
            # Objects inherited from the parent are frozen out of the workers' garbage
            # collector: a full collection in a worker would otherwise write to every one
            # of them and so copy the parent's whole heap, page by page.
            gc.freeze()
            try:
                self._executor.submit(_noop).result()
            finally:
                gc.unfreeze()
        else:
            self._executor.submit(_noop).result()

    def __enter__(self) -> WorkerPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop the workers (waiting for running tasks; pending ones are cancelled on error)."""
        self._executor.shutdown(wait=True, cancel_futures=True)

    def map(
        self,
        fn: Callable[[T], R],
        tasks: Iterable[T],
        progress: Progress | None = None,
        window: int | None = None,
    ) -> Iterator[R]:
        """``fn(task)`` for every task, in order; at most ``window`` (default ``2 * jobs``)
        tasks in flight, so an endless task source does not fill memory."""
        limit = window or 2 * self.jobs
        pending: deque[Future[R]] = deque()
        source = iter(tasks)
        exhausted = False
        while True:
            while not exhausted and len(pending) < limit:
                task = next(source, _END)
                if task is _END:
                    exhausted = True
                else:
                    pending.append(self._executor.submit(fn, task))
            if not pending:
                return
            head = pending[0]
            while not head.done():
                wait([head], timeout=POLL)
                self._report(progress)
            pending.popleft()
            result = head.result()
            self._report(progress)
            yield result

    def _report(self, progress: Progress | None) -> None:
        if progress is None:
            return
        now = int(self._counter.value)
        if now > self._seen:
            progress(now - self._seen)
            self._seen = now


_END: Any = object()


def _noop() -> None:
    return None


def open_pool(
    jobs: int,
    method: str | None,
    build: Callable[[S], None],
    setup: S,
    forget: Callable[[], None],
) -> WorkerPool:
    """`jobs` workers that each hold what `build(setup)` makes (in a module global).

    When forking, `build` runs once here and every worker inherits its result;
    `forget` then drops it from this process. Otherwise each worker runs `build`.
    """
    chosen = start_method(method)
    if chosen == "fork":
        build(setup)
        try:
            return WorkerPool(jobs, method="fork")
        finally:
            forget()
    return WorkerPool(jobs, initializer=build, initargs=(setup,), method=chosen)


class PoolOwner:
    """Something that may hold a `WorkerPool`: a context manager that stops its workers."""

    _pool: WorkerPool | None = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop the workers (if any)."""
        if self._pool is not None:
            self._pool.close()
            self._pool = None

"""A small, bounded pool of worker processes for the studio's heavy work.

Try, scenarios and simulate decide with a draft ruleset: compiling it and
deciding for up to 2,000 customers x channels is seconds of pure-Python CPU.
In the serving process that work would hold the GIL against the event loop
and slow every live `/v1/decide` meanwhile (`benchmarks/studio_jobs.py`). Here
it runs in one of `size` single-process executors (`concurrent.futures`),
started from a forkserver on first use (a clean process with the studio's
job code preloaded, never a fork of the running server):

- a request takes a free slot for all its steps (its compiled draft stays in
  that process's cache between them), or is refused at once with `503
  studio_busy` when every slot is taken: requests never queue up behind a
  long simulation;
- each step has a time limit; past it the slot's process is killed and
  replaced, and the request gets `503 studio_timeout`.

Jobs take and return plain picklable values; a job refuses with a `Refusal`,
which the route turns into its HTTP answer.
"""

from __future__ import annotations

import asyncio
import multiprocessing
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from arbiter.server.errors import ApiError

#: Seconds a client is told to wait before retrying when every slot is busy.
RETRY_AFTER_S = 2
#: What the forkserver imports once for every studio process it forks (the checker's
#: worker and these slots share it: whichever starts first starts it): the checker, the
#: jobs and the built `.rules` parser (`studio.preload`), so no process builds its own.
PRELOAD = ["arbiter.server.studio.preload"]


@dataclass(frozen=True)
class Refusal:
    """A job's answer when the request cannot be served: becomes an `ApiError`."""

    status: int
    code: str
    message: str
    field: str | None = None
    extra: dict[str, Any] | None = None

    def error(self) -> ApiError:
        """The HTTP error this refusal stands for."""
        return ApiError(self.status, self.code, self.message, self.field, extra=self.extra)


async def submit(executor: ProcessPoolExecutor, fn: Callable[..., Any], *args: Any) -> Any:
    """`fn(*args)` in the executor's process, awaited.

    Submitting starts the process when it has none, and starting one waits for the
    forkserver: the first, the server's first check, waits for it to load the studio
    (about a second of CPU, many on a loaded machine). Submitted from a thread, so
    the event loop serving decisions never waits for it (`loop.run_in_executor`
    submits on the loop).
    """
    future = await asyncio.to_thread(executor.submit, fn, *args)
    return await asyncio.wrap_future(future)


def _seen(future: asyncio.Future[Any]) -> None:
    """Retrieve a warm-up's outcome: a slot killed meanwhile refuses it, and that is fine."""
    if not future.cancelled():
        future.exception()


def _executor() -> ProcessPoolExecutor:
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(PRELOAD)
    return ProcessPoolExecutor(max_workers=1, mp_context=ctx)


class Slot:
    """One worker process, used by one request at a time."""

    def __init__(self, timeout_s: float) -> None:
        self.timeout_s = timeout_s
        self._executor: ProcessPoolExecutor | None = None

    async def run(self, fn: Callable[..., Any], *args: Any) -> Any:
        """`fn(*args)` in this slot's process, within the time limit.

        A `Refusal` answer is raised as its `ApiError`; a crashed process is
        replaced and the job tried once more.
        """
        for attempt in (1, 2):
            if self._executor is None:
                self._executor = _executor()
            try:
                answer = await asyncio.wait_for(submit(self._executor, fn, *args), self.timeout_s)
            except TimeoutError:
                await asyncio.to_thread(self.kill)
                raise ApiError(
                    503,
                    "studio_timeout",
                    f"the studio's job took longer than its limit of {self.timeout_s:g} s "
                    "(ARBITER_STUDIO_JOB_TIMEOUT_S) and was stopped: simulate a smaller sample "
                    "or fewer channels",
                    extra_headers={"Retry-After": str(RETRY_AFTER_S)},
                ) from None
            except BrokenProcessPool:
                await asyncio.to_thread(self.kill)
                if attempt == 2:
                    raise
                continue
            if isinstance(answer, Refusal):
                raise answer.error()
            return answer
        raise AssertionError("unreachable")

    def warm(self) -> None:
        """Start this slot's process in the background, so the first job finds it ready."""
        if self._executor is None:
            self._executor = _executor()
            # Not waited for; submitted from a thread, as `submit` does, off the event loop.
            loop = asyncio.get_running_loop()
            warming = loop.run_in_executor(None, self._executor.submit, abs, 0)
            warming.add_done_callback(_seen)

    def kill(self) -> None:
        """Stop this slot's process now, mid-job if need be; the next job starts a new one."""
        executor, self._executor = self._executor, None
        if executor is None:
            return
        # The executor cannot cancel a running call: end its process, then reap it.
        processes = list(getattr(executor, "_processes", {}).values())
        for process in processes:
            process.kill()
        executor.shutdown(wait=True, cancel_futures=True)

    def close(self) -> None:
        """Stop the process once its current job (if any) is done."""
        executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=True, cancel_futures=True)


class JobPool:
    """`size` slots; a request takes one for its steps or is refused as busy."""

    def __init__(self, size: int, timeout_s: float) -> None:
        self.size = size
        self._free: list[Slot] = [Slot(timeout_s) for _ in range(size)]
        self._all = tuple(self._free)

    @property
    def busy(self) -> int:
        """Slots in use now."""
        return self.size - len(self._free)

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[Slot]:
        """A free slot for the duration of the block; `503 studio_busy` if none is free."""
        if not self._free:
            raise ApiError(
                503,
                "studio_busy",
                f"all {self.size} studio workers are busy (try, scenarios and simulate run "
                "there, apart from live decisions); try again in a moment",
                extra_headers={"Retry-After": str(RETRY_AFTER_S)},
            )
        slot = self._free.pop()
        try:
            yield slot
        finally:
            self._free.append(slot)

    def warm(self) -> None:
        """Start the process of the slot the next request takes (not waiting for it)."""
        if self._free:
            self._free[-1].warm()

    def close(self) -> None:
        """Stop every worker process (with the app)."""
        for slot in self._all:
            slot.kill()

"""The studio's check-as-you-type, run in a worker process.

Checking a ruleset is a few hundred milliseconds of pure-Python CPU. In a
thread of the server it would hold the GIL against the event loop and slow
every `/v1/decide` served meanwhile (measured: median 2.1 ms → 15.9 ms while a
studio checks without pause, `benchmarks/studio_check.py`); in a process it
does not. One worker per server, started on the first check from a
forkserver (a clean process with the checker preloaded, never a fork of the
running server), stopped with the app.

Functions here take and return plain picklable values.
"""

from __future__ import annotations

import asyncio
import multiprocessing
from collections.abc import AsyncIterator
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from arbiter import dsl
from arbiter.dsl.diagnose import diagnose
from arbiter.dsl.reparse import Reparser
from arbiter.server.studio.pool import PRELOAD, submit

#: This worker process's memory of the declarations it parsed: a keystroke changes one
#: declaration, and the others are not parsed again (`dsl.reparse`).
_REPARSER = Reparser()
#: And of the model files it opened, by path, size and modification time: a check
#: reads each model's input count, which does not change while the file does not.
_MODELS: dict[tuple[Path, int, int], Any] = {}
_MAX_MODELS = 32


def _open_model(path: Path) -> Any:
    from arbiter.engine.scoring.onnx import OnnxModel

    try:
        stat = path.stat()
    except OSError:
        return OnnxModel.load(path)  # it says what is wrong with the path
    key = (path.resolve(), stat.st_size, stat.st_mtime_ns)
    model = _MODELS.get(key)
    if model is None:
        model = OnnxModel.load(path)  # raises ModelLoadError (reported, not remembered)
        if len(_MODELS) >= _MAX_MODELS:
            _MODELS.clear()
        _MODELS[key] = model
    return model


def check(path: str, text: str) -> dict[str, Any]:
    """`POST /v1/check`'s answer for `text` checked as the file at `path`."""
    from arbiter.engine.scoring.loading import check_models
    from arbiter.server.studio.workbench import check_report

    diagnosis = diagnose(Path(path), text, _REPARSER)
    if diagnosis.checked is not None:
        diagnosis.diagnostics += check_models(diagnosis.checked, Path(path).parent, _open_model)
    return check_report(diagnosis, path)


def format_text(path: str, text: str) -> dict[str, Any]:
    """`{"text": canonical}`, or `{"message", "diagnostics"}` when the text does not parse."""
    from arbiter.server.studio.workbench import diagnostic_json, formatted

    try:
        return {"text": formatted(Path(path), text)}
    except dsl.RulesError as exc:
        return {
            "message": exc.format(),
            "diagnostics": [diagnostic_json(d) for d in exc.diagnostics],
        }


class Worker:
    """One worker process, started on first use; a crashed one is replaced once per call."""

    def __init__(self) -> None:
        self._pool: ProcessPoolExecutor | None = None

    def _start(self) -> ProcessPoolExecutor:
        ctx = multiprocessing.get_context("forkserver")
        ctx.set_forkserver_preload(PRELOAD)
        return ProcessPoolExecutor(max_workers=1, mp_context=ctx)

    async def run(self, fn: Any, *args: Any) -> Any:
        """`fn(*args)` in the worker process."""
        for attempt in (1, 2):
            if self._pool is None:
                self._pool = self._start()
            try:
                return await submit(self._pool, fn, *args)
            except BrokenProcessPool:
                self.close()
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def close(self) -> None:
        """Stop the worker process, if one was started."""
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None


@asynccontextmanager
async def lifespan(app: Any) -> AsyncIterator[None]:
    """Give the app a studio worker for its lifetime (the router's lifespan); stop it,
    and the job pool's processes if any were started (`routes._jobs`), with the app."""
    worker = Worker()
    app.state.studio_worker = worker
    try:
        yield
    finally:
        await asyncio.to_thread(worker.close)
        jobs = getattr(app.state, "studio_jobs", None)
        if jobs is not None:
            await asyncio.to_thread(jobs.close)

"""Replay a whole log, on one core or several, into one `ReplayReport`.

The log is read as raw lines in chunks; each chunk is decoded and replayed
by a worker process that compiled the rules once at start-up, and comes back
as a small `ReplayReport`. The parent merges the reports in log order (so the
report does not depend on ``jobs``), keeps at most ``2 * jobs`` chunks in
flight (so memory does not grow with the log) and calls ``progress`` with
each chunk's size. With ``jobs=1`` everything runs in this process.

Workers are started with ``spawn`` (a fresh interpreter), never ``fork``: the
parent may hold threads (a progress bar, a Redis client) that a fork would
copy in an unknown state.
"""

from __future__ import annotations

import multiprocessing
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from arbiter import dsl
from arbiter.engine.codegen.compiler import compile_plan
from arbiter.engine.log.files import decode_line, log_files, read_lines
from arbiter.engine.log.replay import replay
from arbiter.engine.log.whatif import ReplayReport
from arbiter.engine.plan import Plan

__all__ = ["Chunk", "ReplaySetup", "chunks_from_files", "chunks_from_stream", "replay_log"]

CHUNK = 2000

#: (where: a file or stream name, [(line number or 0, raw record)])
Chunk = tuple[str, list[tuple[int, bytes]]]


@dataclass(frozen=True)
class ReplaySetup:
    """What a worker needs: the rules to replay against, and older rules to name old traces."""

    rules: tuple[str, ...]
    baselines: tuple[str, ...] = ()


class _Worker:
    def __init__(self, setup: ReplaySetup) -> None:
        self.plans: dict[str, Plan] = {}
        self.folders: dict[str, Path] = {}
        for path in setup.rules:
            plan = compile_plan(dsl.load_checked(Path(path)))
            self.plans[plan.name] = plan
            self.folders[plan.name] = Path(path).parent
        self.baselines: dict[str, Plan] = {}
        for path in setup.baselines:
            plan = compile_plan(dsl.load_checked(Path(path)))
            self.baselines[plan.hash] = plan
            # The log may predate a change of the hash itself: a baseline also names its
            # ruleset's records of any version the report has no plan for.
            self.baselines.setdefault(plan.name, plan)
        self.models: dict[str, Any] = {}
        self.notes: list[str] = []

    def models_for(self, plan: Plan) -> Any:
        """The plan's models, loaded on first need (None when they cannot be)."""
        if plan.name not in self.models:
            from arbiter.engine.scoring.loading import load_models

            try:
                self.models[plan.name] = (
                    load_models(plan, self.folders[plan.name]) if plan.model_names else {}
                )
            except dsl.RulesError as exc:
                self.models[plan.name] = None
                self.notes.append(
                    f"{plan.name}: models not loaded ({exc.diagnostics[0].message}); logged "
                    "scores were served in call order, right only where the new rules ask "
                    "a model for the same rows"
                )
        return self.models[plan.name]

    def run(self, chunk: Chunk) -> ReplayReport:
        where, lines = chunk
        report = ReplayReport()
        source = Path(where)
        for number, raw in lines:
            record = decode_line(source, number, raw)
            plan = self.plans.get(record.ruleset.name)
            if plan is None:
                report.skipped += 1
                continue
            models = None if plan.hash == record.ruleset.hash else self.models_for(plan)
            baselines = self.baselines
            if record.ruleset.hash not in baselines and record.ruleset.name in baselines:
                baselines = {record.ruleset.hash: baselines[record.ruleset.name]}
            report.add(replay(plan, record, models), plan, baselines)
        report.notes.extend(n for n in self.notes if n not in report.notes)
        return report


_worker: _Worker | None = None


def _init(setup: ReplaySetup) -> None:
    global _worker
    _worker = _Worker(setup)


def _run(chunk: Chunk) -> ReplayReport:
    assert _worker is not None, "worker not initialised"
    return _worker.run(chunk)


def chunks_from_files(paths: Iterable[str | Path], size: int = CHUNK) -> Iterator[Chunk]:
    """Raw lines of log files (plain, gzipped, or directories of them) in chunks."""
    for path in log_files(paths):
        batch: list[tuple[int, bytes]] = []
        for number, line in read_lines(path):
            batch.append((number, line))
            if len(batch) >= size:
                yield str(path), batch
                batch = []
        if batch:
            yield str(path), batch


def chunks_from_stream(
    redis: Any, stream: str, limit: int | None = None, size: int = CHUNK
) -> Iterator[Chunk]:
    """Raw records of the Redis decision stream, oldest first, in chunks (a sync client)."""
    start = "-"
    seen = 0
    while limit is None or seen < limit:
        count = size if limit is None else min(size, limit - seen)
        batch = redis.xrange(stream, min=start, max="+", count=count)
        if not batch:
            return
        yield stream, [(0, fields[b"r"]) for _id, fields in batch]
        seen += len(batch)
        start = "(" + batch[-1][0].decode()


def replay_log(
    setup: ReplaySetup,
    chunks: Iterable[Chunk],
    *,
    jobs: int = 1,
    progress: Callable[[int], None] | None = None,
) -> ReplayReport:
    """Replay every chunk against ``setup.rules``; the merged report."""
    total = ReplayReport()
    if jobs <= 1:
        worker = _Worker(setup)
        for chunk in chunks:
            total.merge(worker.run(chunk))
            if progress is not None:
                progress(len(chunk[1]))
        return total
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(jobs, mp_context=context, initializer=_init, initargs=(setup,)) as ex:
        pending: deque[tuple[int, Future[ReplayReport]]] = deque()
        for chunk in chunks:
            pending.append((len(chunk[1]), ex.submit(_run, chunk)))
            if len(pending) >= 2 * jobs:
                _collect(total, pending, progress)
        while pending:
            _collect(total, pending, progress)
    return total


def _collect(
    total: ReplayReport,
    pending: deque[tuple[int, Future[ReplayReport]]],
    progress: Callable[[int], None] | None,
) -> None:
    size, future = pending.popleft()
    total.merge(future.result())
    if progress is not None:
        progress(size)


def plan_files(paths: Sequence[Path]) -> tuple[str, ...]:
    """The rules files as strings a worker process can take."""
    return tuple(str(p) for p in paths)

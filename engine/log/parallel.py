"""Replay a whole log, on one core or several, into one `ReplayReport`.

The work is a list of tasks, each replayed whole by one worker into a small
`ReplayReport`, merged by the parent in task order (log order), so the
report does not depend on ``jobs``:

- a `Piece` of a log file (`files.split_logs`): the worker reads its own
  byte range of the file, so the parent reads nothing and sends only the
  file name and two offsets;
- a `Chunk` of raw records the parent read (the Redis stream, or files under
  ``--limit``).

Workers compile the rules once. On Linux they are forked from this process
after it compiled them (`engine.log.processes`: no interpreter start, no
imports, no parse per worker); elsewhere, or with another thread alive, they
are spawned and compile them at start-up. With ``jobs=1`` everything runs in
this process. Progress is counted in records as workers finish them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from arbiter import dsl
from arbiter.engine.codegen.compiler import compile_plan
from arbiter.engine.log import processes
from arbiter.engine.log.files import (
    Piece,
    decode_at,
    decode_line,
    log_files,
    read_lines,
    read_piece,
    split_logs,
)
from arbiter.engine.log.replay import replay
from arbiter.engine.log.whatif import ReplayReport
from arbiter.engine.plan import Plan
from arbiter.engine.records import DecisionRecord
from arbiter.engine.store.compression import plain_records_sync

__all__ = [
    "Chunk",
    "Piece",
    "ReplayPool",
    "ReplaySetup",
    "chunks_from_files",
    "chunks_from_stream",
    "replay_log",
    "split_logs",
    "task_records",
]

CHUNK = 2000

#: (where: a file or stream name, [(line number or 0, raw record)])
Chunk = tuple[str, list[tuple[int, bytes]]]
Task = Chunk | Piece


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

    def run(self, task: Task, tick: processes.Progress = processes.tick) -> ReplayReport:
        """Replay one task; ``tick(n)`` every `processes.TICK` records and at the end."""
        report = ReplayReport()
        done = 0
        for record in task_records(task):
            self.add(report, record)
            done += 1
            if done == processes.TICK:
                tick(done)
                done = 0
        tick(done)
        report.notes.extend(n for n in self.notes if n not in report.notes)
        return report

    def add(self, report: ReplayReport, record: DecisionRecord) -> None:
        """Replay one record into ``report``."""
        plan = self.plans.get(record.ruleset.name)
        if plan is None:
            report.skipped += 1
            return
        models = None if plan.hash == record.ruleset.hash else self.models_for(plan)
        baselines = self.baselines
        if record.ruleset.hash not in baselines and record.ruleset.name in baselines:
            baselines = {record.ruleset.hash: baselines[record.ruleset.name]}
        report.add(replay(plan, record, models), plan, baselines)


def task_records(task: Task) -> Iterator[DecisionRecord]:
    """The records of a task, decoded (a bad line: `LogReadError` naming file and line)."""
    if isinstance(task, Piece):
        for offset, raw in read_piece(task):
            yield decode_at(task.path, offset, raw)
        return
    where, lines = task
    source = Path(where)
    for number, raw in lines:
        yield decode_line(source, number, raw)


_worker: _Worker | None = None  # in a worker process: built there (spawn) or inherited (fork)


def _forget() -> None:
    global _worker
    _worker = None


def _build(setup: ReplaySetup) -> None:
    global _worker
    _worker = _Worker(setup)


def _run(task: Task) -> ReplayReport:
    assert _worker is not None, "worker not initialised"
    return _worker.run(task)


class ReplayPool(processes.PoolOwner):
    """Where replay runs: this process (``jobs=1``) or ``jobs`` worker processes.

    Open it before starting threads of your own (see `engine.log.processes`); it
    compiles the rules on opening, so a rules error surfaces here.
    ``method`` forces a start method (``fork``/``spawn``; tests use it).
    """

    def __init__(self, setup: ReplaySetup, jobs: int = 1, *, method: str | None = None) -> None:
        self.jobs = max(1, jobs)
        self._pool: processes.WorkerPool | None = None
        self.start_method = "none"
        if self.jobs == 1:
            self._local = _Worker(setup)
            return
        self._pool = processes.open_pool(self.jobs, method, _build, setup, _forget)
        self.start_method = self._pool.start_method

    def run(
        self, tasks: Iterable[Task], progress: Callable[[int], None] | None = None
    ) -> ReplayReport:
        """Replay every task; the report merged in task order."""
        total = ReplayReport()
        if self._pool is None:
            tick = progress or (lambda _n: None)
            for task in tasks:
                total.merge(self._local.run(task, tick))
            return total
        for report in self._pool.map(_run, tasks, progress):
            total.merge(report)
        return total


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
        plain = plain_records_sync(redis, [fields[b"r"] for _id, fields in batch])
        yield stream, [(0, blob) for blob in plain if blob is not None]
        seen += len(batch)
        start = "(" + batch[-1][0].decode()


def replay_log(
    setup: ReplaySetup,
    tasks: Iterable[Task],
    *,
    jobs: int = 1,
    progress: Callable[[int], None] | None = None,
    method: str | None = None,
) -> ReplayReport:
    """Replay every task (pieces of log files, or chunks of records) against ``setup.rules``."""
    with ReplayPool(setup, jobs, method=method) as pool:
        return pool.run(tasks, progress)


def plan_files(paths: Sequence[Path]) -> tuple[str, ...]:
    """The rules files as strings a worker process can take."""
    return tuple(str(p) for p in paths)

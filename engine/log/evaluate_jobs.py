"""`arbiter evaluate --jobs N`: the log collected and the bootstrap resampled on several cores.

The two costly steps of an evaluation are spread over worker processes
(`engine.log.processes`: forked after the rules are compiled and the rewards
read, where that is safe):

- *collecting* the rounds: each worker reads its own pieces of the log files
  (or chunks the parent read from the stream) and recomputes the candidate's
  distribution over actions for each record; the parent concatenates the
  rounds in log order, so they are the very list one process would build;
- the *bootstrap*: resamples are cut into blocks, a block computed by a
  worker from the arrays sent with it; every resample has its own seed
  (`estimators.resample_seeds`), so the draws, and the intervals, are the
  same for any ``jobs``.

The reward model's cross-fitting stays in the parent (cheap next to these).
With ``jobs=1`` everything runs in this process.
"""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from arbiter import dsl
from arbiter.engine.codegen.compiler import compile_plan
from arbiter.engine.log import processes
from arbiter.engine.log.estimators import Array, OffPolicyData, bootstrap
from arbiter.engine.log.evaluate import Round, collect
from arbiter.engine.log.parallel import Task, task_records
from arbiter.engine.plan import Plan
from arbiter.engine.records import DecisionRecord

__all__ = ["EvaluatePool", "EvaluateSetup"]

#: Bootstrap blocks per worker (more than one, so a worker slowed by a busy core does not
#: hold the others up).
BLOCKS_PER_JOB = 2


@dataclass(frozen=True)
class EvaluateSetup:
    """What a worker needs: the candidate rules, the rewards and what to do without one."""

    rules: tuple[str, ...]
    rewards: Mapping[tuple[str, str], float]
    missing: str = "zero"


#: (rounds, counts of what was left out, notes for the reader)
Collected = tuple[list[Round], dict[str, Any], list[str]]


class _Collector:
    def __init__(self, setup: EvaluateSetup) -> None:
        self.setup = setup
        self.plans: dict[str, Plan] = {}
        self.folders: dict[str, Path] = {}
        for path in setup.rules:
            plan = compile_plan(dsl.load_checked(Path(path)))
            self.plans[plan.name] = plan
            self.folders[plan.name] = Path(path).parent
        # One ruleset: every record is evaluated against it (as `collect` does with a Plan).
        self.target: Plan | dict[str, Plan] = (
            next(iter(self.plans.values())) if len(self.plans) == 1 else self.plans
        )
        self.models: dict[str, Any] | None = None  # loaded on first use: after a fork
        self.notes: list[str] = []

    def _models(self) -> dict[str, Any]:
        if self.models is None:
            from arbiter.engine.scoring.loading import load_models

            self.models = {}
            for name, plan in self.plans.items():
                try:
                    self.models[name] = load_models(plan, self.folders[name])
                except dsl.RulesError as exc:
                    self.notes.append(
                        f"{name}: models not loaded ({exc.diagnostics[0].message}); "
                        "logged scores are served in call order"
                    )
        return self.models

    def run(self, task: Task, tick: processes.Progress = processes.tick) -> Collected:
        models = self._models()
        rounds, counts = collect(
            self.target,
            _ticking(task_records(task), tick),
            self.setup.rewards,
            missing=self.setup.missing,
            models=models,
        )
        return rounds, counts, list(self.notes)


def _ticking(
    records: Iterator[DecisionRecord], tick: processes.Progress
) -> Iterator[DecisionRecord]:
    done = 0
    for record in records:
        yield record
        done += 1
        if done == processes.TICK:
            tick(done)
            done = 0
    tick(done)


_collector: _Collector | None = None  # in a worker: built there (spawn) or inherited (fork)


def _forget() -> None:
    global _collector
    _collector = None


def _build(setup: EvaluateSetup) -> None:
    global _collector
    _collector = _Collector(setup)


#: A `Round` as a plain tuple of its fields: pickles in about half the time of the dataclass,
#: and the rounds are most of what workers send back.
Packed = tuple[list[tuple[Any, ...]], dict[str, Any], list[str]]


def _collect(task: Task) -> Packed:
    assert _collector is not None, "worker not initialised"
    rounds, counts, notes = _collector.run(task)
    packed = [
        (r.decision_id, r.stratum, r.action, r.reward, r.pscore, r.policy, r.uniform, r.unsupported)
        for r in rounds
    ]
    return packed, counts, notes


def _unpack(parts: Iterable[Packed]) -> Iterator[Collected]:
    for packed, counts, notes in parts:
        yield [Round(*fields) for fields in packed], counts, notes


def _resample(block: tuple[OffPolicyData, float | None, list[np.random.SeedSequence]]) -> Array:
    return bootstrap(*block)


class EvaluatePool(processes.PoolOwner):
    """Where an evaluation runs: this process (``jobs=1``) or ``jobs`` worker processes.

    Open it before starting threads of your own (a progress bar); ``method``
    forces a start method (tests).
    """

    def __init__(self, setup: EvaluateSetup, jobs: int = 1, *, method: str | None = None) -> None:
        self.jobs = max(1, jobs)
        self._pool: processes.WorkerPool | None = None
        self._local = _Collector(setup) if self.jobs == 1 else None
        self.start_method = "none"
        if self.jobs == 1:
            return
        self._pool = processes.open_pool(self.jobs, method, _build, setup, _forget)
        self.start_method = self._pool.start_method

    def collect(
        self, tasks: Iterable[Task], progress: Callable[[int], None] | None = None
    ) -> Collected:
        """The rounds of every task, in task order; summed counts; notes (without repeats)."""
        parts: Iterable[Collected]
        if self._pool is None:
            assert self._local is not None
            local = self._local
            tick = progress or (lambda _n: None)
            parts = (local.run(task, tick) for task in tasks)
        else:
            parts = _unpack(self._pool.map(_collect, tasks, progress))
        rounds: list[Round] = []
        counts: dict[str, Any] = {
            "missing": 0, "dropped": 0, "skipped": 0, "fallbacks": 0, "unsupported": Counter(),
        }  # fmt: skip
        notes: list[str] = []
        for part_rounds, part_counts, part_notes in parts:
            rounds.extend(part_rounds)
            for key, value in part_counts.items():
                counts[key] += value
            notes.extend(n for n in part_notes if n not in notes)
        return rounds, counts, notes

    def bootstrap(
        self, data: OffPolicyData, clip: float | None, seeds: list[np.random.SeedSequence]
    ) -> Array:
        """`estimators.bootstrap`, its resamples computed in blocks by the workers."""
        if self._pool is None or len(seeds) < 2:
            return bootstrap(data, clip, seeds)
        blocks = min(len(seeds), self.jobs * BLOCKS_PER_JOB)
        bounds = [len(seeds) * k // blocks for k in range(blocks + 1)]
        tasks = [(data, clip, seeds[a:b]) for a, b in itertools.pairwise(bounds)]
        return np.concatenate(list(self._pool.map(_resample, tasks)), axis=1)

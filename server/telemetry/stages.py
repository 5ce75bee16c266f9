"""Timing a decision's stages for `arbiter_decide_stage_seconds`.

The pure decision never reads a clock: it calls `lap(stage)` at its stage
boundaries, and the models and bandits are reached through `TimedOracle`.
`StageClock` turns those into one duration per stage, with the time spent in
models and bandits taken out of the rules and arbitration stages it fell in.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from arbiter.engine.decision.oracle import Bandit, LiveOracle, Scorer


class TimedOracle(LiveOracle):
    """The live oracle, adding up the seconds spent in models and in bandits."""

    def __init__(self, models: Mapping[str, Scorer], bandits: Mapping[str, Bandit]) -> None:
        super().__init__(models, bandits)
        self.model_s = 0.0
        self.bandit_s = 0.0

    def score(self, model: str, rows: list[list[float]]) -> list[float]:
        started = time.perf_counter()
        try:
            return super().score(model, rows)
        finally:
            self.model_s += time.perf_counter() - started

    def bandit_pmf(
        self, bandit: str, shared: dict[str, Any], arm_features: list[dict[str, Any]]
    ) -> tuple[list[float], int]:
        started = time.perf_counter()
        try:
            return super().bandit_pmf(bandit, shared, arm_features)
        finally:
            self.bandit_s += time.perf_counter() - started


class StageClock:
    """Seconds per stage of one decision, in the order the stages ran."""

    def __init__(self, oracle: TimedOracle) -> None:
        self.oracle = oracle
        self.spent: dict[str, float] = {}
        self._mark = time.perf_counter()
        self._io = 0.0

    def lap(self, stage: str) -> None:
        """Close `stage`: the time since the last lap, less models and bandits within it."""
        now = time.perf_counter()
        io = self.oracle.model_s + self.oracle.bandit_s
        self.spent[stage] = max(0.0, now - self._mark - (io - self._io))
        self._mark = now
        self._io = io

    def finish(self) -> dict[str, float]:
        """Every stage timed so far, models and bandit included."""
        self.spent["models"] = self.oracle.model_s
        self.spent["bandit"] = self.oracle.bandit_s
        return self.spent

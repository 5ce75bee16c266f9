"""Where model scores and bandit probabilities come from during a decision.

Evaluation never calls onnxruntime or Vowpal Wabbit directly: it asks an
`Oracle`. Live decisions use `LiveOracle` (real models, results recorded);
replay uses `ReplayOracle`, which serves the recorded answers back, so a
replay needs neither the model files nor the bandit state of that moment.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from arbiter.dsl.errors import ArbiterError
from arbiter.engine.records import BanditChoice, DecisionRecord


class Scorer(Protocol):
    """A propensity model: one batched call, P(class 1) per row."""

    @property
    def version(self) -> str: ...

    def score(self, rows: Sequence[Sequence[float]]) -> list[float]: ...


class Bandit(Protocol):
    """A contextual bandit's current policy."""

    @property
    def version(self) -> int: ...

    def pmf(
        self, shared: Mapping[str, Any], actions: Sequence[Mapping[str, Any]]
    ) -> list[float]: ...


class Oracle(Protocol):
    def score(self, model: str, rows: list[list[float]]) -> list[float]: ...

    def bandit_pmf(
        self, bandit: str, shared: dict[str, Any], arm_features: list[dict[str, Any]]
    ) -> tuple[list[float], int]: ...


class OracleError(ArbiterError):
    """A model or bandit could not answer; the decision continues without it."""

    code = "oracle"


class LiveOracle:
    """Calls the real models and bandits, remembering every answer for the record."""

    def __init__(self, models: Mapping[str, Scorer], bandits: Mapping[str, Bandit]) -> None:
        self.models = models
        self.bandits = bandits
        self.scores: dict[str, list[float | None]] = {}

    def score(self, model: str, rows: list[list[float]]) -> list[float]:
        scorer = self.models.get(model)
        if scorer is None:
            raise OracleError(f"model '{model}' is not loaded")
        out = scorer.score(rows)
        self.scores.setdefault(model, []).extend(out)
        return out

    def bandit_pmf(
        self, bandit: str, shared: dict[str, Any], arm_features: list[dict[str, Any]]
    ) -> tuple[list[float], int]:
        b = self.bandits.get(bandit)
        if b is None:
            n = len(arm_features)
            return [1.0 / n] * n, 0
        return b.pmf(shared, arm_features), b.version

    def model_versions(self) -> dict[str, str]:
        return {name: self.models[name].version for name in self.scores if name in self.models}


class ReplayOracle:
    """Serves a record's model scores and bandit pmfs back, in the order they were asked."""

    def __init__(self, record: DecisionRecord) -> None:
        self._scores = {k: list(v) for k, v in record.scores.items()}
        self._bandits: dict[str, BanditChoice] = {b.bandit: b for b in record.bandits}
        self.scores: dict[str, list[float | None]] = {}

    def score(self, model: str, rows: list[list[float]]) -> list[float]:
        queue = self._scores.get(model, [])
        if len(queue) < len(rows):
            raise OracleError(f"the record holds no score of model '{model}' for this call")
        out = [queue.pop(0) for _ in rows]
        if any(s is None for s in out):
            raise OracleError(f"the record holds a failed score of model '{model}'")
        self.scores.setdefault(model, []).extend(out)
        return [float(s) for s in out if s is not None]

    def bandit_pmf(
        self, bandit: str, shared: dict[str, Any], arm_features: list[dict[str, Any]]
    ) -> tuple[list[float], int]:
        choice = self._bandits.get(bandit)
        if choice is None or len(choice.pmf) != len(arm_features):
            raise OracleError(f"the record holds no matching pmf of bandit '{bandit}'")
        return list(choice.pmf), choice.version

    def model_versions(self) -> dict[str, str]:
        return {}


class WhatIfOracle(ReplayOracle):
    """Replays a record against a *new* plan: models scored for real, bandits as logged.

    A new plan may ask a model for other rows than the logged decision did (another
    set of candidates, other inputs), so the logged scores, a queue in call order,
    would land on the wrong rows. Models are deterministic functions of their rows:
    given the model of the time (the same version), scoring again gives the logged
    values where the rows are the same and right values where they differ. Bandit
    pmfs are served from the record as in replay: the candidate is judged with the
    bandit model of the time.
    """

    def __init__(self, record: DecisionRecord, models: Mapping[str, Scorer]) -> None:
        super().__init__(record)
        self.models = models

    def score(self, model: str, rows: list[list[float]]) -> list[float]:
        scorer = self.models.get(model)
        if scorer is None:
            return super().score(model, rows)
        out = scorer.score(rows)
        self.scores.setdefault(model, []).extend(out)
        return out

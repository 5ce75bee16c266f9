"""Off-policy evaluation of a candidate ruleset on a decision log with rewards.

For every logged decision: its first action, that action's logged
probability, its reward (joined by decision id and action; a decision with
no reward counts 0 unless asked to drop it), and the candidate ruleset's
probability of each first action (`engine.log.policy`). From these,
`engine.log.estimators` gives IPS, SNIPS and DR with bootstrap intervals.

The reward model DR needs is deliberately simple and documented: the mean
reward of an action among decisions with the same request context (every
context value), shrunk toward the action's mean reward (itself shrunk toward
the overall mean) with a prior weight of ``SHRINK`` decisions. It is
cross-fitted: decisions are split into ``folds`` by a hash of their id, and
each fold's estimates come from a model fitted on the other folds, so no
decision is scored by a model that saw its own reward.

Also reported: the logged policy's observed mean reward, a uniform-random
baseline (uniform over the eligible candidates) estimated the same way, and
*support*: where the candidate puts probability on a first action the
logging policy never gave a chance for that decision (IPS and SNIPS cannot
see value there; DR sees only the reward model's guess).
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from arbiter.engine.log.estimators import (
    Bootstrap,
    Estimate,
    OffPolicyData,
    bootstrap,
    estimate_all,
)
from arbiter.engine.log.policy import NOTHING, action_distribution, logged_support
from arbiter.engine.plan import Plan
from arbiter.engine.records import DecisionRecord

__all__ = ["SHRINK", "Evaluation", "Round", "collect", "evaluate", "reward_of"]

SHRINK = 10.0


@dataclass
class Round:
    """One logged decision as the estimators see it."""

    decision_id: str
    stratum: tuple[tuple[str, str], ...]
    action: str
    reward: float
    pscore: float
    policy: dict[str, float]  # candidate ruleset: first action -> probability
    uniform: dict[str, float]  # uniform over eligible candidates
    unsupported: float  # candidate's probability on actions the logging policy never offered


@dataclass
class Evaluation:
    """The answer of `arbiter evaluate`."""

    rounds: int
    estimates: list[Estimate]
    uniform: list[Estimate]
    logged_value: float
    logged_low: float
    logged_high: float
    missing_rewards: int
    dropped: int
    skipped: int
    unsupported_rounds: int
    unsupported_mass: float  # mean over rounds of the candidate's unsupported probability
    unsupported_actions: Counter[str] = field(default_factory=Counter)
    bandit_fallbacks: int = 0
    data: OffPolicyData | None = None
    uniform_data: OffPolicyData | None = None


def reward_of(record: DecisionRecord, rewards: Mapping[tuple[str, str], float]) -> float | None:
    """The reward of the record's first action, if one was received."""
    action = record.actions[0].action if record.actions else NOTHING
    return rewards.get((record.decision_id, action))


def collect(
    plan_for: Mapping[str, Plan] | Plan,
    records: Iterable[DecisionRecord],
    rewards: Mapping[tuple[str, str], float],
    *,
    missing: str = "zero",
    models: Mapping[str, Mapping[str, Any]] | None = None,
) -> tuple[list[Round], dict[str, Any]]:
    """The rounds of a log under the candidate plan(s); and counts of what was left out.

    ``models``: per plan name, its loaded models (so the candidate's model scores
    are computed for the rows it asks for; see `engine.log.policy`).
    """
    rounds: list[Round] = []
    counts: dict[str, Any] = {
        "missing": 0, "dropped": 0, "skipped": 0, "fallbacks": 0, "unsupported": Counter(),
    }  # fmt: skip
    for record in records:
        plan = plan_for if isinstance(plan_for, Plan) else plan_for.get(record.ruleset.name)
        if plan is None:
            counts["skipped"] += 1
            continue
        reward = reward_of(record, rewards)
        if reward is None:
            counts["missing"] += 1
            if missing == "drop":
                counts["dropped"] += 1
                continue
            reward = 0.0
        view = action_distribution(plan, record, (models or {}).get(plan.name))
        counts["fallbacks"] += view.bandit_fallbacks
        support = logged_support(record)
        action = record.actions[0].action if record.actions else NOTHING
        unsupported = 0.0
        for a, p in view.probabilities.items():
            if a not in support and p > 0:
                unsupported += p
                counts["unsupported"][a] += 1
        cands = list(record.candidates) or view.candidates
        rounds.append(
            Round(
                record.decision_id,
                tuple(sorted((k, str(v)) for k, v in record.request.context.items())),
                action,
                float(reward),
                support[action],
                view.probabilities,
                {a: 1.0 / len(cands) for a in cands},
                unsupported,
            )
        )
    return rounds, counts


def _fold(decision_id: str, folds: int) -> int:
    digest = hashlib.blake2b(decision_id.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") % folds


class RewardModel:
    """Shrunken mean reward per (context, action); see the module docstring."""

    def __init__(self, rounds: Iterable[Round]) -> None:
        self.sa: dict[tuple[Any, str], list[float]] = {}
        self.a: dict[str, list[float]] = {}
        total = count = 0.0
        for r in rounds:
            acc = self.sa.setdefault((r.stratum, r.action), [0.0, 0.0])
            acc[0] += r.reward
            acc[1] += 1
            acc = self.a.setdefault(r.action, [0.0, 0.0])
            acc[0] += r.reward
            acc[1] += 1
            total += r.reward
            count += 1
        self.mean = total / count if count else 0.0

    def __call__(self, stratum: Any, action: str) -> float:
        s_a, n_a = self.a.get(action, (0.0, 0.0))
        action_mean = (s_a + SHRINK * self.mean) / (n_a + SHRINK)
        s, n = self.sa.get((stratum, action), (0.0, 0.0))
        return (s + SHRINK * action_mean) / (n + SHRINK)


def cross_fitted_q(rounds: list[Round], folds: int, actions: list[str]) -> np.ndarray:
    """``q[i, j]``: the reward model's estimate for round ``i`` and ``actions[j]``, fitted
    without round ``i``'s fold."""
    by_fold: dict[int, list[int]] = {}
    for i, r in enumerate(rounds):
        by_fold.setdefault(_fold(r.decision_id, folds), []).append(i)
    q = np.empty((len(rounds), len(actions)))
    for f, members in by_fold.items():
        model = RewardModel(rounds[i] for g, m in by_fold.items() if g != f for i in m)
        rows: dict[Any, list[float]] = {}  # a fold's rounds share few strata: one row each
        for i in members:
            stratum = rounds[i].stratum
            row = rows.get(stratum)
            if row is None:
                row = rows[stratum] = [model(stratum, a) for a in actions]
            q[i] = row
    return q


def all_actions(rounds: list[Round]) -> list[str]:
    """Every first action a round logged or a policy could serve, sorted."""
    names = set()
    for r in rounds:
        names.add(r.action)
        names.update(r.policy)
        names.update(r.uniform)
    return sorted(names)


def _arrays(rounds: list[Round], q: np.ndarray, actions: list[str], which: str) -> OffPolicyData:
    column = {a: j for j, a in enumerate(actions)}
    dist = np.zeros((len(rounds), len(actions)))
    for i, r in enumerate(rounds):
        for a, p in (r.policy if which == "policy" else r.uniform).items():
            dist[i, column[a]] = p
    logged = np.array([column[r.action] for r in rounds], dtype=np.intp)
    rows = np.arange(len(rounds))
    return OffPolicyData(
        np.array([r.reward for r in rounds], dtype=float),
        np.array([r.pscore for r in rounds], dtype=float),
        dist[rows, logged],
        q[rows, logged],
        np.sum(dist * q, axis=1),
    )


def evaluate(
    rounds: list[Round],
    counts: Mapping[str, Any],
    *,
    clip: float | None = None,
    resamples: int = 1000,
    seed: int = 0,
    folds: int = 5,
    resampler: Bootstrap = bootstrap,
) -> Evaluation:
    """Estimates of the candidate and of the uniform baseline, with the logged value.

    ``resampler`` computes the bootstrap resamples (`EvaluatePool.bootstrap` spreads
    them over worker processes; the numbers are the same).
    """
    if not rounds:
        raise ValueError("no decisions to evaluate (no records of the candidate's ruleset?)")
    actions = all_actions(rounds)
    q = cross_fitted_q(rounds, folds, actions)
    data = _arrays(rounds, q, actions, "policy")
    uniform = _arrays(rounds, q, actions, "uniform")
    rewards = data.reward
    mean = float(np.mean(rewards))
    half = 1.96 * float(np.std(rewards, ddof=1)) / np.sqrt(len(rewards)) if len(rewards) > 1 else 0
    unsupported = [r.unsupported for r in rounds]
    return Evaluation(
        rounds=len(rounds),
        estimates=estimate_all(
            data, clip=clip, resamples=resamples, seed=seed, resampler=resampler
        ),
        uniform=estimate_all(
            uniform, clip=clip, resamples=resamples, seed=seed, resampler=resampler
        ),
        logged_value=mean,
        logged_low=mean - half,
        logged_high=mean + half,
        missing_rewards=int(counts.get("missing", 0)),
        dropped=int(counts.get("dropped", 0)),
        skipped=int(counts.get("skipped", 0)),
        unsupported_rounds=sum(1 for u in unsupported if u > 0),
        unsupported_mass=float(np.mean(unsupported)),
        unsupported_actions=Counter(counts.get("unsupported", {})),
        bandit_fallbacks=int(counts.get("fallbacks", 0)),
        data=data,
        uniform_data=uniform,
    )

"""A ruleset as a policy: its probability of serving each action for a logged decision.

A plan decides deterministically given its inputs, except where a bandit
draws an arm. So the plan's distribution over first actions, for one logged
record, is found by replaying the record once per combination of bandit
draws: each bandit is made to draw each of its arms in turn (its pmf served
back as one-hot), and the first action that results gets the product of the
real pmf's probabilities of those draws. The real pmfs are the logged ones
(`ReplayOracle`): the new ruleset is evaluated with the bandit model of the
time. Where the new plan consults a bandit with a set of arms the log holds
no pmf for, the replay falls back to uniform, and that is reported.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from arbiter.engine.decision.decide import decide
from arbiter.engine.decision.oracle import ReplayOracle, Scorer, WhatIfOracle
from arbiter.engine.plan import Plan
from arbiter.engine.records import DecisionRecord

__all__ = ["MAX_DRAWS", "PolicyView", "action_distribution", "logged_support"]

NOTHING = "(nothing)"
#: Combinations of bandit draws enumerated at most per record (beyond: sampled by the seed).
MAX_DRAWS = 512


@dataclass
class PolicyView:
    """A plan's distribution over first actions for one record, and what it could not see."""

    probabilities: dict[str, float]
    candidates: list[str]  # the eligible actions before arbitration (for the uniform baseline)
    bandit_fallbacks: int = 0  # bandits consulted with no logged pmf for their arms
    notes: list[str] = field(default_factory=list)


class _ForcedDraws:
    """Serves the record's answers, but each bandit's pmf as one-hot on a chosen arm."""

    def __init__(
        self,
        record: DecisionRecord,
        picks: dict[str, int],
        models: Mapping[str, Scorer] | None = None,
    ) -> None:
        self.inner = ReplayOracle(record) if models is None else WhatIfOracle(record, models)
        self.picks = picks
        self.seen: dict[str, list[float]] = {}
        self.scores = self.inner.scores

    def score(self, model: str, rows: list[list[float]]) -> list[float]:
        return self.inner.score(model, rows)

    def bandit_pmf(
        self, bandit: str, shared: dict[str, Any], arm_features: list[dict[str, Any]]
    ) -> tuple[list[float], int]:
        try:
            pmf, version = self.inner.bandit_pmf(bandit, shared, arm_features)
        except Exception:
            n = len(arm_features)
            pmf, version = [1.0 / n] * n, -1
        self.seen[bandit] = pmf
        pick = self.picks.get(bandit)
        if pick is None or not 0 <= pick < len(pmf):
            return pmf, version
        return [1.0 if i == pick else 0.0 for i in range(len(pmf))], version

    def model_versions(self) -> dict[str, str]:
        return {}


def _first(record: DecisionRecord) -> str:
    return record.actions[0].action if record.actions else NOTHING


def action_distribution(
    plan: Plan, record: DecisionRecord, models: Mapping[str, Scorer] | None = None
) -> PolicyView:
    """``plan``'s probability of serving each first action to ``record``'s request.

    ``models``: the plan's loaded models, used when ``plan`` is not the plan that
    made the decision (see `WhatIfOracle`).
    """
    if plan.hash == record.ruleset.hash:
        models = None
    probe = _ForcedDraws(record, {}, models)
    _, first = decide(
        plan,
        record.request,
        record.inputs,
        decision_id=record.decision_id,
        now=record.ts,
        oracle=probe,
    )
    candidates = list(first.candidates) or [_first(first)]
    fallbacks = sum(1 for b in first.bandits if b.version == -1)
    pmfs = dict(probe.seen)
    if not pmfs:
        return PolicyView({_first(first): 1.0}, candidates, fallbacks)
    names = list(pmfs)
    supports = [[i for i, p in enumerate(pmfs[b]) if p > 0] for b in names]
    combos = 1
    for s in supports:
        combos *= len(s)
    if combos > MAX_DRAWS:
        # Too many to enumerate: fall back to the one draw the seed makes.
        return PolicyView(
            {_first(first): 1.0}, candidates, fallbacks, [f"{combos} bandit draws not enumerated"]
        )
    out: dict[str, float] = {}
    for picks in itertools.product(*supports):
        weight = 1.0
        for b, i in zip(names, picks, strict=True):
            weight *= pmfs[b][i]
        forced = _ForcedDraws(record, dict(zip(names, picks, strict=True)), models)
        _, rec = decide(
            plan,
            record.request,
            record.inputs,
            decision_id=record.decision_id,
            now=record.ts,
            oracle=forced,
        )
        # A later bandit may be consulted only after an earlier draw (its arms eligible
        # then); its own pmf is then not in `picks`, and its draw is the seeded one.
        action = _first(rec)
        out[action] = out.get(action, 0.0) + weight
    total = sum(out.values())
    return PolicyView({a: p / total for a, p in out.items()}, candidates, fallbacks)


def logged_support(record: DecisionRecord) -> dict[str, float]:
    """The logging policy's known probabilities of first actions for this record.

    The logged first action has its recorded probability (the bandit's draw,
    or 1.0 when the rules alone chose it). Other arms of a logged bandit that
    had positive probability count as explored (their exact probability of
    ending first is not recorded, so their pmf entry stands in for it).
    """
    logged = _first(record)
    if record.probabilities:
        p = record.probabilities[0]
    elif record.actions and record.actions[0].probability is not None:
        p = float(record.actions[0].probability)
    else:
        p = 1.0
    out = {logged: p}
    for choice in record.bandits:
        if choice.chosen != logged:
            continue
        for arm, q in zip(choice.arms, choice.pmf, strict=True):
            if q > 0 and arm not in out:
                out[arm] = q
    return out

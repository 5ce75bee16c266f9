"""Off-policy estimators of a policy's average reward from logged bandit feedback.

The definitions follow the Open Bandit Pipeline (``obp.ope.estimators``),
for one slot. For logged rounds ``i`` with reward ``r_i``, logged action
``a_i`` served with probability ``p_i`` (the propensity), the evaluated
policy's probability ``pi_i = pi(a_i | x_i)`` of the same action, the
importance weight ``w_i = pi_i / p_i``, optionally clipped (``min(w_i,
clip)``), a reward model's estimate ``q_i = q(x_i, a_i)`` and its value under
the evaluated policy ``v_i = sum_a pi(a | x_i) q(x_i, a)``:

- IPS (inverse propensity scoring): ``mean(w_i r_i)``;
- SNIPS (self-normalised IPS): ``sum(w_i r_i) / sum(w_i)``;
- DR (doubly robust): ``mean(v_i + w_i (r_i - q_i))``.

Confidence intervals are percentile intervals of a seeded nonparametric
bootstrap over rounds; each resample recomputes every estimator from the
resampled rounds (so SNIPS is normalised within the resample). Resample
``b`` draws from its own generator, seeded by the ``b``-th child of
``SeedSequence(seed)``, so any block of resamples can be computed anywhere
(`arbiter evaluate --jobs`) and the intervals stay the same. Also given:
the effective sample size ``(sum w)^2 / sum w^2`` and the largest weight.
Pure NumPy; no I/O.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

__all__ = [
    "Bootstrap",
    "Estimate",
    "OffPolicyData",
    "bootstrap",
    "dr",
    "estimate_all",
    "ips",
    "resample_seeds",
    "snips",
]

Array = npt.NDArray[np.float64]


@dataclass(frozen=True)
class OffPolicyData:
    """One array entry per logged round (see the module docstring for the symbols)."""

    reward: Array
    pscore: Array  # p_i
    pi_logged: Array  # pi(a_i | x_i)
    q_logged: Array  # q(x_i, a_i)
    v_model: Array  # sum_a pi(a | x_i) q(x_i, a)

    def __post_init__(self) -> None:
        n = len(self.reward)
        for name in ("pscore", "pi_logged", "q_logged", "v_model"):
            if len(getattr(self, name)) != n:
                raise ValueError(f"{name} has {len(getattr(self, name))} entries, reward {n}")
        if n and not (self.pscore > 0).all():
            raise ValueError("every logged propensity must be > 0")

    def weights(self, clip: float | None = None) -> Array:
        """Importance weights ``pi_i / p_i``, clipped at ``clip`` if given."""
        w: Array = self.pi_logged / self.pscore
        return w if clip is None else np.minimum(w, clip)


def ips(data: OffPolicyData, clip: float | None = None) -> float:
    """Inverse propensity scoring."""
    return float(np.mean(data.weights(clip) * data.reward))


def snips(data: OffPolicyData, clip: float | None = None) -> float:
    """Self-normalised inverse propensity scoring (0 when every weight is 0)."""
    w = data.weights(clip)
    total = float(np.sum(w))
    return float(np.sum(w * data.reward) / total) if total > 0 else 0.0


def dr(data: OffPolicyData, clip: float | None = None) -> float:
    """Doubly robust."""
    w = data.weights(clip)
    return float(np.mean(data.v_model + w * (data.reward - data.q_logged)))


@dataclass(frozen=True)
class Estimate:
    """One estimator's answer."""

    name: str
    value: float
    low: float  # 95% interval (or the level asked for)
    high: float
    ess: float
    max_weight: float


def _index(data: OffPolicyData, idx: npt.NDArray[np.intp]) -> OffPolicyData:
    return OffPolicyData(
        data.reward[idx], data.pscore[idx], data.pi_logged[idx], data.q_logged[idx],
        data.v_model[idx],
    )  # fmt: skip


ESTIMATORS: dict[str, Callable[[OffPolicyData, float | None], float]] = {
    "IPS": ips,
    "SNIPS": snips,
    "DR": dr,
}


def resample_seeds(seed: int, resamples: int) -> list[np.random.SeedSequence]:
    """One independent seed per bootstrap resample (see the module docstring)."""
    return np.random.SeedSequence(seed).spawn(resamples)


def bootstrap(
    data: OffPolicyData, clip: float | None, seeds: list[np.random.SeedSequence]
) -> Array:
    """``draws[k, b]``: estimator ``k`` (in `ESTIMATORS` order) on the resample of ``seeds[b]``."""
    n = len(data.reward)
    draws: Array = np.empty((len(ESTIMATORS), len(seeds)))
    for b, s in enumerate(seeds):
        part = _index(data, np.random.default_rng(s).integers(0, n, n))
        for k, fn in enumerate(ESTIMATORS.values()):
            draws[k, b] = fn(part, clip)
    return draws


#: How the resamples are computed: `bootstrap` itself, or a parallel stand-in that returns
#: the same array (`engine.log.evaluate_jobs`).
Bootstrap = Callable[[OffPolicyData, "float | None", "list[np.random.SeedSequence]"], Array]


def estimate_all(
    data: OffPolicyData,
    *,
    clip: float | None = None,
    resamples: int = 1000,
    seed: int = 0,
    level: float = 0.95,
    resampler: Bootstrap = bootstrap,
) -> list[Estimate]:
    """IPS, SNIPS and DR with bootstrap intervals, ESS and the largest weight."""
    n = len(data.reward)
    if n == 0:
        raise ValueError("no logged rounds to estimate from")
    w = data.weights(clip)
    ess = float(np.sum(w) ** 2 / np.sum(w**2)) if np.any(w > 0) else 0.0
    largest = float(np.max(w))
    draws = resampler(data, clip, resample_seeds(seed, resamples))
    alpha = (1 - level) / 2
    out = []
    for k, (name, fn) in enumerate(ESTIMATORS.items()):
        low, high = np.quantile(draws[k], [alpha, 1 - alpha])
        out.append(Estimate(name, fn(data, clip), float(low), float(high), ess, largest))
    return out

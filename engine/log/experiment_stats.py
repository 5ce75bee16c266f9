"""The statistics of an experiment report: pure functions of per-group counts and sums.

A group is summarised by :class:`GroupCounts` (customers, conversions, and
the sum and sum of squares of each customer's reward), so these functions
need no raw data and are checked against scipy/statsmodels on the same counts.

- conversion rate: Wilson score interval (good coverage at small counts and
  at rates near 0 or 1, where the normal interval is poor);
- mean reward: Student's t interval;
- absolute uplift of a rate: normal interval on the difference (unpooled
  variance); relative uplift: normal interval on log(rate ratio), the delta
  method, mapped back;
- p-value of a rate difference: two-proportion z-test (pooled variance, as
  ``statsmodels.stats.proportion.proportions_ztest``), two-sided;
- p-value of a reward difference: Welch's t-test (``scipy.stats.ttest_ind``
  with ``equal_var=False``), two-sided, with its interval on the difference;
- sample-ratio mismatch: chi-squared goodness of fit of the customer counts
  against the declared shares (``scipy.stats.chisquare``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from scipy import stats

__all__ = [
    "GroupCounts",
    "Interval",
    "mean_interval",
    "rate_uplift",
    "required_sample_size",
    "sample_ratio_p",
    "two_proportion_p",
    "welch",
    "wilson",
]

Z95 = float(stats.norm.ppf(0.975))


@dataclass(frozen=True, slots=True)
class Interval:
    low: float
    high: float


@dataclass(frozen=True, slots=True)
class GroupCounts:
    """One group's customers, converted customers and reward sums (per customer)."""

    customers: int
    conversions: int
    reward_sum: float = 0.0
    reward_sq_sum: float = 0.0

    @property
    def rate(self) -> float:
        return self.conversions / self.customers if self.customers else math.nan

    @property
    def mean_reward(self) -> float:
        return self.reward_sum / self.customers if self.customers else math.nan

    @property
    def reward_var(self) -> float:
        """Sample variance (n - 1) of the per-customer reward."""
        n = self.customers
        if n < 2:
            return math.nan
        return max(0.0, (self.reward_sq_sum - self.reward_sum**2 / n) / (n - 1))


def wilson(conversions: int, n: int, z: float = Z95) -> Interval:
    """Wilson score interval of a proportion."""
    if n == 0:
        return Interval(math.nan, math.nan)
    p = conversions / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return Interval(max(0.0, centre - half), min(1.0, centre + half))


def mean_interval(g: GroupCounts, level: float = 0.95) -> Interval:
    """Student's t interval of a group's mean reward."""
    if g.customers < 2:
        return Interval(math.nan, math.nan)
    se = math.sqrt(g.reward_var / g.customers)
    t = float(stats.t.ppf(0.5 + level / 2, g.customers - 1))
    return Interval(g.mean_reward - t * se, g.mean_reward + t * se)


def two_proportion_p(a: GroupCounts, b: GroupCounts) -> float:
    """Two-sided p-value of the pooled two-proportion z-test (b against a)."""
    n1, n2 = b.customers, a.customers
    if not n1 or not n2:
        return math.nan
    pooled = (a.conversions + b.conversions) / (n1 + n2)
    se = math.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2))
    if se == 0:
        return 1.0 if b.rate == a.rate else 0.0
    z = (b.rate - a.rate) / se
    return float(2 * stats.norm.sf(abs(z)))


@dataclass(frozen=True, slots=True)
class Uplift:
    absolute: float
    absolute_ci: Interval
    relative: float
    relative_ci: Interval
    p_value: float


def rate_uplift(control: GroupCounts, variant: GroupCounts, z: float = Z95) -> Uplift:
    """The variant's conversion rate against the control's."""
    p0, p1 = control.rate, variant.rate
    n0, n1 = control.customers, variant.customers
    if not n0 or not n1:
        nan = Interval(math.nan, math.nan)
        return Uplift(math.nan, nan, math.nan, nan, math.nan)
    diff = p1 - p0
    se = math.sqrt(p0 * (1 - p0) / n0 + p1 * (1 - p1) / n1)
    absolute_ci = Interval(diff - z * se, diff + z * se)
    if p0 > 0 and p1 > 0:
        relative = p1 / p0 - 1
        se_log = math.sqrt((1 - p1) / (n1 * p1) + (1 - p0) / (n0 * p0))
        log_ratio = math.log(p1 / p0)
        relative_ci = Interval(
            math.exp(log_ratio - z * se_log) - 1, math.exp(log_ratio + z * se_log) - 1
        )
    else:
        relative = math.nan if p0 == 0 else -1.0
        relative_ci = Interval(math.nan, math.nan)
    return Uplift(diff, absolute_ci, relative, relative_ci, two_proportion_p(control, variant))


@dataclass(frozen=True, slots=True)
class Welch:
    difference: float
    ci: Interval
    p_value: float
    df: float


def welch(control: GroupCounts, variant: GroupCounts, level: float = 0.95) -> Welch:
    """Welch's t-test of the mean rewards (variant - control), with its interval."""
    n0, n1 = control.customers, variant.customers
    diff = variant.mean_reward - control.mean_reward
    if n0 < 2 or n1 < 2:
        return Welch(diff, Interval(math.nan, math.nan), math.nan, math.nan)
    v0, v1 = control.reward_var / n0, variant.reward_var / n1
    se2 = v0 + v1
    if se2 == 0:
        p = 1.0 if diff == 0 else 0.0
        return Welch(diff, Interval(diff, diff), p, math.nan)
    df = se2**2 / (v0**2 / (n0 - 1) + v1**2 / (n1 - 1))
    t = diff / math.sqrt(se2)
    p = float(2 * stats.t.sf(abs(t), df))
    q = float(stats.t.ppf(0.5 + level / 2, df))
    half = q * math.sqrt(se2)
    return Welch(diff, Interval(diff - half, diff + half), p, df)


def sample_ratio_p(observed: list[int], shares: list[float]) -> float:
    """p-value of the chi-squared test of the observed counts against the declared shares."""
    total = sum(observed)
    if total == 0 or len(observed) < 2:
        return math.nan
    weight = sum(shares)
    expected = [total * s / weight for s in shares]
    chi2 = sum((o - e) ** 2 / e for o, e in zip(observed, expected, strict=True) if e > 0)
    return float(stats.chi2.sf(chi2, len(observed) - 1))


def required_sample_size(
    base_rate: float, relative_uplift: float, alpha: float = 0.05, power: float = 0.8
) -> int:
    """Customers per group for the two-sided two-proportion test to detect the uplift.

    The usual normal-approximation formula: n = (z_{1-a/2} + z_{power})^2 *
    (p0 (1 - p0) + p1 (1 - p1)) / (p1 - p0)^2.
    """
    p0 = base_rate
    p1 = base_rate * (1 + relative_uplift)
    za = float(stats.norm.ppf(1 - alpha / 2))
    zb = float(stats.norm.ppf(power))
    n = (za + zb) ** 2 * (p0 * (1 - p0) + p1 * (1 - p1)) / (p1 - p0) ** 2
    return math.ceil(n)

"""engine.log.experiment_stats against scipy and statsmodels on the same counts, and by simulation.

The simulations draw per-group conversion counts (binomial, seeded) and run
the report's own verdict over them: 1,000 A/A runs must call a false winner
in at most 5.5% of runs, and 1,000 runs with a 10% relative uplift at the
documented sample size must find it in at least 80%.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats
from statsmodels.stats.proportion import proportion_confint, proportions_ztest

from arbiter.engine.log.experiment_stats import (
    GroupCounts,
    mean_interval,
    rate_uplift,
    required_sample_size,
    sample_ratio_p,
    welch,
    wilson,
)
from arbiter.engine.log.experiments import GroupReport, _verdict

CASES = [(120, 1000, 150, 1000), (3, 40, 9, 45), (480, 5210, 555, 5188), (0, 300, 4, 310)]


@pytest.mark.parametrize(("c0", "n0", "c1", "n1"), CASES)
def test_rates_intervals_and_z_test_match_statsmodels(c0: int, n0: int, c1: int, n1: int) -> None:
    a, b = GroupCounts(n0, c0), GroupCounts(n1, c1)
    for conv, n in ((c0, n0), (c1, n1)):
        low, high = proportion_confint(conv, n, alpha=0.05, method="wilson")
        ci = wilson(conv, n)
        assert ci.low == pytest.approx(low, abs=1e-9) and ci.high == pytest.approx(high, abs=1e-9)
    _, p = proportions_ztest([c1, c0], [n1, n0])
    up = rate_uplift(a, b)
    assert up.p_value == pytest.approx(p, abs=1e-9)
    p0, p1 = c0 / n0, c1 / n1
    se = math.sqrt(p0 * (1 - p0) / n0 + p1 * (1 - p1) / n1)
    z = stats.norm.ppf(0.975)
    assert up.absolute == pytest.approx(p1 - p0, abs=1e-12)
    assert up.absolute_ci.low == pytest.approx(p1 - p0 - z * se, abs=1e-9)
    if c0 and c1:
        # statsmodels' log-ratio interval for the risk ratio, shifted to an uplift.
        from statsmodels.stats.proportion import confint_proportions_2indep

        low, high = confint_proportions_2indep(c1, n1, c0, n0, method="log", compare="ratio")
        assert up.relative_ci.low == pytest.approx(low - 1, abs=1e-9)
        assert up.relative_ci.high == pytest.approx(high - 1, abs=1e-9)


def test_welch_and_mean_interval_match_scipy() -> None:
    rng = np.random.default_rng(7)
    x0 = rng.exponential(20.0, 400) * (rng.random(400) < 0.2)
    x1 = rng.exponential(26.0, 350) * (rng.random(350) < 0.22)
    g0 = GroupCounts(len(x0), int((x0 > 0).sum()), float(x0.sum()), float((x0**2).sum()))
    g1 = GroupCounts(len(x1), int((x1 > 0).sum()), float(x1.sum()), float((x1**2).sum()))
    w = welch(g0, g1)
    ref = stats.ttest_ind(x1, x0, equal_var=False)
    assert w.p_value == pytest.approx(ref.pvalue, abs=1e-9)
    ci = ref.confidence_interval(0.95)
    assert (w.ci.low, w.ci.high) == (
        pytest.approx(ci.low, abs=1e-9),
        pytest.approx(ci.high, abs=1e-9),
    )
    m = mean_interval(g1)
    low, high = stats.t.interval(0.95, len(x1) - 1, loc=x1.mean(), scale=stats.sem(x1))
    assert (m.low, m.high) == (pytest.approx(low, abs=1e-9), pytest.approx(high, abs=1e-9))


def test_sample_ratio_check_matches_scipy_chisquare() -> None:
    observed, shares = [5100, 4830, 70], [0.5, 0.49, 0.01]
    expected = [sum(observed) * s for s in shares]
    assert sample_ratio_p(observed, shares) == pytest.approx(
        stats.chisquare(observed, expected).pvalue, abs=1e-12
    )
    assert sample_ratio_p([5000, 5000], [0.5, 0.5]) == pytest.approx(1.0)
    assert sample_ratio_p([5300, 4700], [0.5, 0.5]) < 0.001


def _verdict_for(rng: np.random.Generator, n: int, p0: float, p1: float) -> str | None:
    c0, c1 = int(rng.binomial(n, p0)), int(rng.binomial(n, p1))
    a, b = GroupCounts(n, c0), GroupCounts(n, c1)
    groups = [
        GroupReport("a", 0.5, n, n, c0, a.rate, wilson(c0, n), a.mean_reward, mean_interval(a)),
        GroupReport("b", 0.5, n, n, c1, b.rate, wilson(c1, n), b.mean_reward, mean_interval(b)),
    ]
    groups[1].uplift = rate_uplift(a, b)
    _, winner = _verdict(groups, True, 1000, 20, 0.05)
    return winner


def test_a_a_simulation_calls_a_false_winner_rarely() -> None:
    rng = np.random.default_rng(2026)
    false = sum(_verdict_for(rng, 10_000, 0.10, 0.10) is not None for _ in range(1000))
    assert false / 1000 <= 0.055, false


def test_a_ten_percent_uplift_is_found_at_the_documented_sample_size() -> None:
    n = required_sample_size(0.10, 0.10)
    assert n == 14_749  # the figure docs/outcomes.md gives
    rng = np.random.default_rng(2027)
    found = sum(_verdict_for(rng, n, 0.10, 0.11) == "b" for _ in range(1000))
    assert found / 1000 >= 0.80, found

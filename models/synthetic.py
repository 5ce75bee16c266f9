"""Synthetic customer data with known ground truths, for training the example models.

One row is one customer at a scoring moment, with RFM-style behaviour features,
the offer they were shown at that moment, and three outcomes drawn from known
probability functions: churn in the next 90 days, a purchase in the next 7 days,
and a click on the shown offer. Everything comes from one seeded numpy Generator,
so the same ``(n, seed)`` always gives the same data, on any machine.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]

FEATURES: tuple[str, ...] = (
    "days_since_last_purchase",
    "orders_90d",
    "lifetime_value",
    "visits_30d",
    "add_to_cart_7d",
    "email_opens_30d",
    "tenure_days",
    "offer_value",
    "offer_discount_pct",
)
LABELS: tuple[str, ...] = ("churned_90d", "purchased_7d", "clicked_offer")

OFFER_VALUES = np.array([5.0, 10.0, 15.0, 20.0, 25.0, 50.0])
OFFER_DISCOUNTS = np.array([0.0, 5.0, 10.0, 15.0, 20.0, 25.0, 30.0])


@dataclass(frozen=True)
class CustomerData:
    """Feature columns, 0/1 label columns and the true P(label = 1) of every row."""

    features: dict[str, FloatArray]
    labels: dict[str, npt.NDArray[np.int64]]
    true_probability: dict[str, FloatArray]

    def __len__(self) -> int:
        return len(next(iter(self.features.values())))

    def matrix(self, names: Sequence[str]) -> npt.NDArray[np.float32]:
        """The named feature columns, in the given order, as a float32 ``[rows, len(names)]``.

        float32 because that is what the ONNX models take: training, checking and
        serving then all see exactly the same numbers.
        """
        return np.column_stack([self.features[name] for name in names]).astype(np.float32)


def make_customers(n: int, seed: int = 7) -> CustomerData:
    """Generate ``n`` synthetic customers, reproducibly from ``seed``."""
    if n <= 0:
        raise ValueError(f"n must be positive, got {n}")
    rng = np.random.default_rng(seed)

    # One latent "engagement" drives all behaviour, so the features are correlated
    # the way real RFM features are (frequent visitors order more and spend more).
    engagement = rng.normal(0.0, 1.0, n)
    visits_30d = rng.poisson(np.exp(1.3 + 0.6 * engagement)).astype(np.float64)
    orders_90d = rng.poisson(np.exp(-0.3 + 0.7 * engagement)).astype(np.float64)
    # Recency agrees with frequency: with k orders spread uniformly over the last
    # 90 days, the most recent is 90 * Beta(1, k) days ago; customers with none
    # lapsed somewhere in the last two years.
    recent = 90.0 * rng.beta(1.0, np.maximum(orders_90d, 1.0))
    lapsed = 90.0 + rng.gamma(2.0, 60.0, n)
    days_since_last_purchase = np.where(
        orders_90d > 0, np.floor(recent), np.minimum(lapsed, 730.0).round()
    )
    lifetime_value = rng.lognormal(4.6 + 0.4 * engagement + 0.1 * orders_90d, 0.7).round(2)
    add_to_cart_7d = rng.poisson(0.06 * visits_30d * np.exp(0.3 * engagement)).astype(np.float64)
    email_opens_30d = rng.poisson(np.exp(0.5 + 0.4 * engagement)).astype(np.float64)
    tenure_days = rng.integers(1, 2000, n).astype(np.float64)
    offer_value = rng.choice(OFFER_VALUES, n)
    offer_discount_pct = rng.choice(OFFER_DISCOUNTS, n)

    features = {
        "days_since_last_purchase": days_since_last_purchase,
        "orders_90d": orders_90d,
        "lifetime_value": lifetime_value,
        "visits_30d": visits_30d,
        "add_to_cart_7d": add_to_cart_7d,
        "email_opens_30d": email_opens_30d,
        "tenure_days": tenure_days,
        "offer_value": offer_value,
        "offer_discount_pct": offer_discount_pct,
    }
    true_probability = {
        "churned_90d": _churn_probability(features),
        "purchased_7d": _purchase_probability(features),
        "clicked_offer": _offer_click_probability(features),
    }
    labels = {name: (rng.random(n) < p).astype(np.int64) for name, p in true_probability.items()}
    return CustomerData(features=features, labels=labels, true_probability=true_probability)


def _sigmoid(z: FloatArray) -> FloatArray:
    return 1.0 / (1.0 + np.exp(-z))


def _churn_probability(f: dict[str, FloatArray]) -> FloatArray:
    # Logistic in the raw features except for log(LTV), so a plain logistic
    # regression is close to, but not exactly, the truth.
    z = (
        -1.0
        + 0.012 * f["days_since_last_purchase"]
        - 0.45 * f["orders_90d"]
        - 0.25 * np.log1p(f["lifetime_value"])
        - 0.08 * f["visits_30d"]
    )
    return _sigmoid(z)


def _purchase_probability(f: dict[str, FloatArray]) -> FloatArray:
    # Thresholds, saturation and an interaction: the shape a tree ensemble is for.
    carts = f["add_to_cart_7d"]
    visits = f["visits_30d"]
    days = f["days_since_last_purchase"]
    z = (
        -3.2
        + 1.1 * np.minimum(carts, 3.0)
        + 0.9 * ((carts > 0) & (visits >= 8))
        + 0.08 * np.minimum(visits, 20.0)
        + 0.3 * np.minimum(f["orders_90d"], 5.0)
        + 0.6 * (days < 14)
        - 1.2 * (days > 180)
        + 0.4 * (f["lifetime_value"] > 300)
    )
    return _sigmoid(z)


def _offer_click_probability(f: dict[str, FloatArray]) -> FloatArray:
    z = (
        -3.0
        + 0.15 * f["orders_90d"]
        + 0.0008 * f["lifetime_value"]
        + 0.06 * f["visits_30d"]
        + 0.02 * f["offer_value"]
        + 0.05 * f["offer_discount_pct"]
    )
    return _sigmoid(z)

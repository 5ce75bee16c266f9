"""A ruleset with real ONNX models: a customer-level churn model and a per-offer click model.

`write_scored(directory)` copies `models/churn.onnx` and `models/offer_click.onnx`
next to a `scored.rules` that uses both, so a test may break or replace a model
file without touching the committed ones. `expected_*` compute what the
decision must contain by calling onnxruntime directly, not through Arbiter.
"""

from __future__ import annotations

import hashlib
import shutil
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import onnxruntime as ort

from support.paths import ROOT_DIR

MODELS_DIR = ROOT_DIR / "models"

SCORED_RULES = """ruleset scored

profile { days_since: number, orders_90d: int, lifetime_value: number, visits_30d: int }
context { channel: one of [web, app] }

# Inputs in the order models/churn.schema.json and offer_click.schema.json list them.
model churn = onnx "churn.onnx"
  inputs (profile.days_since, profile.orders_90d, profile.lifetime_value, profile.visits_30d)

model offer_click = onnx "offer_click.onnx"
  inputs (profile.orders_90d, profile.lifetime_value, profile.visits_30d, value,
          action.discount_pct)
  per action

segment at_risk = churn > 0.5

action attributes { discount_pct: number }

action retention_voucher { value 40, discount_pct 20, payload { code: "STAY20" } }
action new_arrivals { value 15, discount_pct 5 }
action bestsellers { value 5, discount_pct 0 }
action fallback { value 1, discount_pct 0 }

when at_risk offer retention_voucher
when true offer new_arrivals
when context.channel == web offer bestsellers

arbitrate by offer_click * value, top 3
default fallback
"""

#: (value, discount_pct) of each action, as declared above.
OFFERS = {
    "retention_voucher": (40.0, 20.0),
    "new_arrivals": (15.0, 5.0),
    "bestsellers": (5.0, 0.0),
}

#: A lapsed customer (churn well above 0.5) and a loyal one (well below).
LAPSED = {"days_since": 200.0, "orders_90d": 0, "lifetime_value": 40.0, "visits_30d": 0}
LOYAL = {"days_since": 3.0, "orders_90d": 6, "lifetime_value": 4200.0, "visits_30d": 22}


def write_scored(directory: Path, text: str = SCORED_RULES) -> Path:
    """`scored.rules` and copies of the two models in `directory`; the rules file's path."""
    directory.mkdir(parents=True, exist_ok=True)
    for name in ("churn.onnx", "offer_click.onnx"):
        shutil.copy(MODELS_DIR / name, directory / name)
    path = directory / "scored.rules"
    path.write_text(text, encoding="utf-8")
    return path


def onnx_scores(model_file: Path, rows: list[list[float]]) -> list[float]:
    """P(class 1) per row, from a fresh onnxruntime session: Arbiter is not involved."""
    session = ort.InferenceSession(str(model_file), providers=["CPUExecutionProvider"])
    (probabilities,) = session.run(["probabilities"], {"features": np.array(rows, np.float32)})
    return [float(p) for p in probabilities[:, 1]]


def file_version(model_file: Path) -> str:
    """A model's version as the models README defines it: 12 hex digits of its SHA-256."""
    return hashlib.sha256(model_file.read_bytes()).hexdigest()[:12]


def expected_churn(directory: Path, p: Mapping[str, float]) -> float:
    row = [p["days_since"], p["orders_90d"], p["lifetime_value"], p["visits_30d"]]
    return onnx_scores(directory / "churn.onnx", [row])[0]


def expected_clicks(directory: Path, p: Mapping[str, float], offers: list[str]) -> list[float]:
    rows = [
        [p["orders_90d"], p["lifetime_value"], p["visits_30d"], *OFFERS[name]] for name in offers
    ]
    return onnx_scores(directory / "offer_click.onnx", rows)

"""Train the example propensity models on synthetic data and export them to ONNX.

Run from the repository root::

    python -m models.train                      # rebuild models/*.onnx in place
    python -m models.train --out DIR --rows N   # elsewhere, or on a different size

Each model is written as ``<name>.onnx`` (one float input tensor ``features`` of
shape ``[None, n]``; outputs ``label`` and ``probabilities`` ``[None, 2]``) with a
``<name>.schema.json`` beside it naming the inputs in order. Same rows and seed
give byte-identical files with the same library versions.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import onnx
import sklearn
from skl2onnx import to_onnx
from skl2onnx.common.data_types import FloatTensorType
from sklearn.ensemble import GradientBoostingClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import train_test_split
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler

from models.synthetic import CustomerData, make_customers

DEFAULT_ROWS = 40_000
DEFAULT_SEED = 7
HOLDOUT_FRACTION = 0.2
INPUT_NAME = "features"
# Pinned so that a newer skl2onnx does not silently raise the opset past what the
# oldest supported onnxruntime (1.17) can run, and so rebuilds are reproducible.
TARGET_OPSET = {"": 17, "ai.onnx.ml": 3}


@dataclass(frozen=True)
class ModelSpec:
    """What one model predicts, from which inputs (in order), and how it is built."""

    name: str
    label: str
    inputs: tuple[str, ...]
    description: str
    build: Callable[[], Any]


def _logistic_regression() -> Pipeline:
    # Standardising first lets lbfgs converge quickly on raw RFM scales (days in the
    # hundreds, LTV in the thousands); the scaler is exported into the same graph.
    return make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=1000))


def _gradient_boosting() -> GradientBoostingClassifier:
    return GradientBoostingClassifier(
        n_estimators=100, max_depth=3, learning_rate=0.1, random_state=DEFAULT_SEED
    )


MODELS: tuple[ModelSpec, ...] = (
    ModelSpec(
        name="churn",
        label="churned_90d",
        inputs=("days_since_last_purchase", "orders_90d", "lifetime_value", "visits_30d"),
        description="P(no purchase in the next 90 days); logistic regression",
        build=_logistic_regression,
    ),
    ModelSpec(
        name="purchase_7d",
        label="purchased_7d",
        inputs=(
            "visits_30d",
            "add_to_cart_7d",
            "orders_90d",
            "days_since_last_purchase",
            "lifetime_value",
        ),
        description="P(purchase in the next 7 days); gradient boosting, 100 trees of depth 3",
        build=_gradient_boosting,
    ),
    ModelSpec(
        name="offer_click",
        label="clicked_offer",
        inputs=(
            "orders_90d",
            "lifetime_value",
            "visits_30d",
            "offer_value",
            "offer_discount_pct",
        ),
        description="P(click on a shown offer), scored once per candidate offer; "
        "logistic regression",
        build=_logistic_regression,
    ),
)


@dataclass(frozen=True)
class TrainedModel:
    """A fitted estimator with the facts recorded in its schema file."""

    spec: ModelSpec
    estimator: Any
    trained_rows: int
    auc_holdout: float


def train(spec: ModelSpec, data: CustomerData, seed: int = DEFAULT_SEED) -> TrainedModel:
    """Fit ``spec`` on a stratified 80% of ``data``; report AUC on the other 20%."""
    x = data.matrix(spec.inputs)
    y = data.labels[spec.label]
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=HOLDOUT_FRACTION, random_state=seed, stratify=y
    )
    estimator = spec.build()
    estimator.fit(x_train, y_train)
    auc = float(roc_auc_score(y_test, estimator.predict_proba(x_test)[:, 1]))
    return TrainedModel(spec, estimator, trained_rows=len(y_train), auc_holdout=auc)


def to_onnx_model(trained: TrainedModel) -> onnx.ModelProto:
    """Convert to ONNX: input ``features`` float ``[None, n]``, a plain probability tensor."""
    spec = trained.spec
    final_step = (
        trained.estimator.steps[-1][1]
        if isinstance(trained.estimator, Pipeline)
        else trained.estimator
    )
    model: onnx.ModelProto = to_onnx(
        trained.estimator,
        initial_types=[(INPUT_NAME, FloatTensorType([None, len(spec.inputs)]))],
        # Without zipmap the output is a [None, 2] tensor rather than a list of
        # {class: probability} maps, which is far cheaper to read back in Python.
        options={id(final_step): {"zipmap": False}},
        target_opset=TARGET_OPSET,
    )
    _normalise_opset_imports(model)
    model.doc_string = spec.description
    onnx.helper.set_model_props(model, {"name": spec.name, "inputs": json.dumps(list(spec.inputs))})
    return model


def _normalise_opset_imports(model: onnx.ModelProto) -> None:
    # skl2onnx lists opset imports in set order, which follows PYTHONHASHSEED and
    # sometimes repeats a domain; one sorted entry per domain keeps rebuilds
    # byte-identical across processes.
    versions: dict[str, int] = {}
    for opset in model.opset_import:
        versions[opset.domain] = max(opset.version, versions.get(opset.domain, 0))
    del model.opset_import[:]
    model.opset_import.extend(
        onnx.helper.make_opsetid(domain, version) for domain, version in sorted(versions.items())
    )


def schema(trained: TrainedModel) -> dict[str, Any]:
    """The ``<name>.schema.json`` document for a trained model."""
    return {
        "name": trained.spec.name,
        "inputs": [{"name": name, "type": "float"} for name in trained.spec.inputs],
        "output": "probability of class 1",
        "trained_rows": trained.trained_rows,
        "sklearn_version": sklearn.__version__,
        "auc_holdout": round(trained.auc_holdout, 4),
    }


def export(trained: TrainedModel, out_dir: Path) -> Path:
    """Write ``<name>.onnx`` and ``<name>.schema.json`` into ``out_dir``; return the .onnx path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    onnx_path = out_dir / f"{trained.spec.name}.onnx"
    onnx_path.write_bytes(to_onnx_model(trained).SerializeToString())
    schema_path = out_dir / f"{trained.spec.name}.schema.json"
    schema_path.write_text(json.dumps(schema(trained), indent=2) + "\n", encoding="utf-8")
    return onnx_path


def build_all(
    out_dir: Path, rows: int = DEFAULT_ROWS, seed: int = DEFAULT_SEED
) -> list[TrainedModel]:
    """Generate the data once, then train and export every model in ``MODELS``."""
    data = make_customers(rows, seed)
    trained = [train(spec, data, seed) for spec in MODELS]
    for model in trained:
        export(model, out_dir)
    return trained


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--out",
        type=Path,
        default=Path(__file__).resolve().parent,
        help="directory for the .onnx and .schema.json files (default: models/)",
    )
    parser.add_argument("--rows", type=int, default=DEFAULT_ROWS, help="customers to generate")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED, help="data and split seed")
    args = parser.parse_args(argv)
    if args.rows < 100:
        parser.error("--rows must be at least 100")
    for model in build_all(args.out, args.rows, args.seed):
        path = args.out / f"{model.spec.name}.onnx"
        print(
            f"{path}  inputs={len(model.spec.inputs)}  trained_rows={model.trained_rows}  "
            f"auc_holdout={model.auc_holdout:.4f}  size={path.stat().st_size} bytes"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

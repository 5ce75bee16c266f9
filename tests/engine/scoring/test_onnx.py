"""engine.scoring.onnx against real onnxruntime, with models trained here from synthetic data."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper
from support.paths import ROOT_DIR

from arbiter.engine.scoring.onnx import ModelLoadError, OnnxModel
from models.synthetic import make_customers
from models.train import MODELS, TrainedModel, export, train

COMMITTED_MODELS = ROOT_DIR / "models"
TRAIN_ROWS = 2_000
SPECS = {spec.name: spec for spec in MODELS}

# The contract the example rulesets and the engine rely on: names and input order.
EXPECTED_INPUTS = {
    "churn": ["days_since_last_purchase", "orders_90d", "lifetime_value", "visits_30d"],
    "purchase_7d": [
        "visits_30d",
        "add_to_cart_7d",
        "orders_90d",
        "days_since_last_purchase",
        "lifetime_value",
    ],
    "offer_click": [
        "orders_90d",
        "lifetime_value",
        "visits_30d",
        "offer_value",
        "offer_discount_pct",
    ],
}


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[TrainedModel, Path]]:
    """Every model trained on a small data set and exported to a temporary directory."""
    out = tmp_path_factory.mktemp("models")
    data = make_customers(TRAIN_ROWS, seed=11)
    result = {}
    for spec in MODELS:
        model = train(spec, data)
        result[spec.name] = (model, export(model, out))
    return result


@pytest.fixture(scope="module")
def fresh_rows() -> dict[str, np.ndarray]:
    """Rows the models never saw, per model, as float32 without column names."""
    data = make_customers(500, seed=12345)
    return {spec.name: data.matrix(spec.inputs) for spec in MODELS}


def test_model_specs_keep_the_agreed_input_order() -> None:
    assert {name: list(spec.inputs) for name, spec in SPECS.items()} == EXPECTED_INPUTS


def test_purchase_model_is_a_100_tree_gradient_boosting(
    trained: dict[str, tuple[TrainedModel, Path]],
) -> None:
    estimator = trained["purchase_7d"][0].estimator
    assert type(estimator).__name__ == "GradientBoostingClassifier"
    assert estimator.n_estimators_ == 100


@pytest.mark.parametrize("name", sorted(SPECS))
def test_onnx_scores_match_sklearn(
    name: str,
    trained: dict[str, tuple[TrainedModel, Path]],
    fresh_rows: dict[str, np.ndarray],
) -> None:
    model, path = trained[name]
    rows = fresh_rows[name]
    expected = model.estimator.predict_proba(rows)[:, 1]

    scores = OnnxModel.load(path).score(rows)

    assert len(scores) == len(rows)
    assert all(isinstance(score, float) for score in scores)
    np.testing.assert_allclose(scores, expected, rtol=0, atol=1e-6)


@pytest.mark.parametrize("name", sorted(SPECS))
def test_batched_scores_equal_row_by_row(
    name: str,
    trained: dict[str, tuple[TrainedModel, Path]],
    fresh_rows: dict[str, np.ndarray],
) -> None:
    onnx_model = OnnxModel.load(trained[name][1])
    rows = fresh_rows[name].tolist()

    batched = onnx_model.score(rows)
    one_by_one = [onnx_model.score_one(row) for row in rows]

    # Not bit-equal: onnxruntime's float32 GEMM may round the last bit or two
    # differently for a batch than for a single row (seen on the linear models).
    np.testing.assert_allclose(batched, one_by_one, rtol=0, atol=1e-6)


@pytest.mark.parametrize("name", sorted(SPECS))
def test_bound_buffers_score_as_session_run(
    name: str,
    trained: dict[str, tuple[TrainedModel, Path]],
    fresh_rows: dict[str, np.ndarray],
) -> None:
    # Batches up to 16 rows go through prepared io-bindings: the same kernels, so the
    # same bits as a plain session.run, call after call, whatever the batch size.
    model = OnnxModel.load(trained[name][1])
    rows = fresh_rows[name]
    for start, size in [(0, 1), (1, 1), (2, 3), (5, 16), (0, 3), (21, 17)]:
        batch = rows[start : start + size]
        plain = model._session.run(None, {model.input_name: batch.astype(np.float32)})
        expected = plain[[o.name for o in model._session.get_outputs()].index(model.output_name)]
        assert model.score(batch.tolist()) == expected[:, -1].tolist()
        assert model.score(batch) == expected[:, -1].tolist()


def test_bound_path_refuses_what_the_plain_path_refuses(
    trained: dict[str, tuple[TrainedModel, Path]],
) -> None:
    model = OnnxModel.load(trained["churn"][1])
    # One number per row would broadcast into a buffer of four: refused, not spread.
    with pytest.raises(ValueError, match=r"'churn' takes rows of 4 numbers"):
        model.score([[1.0], [2.0]])
    with pytest.raises(ValueError, match=r"'churn' takes rows of 4 numbers"):
        model.score(np.ones((2, 1)))
    with pytest.raises(ValueError):
        model.score([["a", "b", "c", "d"]])
    # A failed call leaves the buffers usable.
    assert model.score([[1.0, 2.0, 3.0, 4.0]]) == model.score(np.array([[1.0, 2.0, 3.0, 4.0]]))


def test_each_thread_scores_with_its_own_buffers(
    trained: dict[str, tuple[TrainedModel, Path]],
    fresh_rows: dict[str, np.ndarray],
) -> None:
    import threading

    model = OnnxModel.load(trained["purchase_7d"][1])
    rows = fresh_rows["purchase_7d"][:40].tolist()
    expected = [model.score([row]) for row in rows]
    wrong: list[int] = []

    def work(offset: int) -> None:
        for k in range(400):
            i = (k + offset) % len(rows)
            if model.score([rows[i]]) != expected[i]:
                wrong.append(i)

    threads = [threading.Thread(target=work, args=(n * 7,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert wrong == []


def test_loaded_model_describes_itself(trained: dict[str, tuple[TrainedModel, Path]]) -> None:
    path = trained["purchase_7d"][1]

    model = OnnxModel.load(str(path))

    assert model.name == "purchase_7d"
    assert model.path == path
    assert model.n_inputs == 5
    assert model.input_name == "features"
    assert model.input_type == "tensor(float)"
    assert model.output_name == "probabilities"
    assert re.fullmatch(r"[0-9a-f]{12}", model.version)
    assert "purchase_7d" in repr(model)


def test_score_rejects_rows_of_the_wrong_width(
    trained: dict[str, tuple[TrainedModel, Path]],
) -> None:
    model = OnnxModel.load(trained["churn"][1])

    with pytest.raises(ValueError, match=r"'churn' takes rows of 4 numbers"):
        model.score([[1.0, 2.0, 3.0]])


def test_score_of_no_rows_is_empty(trained: dict[str, tuple[TrainedModel, Path]]) -> None:
    assert OnnxModel.load(trained["churn"][1]).score([]) == []


def test_missing_file_names_the_path(tmp_path: Path) -> None:
    path = tmp_path / "nope.onnx"

    with pytest.raises(ModelLoadError, match="no such file") as raised:
        OnnxModel.load(path)

    assert str(path) in str(raised.value)
    assert raised.value.path == path


@pytest.mark.parametrize(
    "content",
    [b"", b"this is not a protobuf \xff\xfe", b"\x08\x07\x12\x07skl2onnx"],
    ids=["empty", "garbage", "model-without-graph"],
)
def test_corrupt_file_names_the_path(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "broken.onnx"
    path.write_bytes(content)

    with pytest.raises(ModelLoadError, match=r"not .*ONNX model") as raised:
        OnnxModel.load(path)

    assert str(path) in str(raised.value)


def test_truncated_model_is_rejected(
    tmp_path: Path, trained: dict[str, tuple[TrainedModel, Path]]
) -> None:
    good = trained["purchase_7d"][1].read_bytes()
    path = tmp_path / "truncated.onnx"
    path.write_bytes(good[: len(good) // 2])

    with pytest.raises(ModelLoadError, match=re.escape(str(path))):
        OnnxModel.load(path)


def _identity_model(path: Path, input_shape: list[int | str | None]) -> Path:
    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])],
        "identity",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, input_shape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, input_shape)],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, path)
    return path


@pytest.mark.parametrize(
    "shape",
    [[None, None], ["batch", 3, 2], [None]],
    ids=["unknown-width", "three-dimensional", "one-dimensional"],
)
def test_unsupported_input_shape_is_rejected(tmp_path: Path, shape: list[int | str | None]) -> None:
    path = _identity_model(tmp_path / "odd.onnx", shape)

    with pytest.raises(ModelLoadError, match="unsupported input shape") as raised:
        OnnxModel.load(path)

    assert str(path) in str(raised.value)


def test_model_without_probability_output_is_rejected(tmp_path: Path) -> None:
    # A [batch, 3] output is not a binary class-probability tensor.
    path = _identity_model(tmp_path / "three_wide.onnx", [None, 3])

    with pytest.raises(ModelLoadError, match="no probability output"):
        OnnxModel.load(path)


def test_version_follows_file_content(
    tmp_path: Path, trained: dict[str, tuple[TrainedModel, Path]]
) -> None:
    path = tmp_path / "churn.onnx"
    shutil.copyfile(trained["churn"][1], path)
    first = OnnxModel.load(path)
    assert OnnxModel.load(path).version == first.version

    retrained = train(SPECS["churn"], make_customers(TRAIN_ROWS, seed=99))
    export(retrained, tmp_path)

    second = OnnxModel.load(path)
    assert second.version != first.version
    assert second.name == first.name == "churn"


def test_training_is_reproducible_across_processes(tmp_path: Path) -> None:
    # Separate processes with different hash seeds: anything ordered by a set or
    # dict of strings in the export would show up as a byte difference (seeds 1
    # and 6 ordered skl2onnx's opset imports differently before they were sorted).
    outputs = []
    for hash_seed in ("1", "6"):
        out = tmp_path / f"hash_seed_{hash_seed}"
        subprocess.run(
            [
                sys.executable,
                "-m",
                "models.train",
                "--out",
                str(out),
                "--rows",
                "1000",
                "--seed",
                "3",
            ],
            cwd=ROOT_DIR,
            check=True,
            capture_output=True,
            env={**os.environ, "PYTHONHASHSEED": hash_seed},
        )
        outputs.append(out)

    for spec in MODELS:
        for suffix in (".onnx", ".schema.json"):
            name = spec.name + suffix
            assert (outputs[0] / name).read_bytes() == (outputs[1] / name).read_bytes(), name


@pytest.mark.parametrize("name", sorted(SPECS))
def test_committed_model_matches_its_schema(name: str, fresh_rows: dict[str, np.ndarray]) -> None:
    schema = json.loads((COMMITTED_MODELS / f"{name}.schema.json").read_text(encoding="utf-8"))
    model = OnnxModel.load(COMMITTED_MODELS / f"{name}.onnx")

    assert schema["name"] == model.name == name
    assert [item["name"] for item in schema["inputs"]] == EXPECTED_INPUTS[name]
    assert all(item["type"] == "float" for item in schema["inputs"])
    assert model.n_inputs == len(schema["inputs"])
    assert schema["output"] == "probability of class 1"
    assert schema["trained_rows"] > 0
    assert 0.5 < schema["auc_holdout"] <= 1.0
    scores = model.score(fresh_rows[name])
    assert all(0.0 <= score <= 1.0 for score in scores)


def test_committed_models_are_small() -> None:
    for spec in MODELS:
        assert (COMMITTED_MODELS / f"{spec.name}.onnx").stat().st_size < 300_000

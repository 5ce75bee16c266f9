"""engine.scoring.loading: a plan's ONNX models loaded once and checked against their declarations."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from onnx import TensorProto, helper
from support.paths import ROOT_DIR

from arbiter import dsl
from arbiter.engine.codegen.compiler import compile_plan
from arbiter.engine.plan import Plan
from arbiter.engine.scoring.loading import check_models, load_models, model_path
from arbiter.engine.scoring.onnx import OnnxModel

MODELS = ROOT_DIR / "models"

HEADER = """ruleset shop
profile { orders_90d: int, lifetime_value: number, visits: int, days_since: number }
action a { value 1 }
when true offer a
"""
CHURN_3 = 'model churn = onnx "churn.onnx"\n    inputs (profile.orders_90d, profile.lifetime_value, profile.visits)\n'
CHURN_4 = (
    'model churn = onnx "churn.onnx"\n'
    "    inputs (profile.days_since, profile.orders_90d, profile.lifetime_value, profile.visits)\n"
)


def write_rules(directory: Path, body: str, name: str = "shop.rules") -> Path:
    path = directory / name
    path.write_text(HEADER + body, encoding="utf-8")
    return path


def plan_of(path: Path) -> Plan:
    return compile_plan(dsl.load_checked(path))


@pytest.fixture
def rules_dir(tmp_path: Path) -> Path:
    shutil.copy(MODELS / "churn.onnx", tmp_path / "churn.onnx")
    return tmp_path


def test_matching_declaration_loads_one_session_per_model(rules_dir: Path) -> None:
    plan = plan_of(write_rules(rules_dir, CHURN_4))
    models = load_models(plan, rules_dir)
    assert list(models) == ["churn"]
    model = models["churn"]
    assert isinstance(model, OnnxModel)
    assert model.n_inputs == 4
    assert model.version == OnnxModel.load(MODELS / "churn.onnx").version
    assert 0.0 < model.score_one([10.0, 2.0, 300.0, 5.0]) < 1.0
    assert check_models(plan.checked, rules_dir) == []


def test_input_count_mismatch_is_an_error_at_the_declaration(rules_dir: Path) -> None:
    path = write_rules(rules_dir, CHURN_3)
    plan = plan_of(path)
    with pytest.raises(dsl.RulesError) as info:
        load_models(plan, rules_dir)
    [diag] = info.value.diagnostics
    assert diag.code == "model-inputs"
    assert diag.message == "model churn declares 3 inputs but churn.onnx takes 4"
    assert (diag.span.file, diag.span.line, diag.span.column) == (str(path), 5, 1)
    assert diag.hint == "the graph's input 'features' is [batch, 4]"
    # The same diagnostic, without raising, for `arbiter check`.
    assert check_models(plan.checked, rules_dir) == [diag]


def test_mismatch_message_shows_the_source_line_and_caret(rules_dir: Path) -> None:
    path = write_rules(rules_dir, CHURN_3)
    with pytest.raises(dsl.RulesError) as info:
        load_models(plan_of(path), rules_dir)
    lines = str(info.value).splitlines()
    assert lines[0] == (
        f"{path}:5:1: error[model-inputs]: model churn declares 3 inputs but churn.onnx takes 4"
    )
    assert lines[1] == '    model churn = onnx "churn.onnx"'
    assert lines[2].startswith("    ^")
    assert lines[-1] == "  hint: the graph's input 'features' is [batch, 4]"


def test_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    path = write_rules(tmp_path, CHURN_4.replace("churn.onnx", "models/nope.onnx"))
    with pytest.raises(dsl.RulesError) as info:
        load_models(plan_of(path), tmp_path)
    [diag] = info.value.diagnostics
    assert diag.code == "model-load"
    assert diag.message == "model churn: cannot load models/nope.onnx: no such file"
    assert diag.hint == f"looked for {tmp_path / 'models' / 'nope.onnx'}"
    assert diag.span.line == 5


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (b"", "empty file, not an ONNX model"),
        (b"this is not a protobuf at all \x00\xff" * 10, "not a valid ONNX model or corrupt"),
    ],
)
def test_corrupt_file_is_a_clear_error(rules_dir: Path, content: bytes, problem: str) -> None:
    (rules_dir / "churn.onnx").write_bytes(content)
    path = write_rules(rules_dir, CHURN_4)
    with pytest.raises(dsl.RulesError) as info:
        load_models(plan_of(path), rules_dir)
    [diag] = info.value.diagnostics
    assert diag.code == "model-load"
    assert diag.message.startswith(f"model churn: cannot load churn.onnx: {problem}")


def test_integer_input_tensor_is_refused(tmp_path: Path) -> None:
    graph = helper.make_graph(
        [helper.make_node("Cast", ["x"], ["y"], to=TensorProto.FLOAT)],
        "ints",
        [helper.make_tensor_value_info("x", TensorProto.INT64, [None, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 2])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    (tmp_path / "churn.onnx").write_bytes(model.SerializeToString())
    path = write_rules(tmp_path, CHURN_4)
    with pytest.raises(dsl.RulesError) as info:
        load_models(plan_of(path), tmp_path)
    [diag] = info.value.diagnostics
    assert diag.code == "model-load"
    assert "input 'x' is tensor(int64), expected tensor(float) or tensor(double)" in diag.message


def test_every_broken_model_is_reported_in_file_order(rules_dir: Path) -> None:
    body = (
        CHURN_3
        + 'model intent = onnx "missing.onnx" inputs (profile.visits)\n'
        + CHURN_4.replace("model churn", "model churn_ok")
    )
    path = write_rules(rules_dir, body)
    with pytest.raises(dsl.RulesError) as info:
        load_models(plan_of(path), rules_dir)
    assert [(d.code, d.span.line) for d in info.value.diagnostics] == [
        ("model-inputs", 5),
        ("model-load", 7),
    ]


def test_two_declarations_of_one_file_share_a_session(rules_dir: Path) -> None:
    body = CHURN_4 + CHURN_4.replace("model churn", "model churn_again")
    models = load_models(plan_of(write_rules(rules_dir, body)), rules_dir)
    assert models["churn"] is models["churn_again"]


def test_model_paths_are_relative_to_the_declaring_file(tmp_path: Path) -> None:
    # An included file's models are found next to it, not next to the main file.
    lib = tmp_path / "lib"
    (lib / "m").mkdir(parents=True)
    shutil.copy(MODELS / "churn.onnx", lib / "m" / "churn.onnx")
    (lib / "models.rules").write_text(
        "ruleset lib\n" + CHURN_4.replace('"churn.onnx"', '"m/churn.onnx"'), encoding="utf-8"
    )
    main = tmp_path / "main.rules"
    main.write_text(
        HEADER.replace("ruleset shop\n", 'ruleset shop\ninclude "lib/models.rules"\n')
        + "when churn > 2 offer a\n",
        encoding="utf-8",
    )
    plan = plan_of(main)
    decl = plan.checked.models["churn"]
    assert model_path(decl, tmp_path) == lib / "m" / "churn.onnx"
    assert load_models(plan, tmp_path)["churn"].n_inputs == 4


def test_text_not_read_from_a_file_resolves_against_base_dir(rules_dir: Path) -> None:
    ruleset = dsl.parse(HEADER + CHURN_4, "<uploaded>")
    plan = compile_plan(dsl.check(ruleset))
    assert load_models(plan, rules_dir)["churn"].n_inputs == 4
    with pytest.raises(dsl.RulesError):
        load_models(plan, rules_dir / "elsewhere")

"""The example rulesets people copy: each checks clean and all its scenarios pass."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from support.paths import ROOT_DIR

from arbiter import dsl, engine
from arbiter.dsl import nodes as n
from arbiter.engine.decision.scenarios import format_report, run_scenarios

ROOT = ROOT_DIR
RULESETS = sorted((ROOT / "rulesets").glob("*.rules"))


def test_the_three_reference_rulesets_exist() -> None:
    assert {p.name for p in RULESETS} >= {"retail.rules", "telecom.rules", "media.rules"}


@pytest.mark.parametrize("path", RULESETS, ids=lambda p: p.name)
def test_checks_clean(path: Path) -> None:
    checked = dsl.load_checked(path)  # raises RulesError on any error
    assert [w.format() for w in checked.warnings] == []


@pytest.mark.parametrize("path", RULESETS, ids=lambda p: p.name)
def test_all_scenarios_pass(path: Path) -> None:
    results = run_scenarios(engine.compile_plan(dsl.load_checked(path)))
    assert len(results) >= 5, "an example ruleset shows its behaviour in several scenarios"
    assert all(r.passed for r in results), format_report(results)


@pytest.mark.parametrize("path", RULESETS, ids=lambda p: p.name)
def test_models_exist_and_get_their_inputs_in_number(path: Path) -> None:
    """Model paths are relative to the .rules file; input counts match models/*.schema.json."""
    checked = dsl.load_checked(path)
    for model in checked.models.values():
        onnx = (path.parent / model.path).resolve()
        assert onnx.is_file(), f"{model.name}: {model.path} does not exist"
        schema = json.loads(onnx.with_suffix(".schema.json").read_text(encoding="utf-8"))
        assert len(model.inputs) == len(schema["inputs"]), model.name


def test_retail_uses_the_whole_language() -> None:
    """The retail example is the one to copy: it shows every kind of declaration."""
    ruleset = dsl.parse_file(ROOT / "rulesets/retail.rules")
    kinds = {type(d) for d in ruleset.decls}
    for kind in (
        n.SchemaDecl, n.EventDecl, n.ModelDecl, n.SegmentDecl, n.ActionDecl, n.WhenRule,
        n.IfBlock, n.BanditDecl, n.ArbitrateDecl, n.HoldoutDecl, n.ExperimentDecl,
        n.DefaultDecl, n.ScenarioDecl,
    ):  # fmt: skip
        assert kind in kinds, kind.__name__
    actions = ruleset.of(n.ActionDecl)
    assert any(a.cap for a in actions) and any(a.consent for a in actions)
    assert any(a.fatigue for a in actions) and any(a.valid_from for a in actions)
    assert any(m.per_action for m in ruleset.of(n.ModelDecl))


def test_the_language_reference_example_checks_and_passes() -> None:
    doc = (ROOT / "docs/language.md").read_text(encoding="utf-8")
    example = doc.split("```\n", 2)[1]
    assert example.startswith("ruleset ")
    checked = dsl.check(dsl.parse(example, "example.rules"))
    assert checked.warnings == []
    results = run_scenarios(engine.compile_plan(checked))
    assert results and all(r.passed for r in results), format_report(results)


def test_the_language_reference_lists_every_code() -> None:
    from arbiter.dsl.codes import CODES

    doc = (ROOT / "docs/language.md").read_text(encoding="utf-8")
    for code, info in CODES.items():
        assert f"| `{code}` | {info.severity} |" in doc, code

"""engine.codegen.probes: the generated probe source is deterministic and pinned.

What the probes answer is tested against the evaluator itself in
`tests/engine/decision/test_why_not.py`; here, the shape of the code.
Regenerate the golden file with `ARBITER_UPDATE_GOLDEN=1 pytest tests/engine/codegen/test_probes.py`.
"""

from __future__ import annotations

import os
from types import SimpleNamespace
from typing import Any

import pytest
from support.paths import CASES_DIR

from arbiter import dsl
from arbiter.dsl import nodes as n
from arbiter.engine.codegen import compiler, probes
from arbiter.engine.codegen.compiler import compile_plan
from arbiter.engine.decision.decide import decide
from arbiter.engine.decision.scenarios import ScenarioOracle
from arbiter.engine.plan import Plan
from arbiter.engine.records import DecideRequest, Inputs

GOLDEN_RULES = CASES_DIR / "compiler" / "golden.rules"
GOLDEN = CASES_DIR / "compiler" / "golden.probes.py.golden"


def test_probe_source_matches_golden_file() -> None:
    plan = compile_plan(dsl.load_checked(GOLDEN_RULES), optimize=False)
    source = plan.probes().source
    if os.environ.get("ARBITER_UPDATE_GOLDEN"):
        GOLDEN.write_text(source, encoding="utf-8")
    assert source == GOLDEN.read_text(encoding="utf-8")


def test_one_probe_per_condition_with_every_part_in_preorder() -> None:
    checked = dsl.load_checked(GOLDEN_RULES)
    probes = compile_plan(checked).probes()
    assert list(probes.segments) == list(checked.segments)
    for rp in probes.rules:
        parts = rp.condition.parts
        assert parts[0].expr is rp.rule.condition
        for i, part in enumerate(parts):
            assert all(c > i for c in part.children)
            if isinstance(part.expr, n.BoolOp):
                assert [parts[c].expr for c in part.children] == list(part.expr.operands)
            elif not part.children:
                # A leaf's shown operands are its non-literal ones, in order.
                assert all(not text[0].isdigit() for text, _ in part.operands)


DEEP = """ruleset deep
profile { x: number }
action a { value 1 }
action b { value 1 }
when profile.x > 1 offer a
when true offer b
"""


def _explained_a(plan: Plan) -> dict[str, Any]:
    request = DecideRequest("c", {}, explain=True)
    decision, _ = decide(
        plan,
        request,
        Inputs(profile={"x": 0}),
        decision_id="d",
        now=0.0,
        oracle=ScenarioOracle({}, plan),
    )
    assert decision.explanation is not None
    fate: dict[str, Any] = decision.explanation["actions"][0]
    return fate


def test_a_condition_too_deep_to_probe_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fault injected: writing the probe of `profile.x > 1` recurses too deep."""
    real = probes._ProbeWriter._part

    def part(self: Any, w: Any, e: n.Expr, *rest: Any) -> int:
        if isinstance(e, n.Binary) and e.op == ">":
            raise RecursionError
        return real(self, w, e, *rest)

    monkeypatch.setattr(probes._ProbeWriter, "_part", part)
    plan = compiler._build(dsl.check(dsl.parse(DEEP, "deep.rules")), "x" * 64, False)
    fate = _explained_a(plan)
    assert fate["condition"]["result"] == "error"
    assert fate["condition"]["error"] == "too complex to explain"


def test_a_probe_python_cannot_compile_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fault injected: CPython refuses the probe of the first rule (nested too deep)."""

    def refuse(source: str, filename: str, mode: str) -> Any:
        if "x" in source and "> 1" in source:  # the whole module, or the first rule alone
            raise SyntaxError("too many nested parentheses")
        return compile(source, filename, mode)

    monkeypatch.setattr(probes, "compile", refuse, raising=False)
    plan = compiler._build(dsl.check(dsl.parse(DEEP, "deep.rules")), "y" * 64, False)
    fate = _explained_a(plan)
    assert fate["condition"]["error"] == "too deeply nested to explain"
    # The other probes are compiled one by one and still work.
    probe_b = plan.probes().rules[1].condition
    assert probe_b.run({}, {}, (), SimpleNamespace(now=0.0), (), {}) == ([True], [])

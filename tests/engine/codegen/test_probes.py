"""engine.codegen.probes: the generated probe source is deterministic and pinned.

What the probes answer is tested against the evaluator itself in
`tests/engine/decision/test_why_not.py`; here, the shape of the code.
Regenerate the golden file with `ARBITER_UPDATE_GOLDEN=1 pytest tests/engine/codegen/test_probes.py`.
"""

from __future__ import annotations

import os

from support.paths import CASES_DIR

from arbiter import dsl
from arbiter.dsl import nodes as n
from arbiter.engine.codegen.compiler import compile_plan

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

"""Every message issue 9 named, table-driven: `tests/cases/messages/<case>.rules` must print
exactly `<case>.expected` (what `arbiter check` prints: errors, else warnings; empty when
the file is fine), so each silent trap is an error at the real mistake's line:col and each
wrong hint is corrected. Rewrite after an intended change of wording with
`ARBITER_UPDATE_EXPECTED=1 pytest tests/dsl/test_messages.py` and review the diff.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from support.paths import ROOT_DIR

from arbiter import dsl
from arbiter.dsl.errors import RulesError
from arbiter.engine.codegen.compiler import compile_plan
from arbiter.engine.decision.scenarios import run_scenarios

MESSAGES = Path("tests/cases/messages")
CASES = sorted((ROOT_DIR / MESSAGES).glob("*.rules"))


@pytest.fixture(autouse=True)
def _at_root(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT_DIR)


def printed(path: Path) -> str:
    try:
        checked = dsl.load_checked(path)
    except RulesError as exc:
        return exc.format()
    return RulesError(checked.warnings, checked.sources).format() if checked.warnings else ""


@pytest.mark.parametrize("path", CASES, ids=lambda p: p.stem)
def test_message_is_exact(path: Path) -> None:
    text = printed(MESSAGES / path.name)
    expected = path.with_suffix(".expected")
    if os.environ.get("ARBITER_UPDATE_EXPECTED"):
        expected.write_text(text + "\n" if text else "", encoding="utf-8")
    assert (text + "\n" if text else "") == expected.read_text(encoding="utf-8")


@pytest.mark.parametrize("name", ["two-weeks", "percent", "bom"], ids=lambda name: name)
def test_what_used_to_be_refused_now_works(name: str) -> None:
    checked = dsl.load_checked(MESSAGES / f"{name}.rules")
    results = run_scenarios(compile_plan(checked))
    assert all(r.passed for r in results), [r.name for r in results if not r.passed]


def test_several_syntax_errors_are_all_reported() -> None:
    with pytest.raises(RulesError) as info:
        dsl.load_checked(MESSAGES / "several-syntax-errors.rules")
    places = [(d.code, d.span.line, d.span.column) for d in info.value.diagnostics]
    assert places == [
        ("double-equals", 4, 21),
        ("missing-offer", 5, 25),
        ("logical-operator", 6, 32),
    ]

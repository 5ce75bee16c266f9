"""The checker: one bad file per diagnostic code with its exact expected text, plus unit cases.

`tests/cases/bad/<code>.rules` must produce, as printed by `RulesError.format()`,
exactly `tests/cases/bad/<code>.expected` (warnings-only files: the warnings,
printed the same way). To rewrite the expected files after an intended change
of wording, run `ARBITER_UPDATE_EXPECTED=1 pytest tests/test_checker.py` and
review the diff.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from support.paths import ROOT_DIR

from arbiter import dsl
from arbiter.dsl import nodes as n
from arbiter.dsl.codes import CODES
from arbiter.dsl.errors import MAX_DIAGNOSTICS, RulesError
from arbiter.dsl.reachability import Fact, satisfiable

ROOT = ROOT_DIR
BAD = Path("tests/cases/bad")
BAD_FILES = sorted((ROOT / BAD).glob("*.rules"))


@pytest.fixture(autouse=True)
def _at_root(monkeypatch: pytest.MonkeyPatch) -> None:
    # Spans carry the path as given; relative paths keep the expected files portable.
    monkeypatch.chdir(ROOT)


def diagnostics_text(path: Path) -> tuple[str, set[str]]:
    """What `arbiter check` prints for a file, and the codes in it."""
    try:
        checked = dsl.load_checked(path)
    except RulesError as exc:
        return exc.format(), {d.code for d in exc.diagnostics}
    warnings = checked.warnings
    return RulesError(warnings, checked.sources).format(), {d.code for d in warnings}


@pytest.mark.parametrize("path", BAD_FILES, ids=lambda p: p.stem)
def test_bad_file_gives_exact_text(path: Path) -> None:
    relative = BAD / path.name
    text, codes = diagnostics_text(relative)
    assert path.stem in codes, f"{relative} does not produce its own code: {codes}"
    expected_path = path.with_suffix(".expected")
    if os.environ.get("ARBITER_UPDATE_EXPECTED"):
        expected_path.write_text(text + "\n", encoding="utf-8")
    assert text + "\n" == expected_path.read_text(encoding="utf-8")


def test_every_code_has_a_bad_file() -> None:
    have = {p.stem for p in BAD_FILES}
    assert set(CODES) - have == set(), "codes without a tests/cases/bad file"
    assert have - set(CODES) == set(), "bad files named after no code"


def test_every_code_in_the_source_is_registered() -> None:
    """Codes written in the front end's source, however emitted, are all in CODES."""
    patterns = [
        r'Diagnostic\(\s*"([a-z-]+)"',
        r'self\.(?:error|warn)\(\s*"([a-z-]+)"',
        r'emit\(\s*"([a-z-]+)"',
        r'SyntaxCase\(\s*"([a-z-]+)"',
    ]
    found: set[str] = set()
    for source in (ROOT / "dsl").glob("*.py"):
        text = source.read_text(encoding="utf-8")
        for pattern in patterns:
            found |= set(re.findall(pattern, text))
    assert found, "the patterns no longer match anything"
    assert found - set(CODES) == set()


def test_warning_files_have_no_errors() -> None:
    for path in BAD_FILES:
        if CODES[path.stem].severity == "warning":
            dsl.load_checked(BAD / path.name)  # raises on any error


def test_errors_are_sorted_and_capped() -> None:
    text = "ruleset r\naction a { value 1 }\n" + "".join(
        f"when unknown_{i} offer a\n" for i in range(MAX_DIAGNOSTICS + 10, 0, -1)
    )
    with pytest.raises(RulesError) as info:
        dsl.check(dsl.parse(text, "many.rules"))
    diags = info.value.diagnostics
    assert len(diags) == MAX_DIAGNOSTICS
    lines = [d.span.line for d in diags]
    assert lines == sorted(lines)
    assert diags[-1].code == "too-many-errors"
    assert diags[-1].message == "11 more errors not shown"


def test_all_errors_are_collected_not_just_the_first() -> None:
    text = (
        "ruleset r\nprofile { visits: int }\naction a { value 1 }\n"
        "when profile.visit > 1 offer a\nwhen profile.visits > 1 offer b\n"
        'when profile.visits == "x" offer a\n'
    )
    with pytest.raises(RulesError) as info:
        dsl.check(dsl.parse(text, "r.rules"))
    assert [d.code for d in info.value.diagnostics] == [
        "unknown-field",
        "unknown-action",
        "literal-type",
    ]


# ------------------------------------------------------------------ unit cases


def check(body: str) -> dsl.CheckedRuleset:
    return dsl.check(dsl.parse("ruleset r\n" + body, "r.rules"))


def codes_of(body: str) -> list[str]:
    """Error codes, or else warning codes (leaving out unused declarations: the
    small examples here declare more than each one uses)."""
    try:
        checked = check(body)
    except RulesError as exc:
        return [d.code for d in exc.diagnostics]
    return [d.code for d in checked.warnings if not d.code.startswith("unused-")]


SCHEMA = (
    "profile { visits: int, ltv: number, tier: one of [none, gold] }\n"
    "context { channel: one of [web, email], page: string }\n"
    "action a { value 1 }\naction b { value 2 }\n"
)


@pytest.mark.parametrize(
    ("rules", "unreachable"),
    [
        ("when profile.visits > 5 and profile.visits < 3 offer a", True),
        ("when profile.visits > 5 and profile.visits < 9 offer a", False),
        ("when 1 > 2 offer a", True),
        ("when false offer a", True),
        ("when not true offer a", True),
        ("when profile.visits is missing and profile.visits > 1 offer a", True),
        ("when profile.visits is missing or profile.visits > 1 offer a", False),
        ("when profile.tier == gold and profile.tier != gold offer a", True),
        ("when profile.tier in [none] and profile.tier == gold offer a", True),
        ('when context.page == "/" and context.page == "/cart" offer a', True),
        # Strings between two literals exist ("b" < "bb" < "c"): never claimed unreachable.
        ('when context.page > "b" and context.page < "c" offer a', False),
        ("when profile.ltv between 10 and 20 and profile.ltv > 20 offer a", True),
        ("when profile.ltv between 10 and 20 and profile.ltv >= 20 offer a", False),
        ("if profile.visits > 10 { when profile.visits < 5 offer a }", True),
        ("if profile.visits > 10 { when profile.visits > 12 offer a }", False),
        # The else branch runs when the condition is false *or unknown*.
        ("if profile.visits > 10 { } else { when profile.visits > 12 offer a }", True),
        ("if profile.visits > 10 { } else { when profile.visits is missing offer a }", False),
        ("if profile.visits > 10 { } else if profile.visits > 10 { when true offer a }", True),
        ("segment big = profile.ltv > 100\nif big { when profile.ltv < 50 offer a }", True),
        ("segment big = profile.ltv > 100\nif not big { when profile.ltv > 200 offer a }", True),
        ("segment big = profile.ltv > 100\nif big { when not big offer a }", True),
        ("when profile.visits > 1 or profile.visits < 0 offer a", False),
    ],
)
def test_unreachable_rules(rules: str, unreachable: bool) -> None:
    found = "unreachable-rule" in codes_of(SCHEMA + rules + "\nwhen true offer b\n")
    assert found is unreachable


def test_satisfiable_is_never_fooled_by_what_it_does_not_understand() -> None:
    x = n.Ref(n.NO_SPAN, ("profile", "x"))
    y = n.Ref(n.NO_SPAN, ("profile", "y"))
    # x < y and y < x is a contradiction about two values: not understood, so allowed.
    facts = [Fact(n.Binary(n.NO_SPAN, "<", x, y)), Fact(n.Binary(n.NO_SPAN, "<", y, x))]
    assert satisfiable(facts, {})


def test_shadowed_rule_unless_it_ranks_higher() -> None:
    base = SCHEMA + "when profile.visits > 1 offer a\n"
    assert "shadowed-rule" in codes_of(base + "when profile.visits > 1 offer a\n")
    assert "shadowed-rule" not in codes_of(base + "when profile.visits > 1 offer a priority 1\n")
    assert "shadowed-rule" in codes_of(
        base + 'if context.page == "/" { when profile.visits > 1 offer a }\n'
    )


def test_unofferable_actions() -> None:
    always = SCHEMA + "when profile.visits > 1 offer a\nsuppress a when true\nwhen true offer b\n"
    assert "unofferable-action" in codes_of(always)
    conditional = always.replace("suppress a when true", "suppress a when profile.ltv > 5")
    assert "unofferable-action" not in codes_of(conditional)


def test_bandit_arm_that_no_rule_offers() -> None:
    text = SCHEMA + "when true offer a\nbandit h over [a, b] features (profile.visits)\n"
    checked = check(text)
    (warning,) = [w for w in checked.warnings if w.code == "unused-action"]
    assert "bandit 'h'" in warning.message


def test_enum_member_wins_over_a_segment_of_the_same_name() -> None:
    checked = check(
        SCHEMA + "segment gold = profile.tier == gold\nwhen gold offer a\nwhen true offer b\n"
    )
    expr = checked.segments["gold"].expr
    assert isinstance(expr, n.Binary) and expr.right == n.String(n.NO_SPAN, "gold")


def test_bare_enum_names_become_strings() -> None:
    checked = check(SCHEMA + "when context.channel in [web, email] offer a\nwhen true offer b\n")
    rule = checked.rules[0]
    assert isinstance(rule, n.WhenRule) and isinstance(rule.condition, n.Binary)
    right = rule.condition.right
    assert isinstance(right, n.ListLit)
    assert right.items == (n.String(n.NO_SPAN, "web"), n.String(n.NO_SPAN, "email"))


def test_field_hint_for_a_bare_field_name() -> None:
    with pytest.raises(RulesError) as info:
        check(SCHEMA + "when visits > 1 offer a\nwhen true offer b\n")
    assert info.value.first.hint == "did you mean 'profile.visits'?"


def test_per_action_model_inputs_may_use_value_and_attributes() -> None:
    text = (
        "profile { visits: int }\naction attributes { discount: number }\naction a { value 1, discount 5 }\n"
        'model click = onnx "m.onnx" inputs (profile.visits, value, action.discount) per action\n'
        "when true offer a\narbitrate by click * value\n"
    )
    checked = check(text)
    assert checked.models["click"].per_action
    with pytest.raises(RulesError) as info:
        check(text.replace("action.discount)", "action.dicount)"))
    assert info.value.first.code == "unknown-field"
    assert info.value.first.hint == "did you mean 'discount'?"


def test_scenario_values_are_checked_against_the_schema() -> None:
    body = SCHEMA + "when true offer a\n"
    good = 'scenario "s" { profile { visits: 1, tier: gold } context { channel: web } expect [a] }'
    assert codes_of(body + good) == []
    bad_member = good.replace("tier: gold", "tier: golden")
    assert codes_of(body + bad_member) == ["scenario-value"]
    with pytest.raises(RulesError) as info:
        check(body + bad_member)
    assert info.value.first.hint == "did you mean 'gold'?"
    bad_time = 'scenario "s" { profile { since: "2026-13-01" } expect [a] }'
    text = body.replace("visits: int,", "visits: int, since: time,") + bad_time
    assert codes_of(text) == ["scenario-value"]


def test_scenario_errors_point_at_the_key() -> None:
    text = SCHEMA + 'when true offer a\nscenario "s" {\n  profile { visits: 1, vists: 2 }\n'
    text += "  expect [a]\n}\n"
    with pytest.raises(RulesError) as info:
        check(text)
    span = info.value.first.span
    assert (span.line, span.column) == (8, 24)

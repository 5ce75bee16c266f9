"""`format_ruleset`: canonical, idempotent, comment-keeping, and never changes meaning."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support.paths import ROOT_DIR

from arbiter import dsl, engine
from arbiter.dsl import nodes as n
from arbiter.dsl.errors import RulesError
from arbiter.dsl.formatter import (
    WIDTH,
    duration,
    expr,
    format_ruleset,
    number,
    percent,
)
from arbiter.engine.decision.scenarios import run_scenarios

ROOT = ROOT_DIR
EXAMPLES = sorted([*ROOT.glob("rulesets/*.rules"), *ROOT.glob("tests/cases/good/**/*.rules")])
BAD = sorted(ROOT.glob("tests/cases/bad/*.rules"))


def fmt(text: str, filename: str = "f.rules") -> str:
    return format_ruleset(dsl.parse(text, filename))


def parses(path: Path) -> bool:
    try:
        dsl.parse(path.read_text(encoding="utf-8"), str(path))
    except RulesError:
        return False
    return True


ALL = EXAMPLES + [p for p in BAD if parses(p)]


@pytest.mark.parametrize("path", ALL, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_formatting_twice_changes_nothing(path: Path) -> None:
    once = fmt(path.read_text(encoding="utf-8"), str(path))
    assert fmt(once, str(path)) == once


@pytest.mark.parametrize("path", ALL, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_formatting_keeps_the_ast(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    before = dsl.parse(text, str(path))
    after = dsl.parse(fmt(text, str(path)), str(path))
    assert after.name == before.name
    assert after.decls == before.decls  # node equality leaves spans out


@pytest.mark.parametrize("path", ALL, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_formatting_keeps_every_comment(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    out = fmt(text, str(path))
    comments = [line[line.index("#") :].strip() for line in text.splitlines() if "#" in line]
    for comment in comments:
        if '"' not in comment:  # a `#` inside a string is not a comment
            assert comment in out


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_formatting_keeps_the_checked_ruleset_and_every_decision(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    before = dsl.load_checked(path)
    ruleset, sources = dsl.load(path, fmt(text, str(path)))
    after = dsl.check(ruleset, sources)
    for name in (
        "profile", "context", "events", "segments", "models", "actions", "rules",
        "bandits", "arbitrate", "holdout", "experiments", "default", "scenarios",
    ):  # fmt: skip
        assert getattr(after, name) == getattr(before, name), name
    assert [w.code for w in after.warnings] == [w.code for w in before.warnings]
    decided = [(r.name, r.got, r.passed) for r in run_scenarios(engine.compile_plan(before))]
    again = [(r.name, r.got, r.passed) for r in run_scenarios(engine.compile_plan(after))]
    assert again == decided


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_examples_are_already_canonical(path: Path) -> None:
    """What `arbiter fmt --check` asks of the files people copy from."""
    text = path.read_text(encoding="utf-8")
    assert fmt(text, str(path)) == text


# ------------------------------------------------------------------ layout


def test_canonical_layout() -> None:
    source = """# Shop rules
ruleset   shop   # the name


profile{visits:int,
  ltv : number}   # money
action   welcome{value 5 channels[web] payload{code:"W10"}}
action big {
  # why it exists
  value 50, cap 1 per 168h   # weekly
  tags [vip]
  payload { headline: "A long headline that does not fit on one line with everything else", n: 1 }
}
when profile.visits<=1 offer welcome weight 1 priority 0
if profile.ltv>1000 {

  # VIPs
  when  true offer big
} else if profile.ltv > 100 { } else { suppress big when true }
"""
    assert (
        fmt(source)
        == """# Shop rules
ruleset shop  # the name

profile {
  visits: int
  ltv: number  # money
}
action welcome { value 5, channels [web], payload { code: "W10" } }
action big {
  # why it exists
  value 50  # weekly
  cap 1 per 7d
  tags [vip]
  payload { headline: "A long headline that does not fit on one line with everything else", n: 1 }
}
when profile.visits <= 1 offer welcome
if profile.ltv > 1000 {
  # VIPs
  when true offer big
} else if profile.ltv > 100 {
} else {
  suppress big when true
}
"""
    )


def test_long_conditions_break_before_and_or() -> None:
    cond = " and ".join(f"profile.field_{i} > {i}" for i in range(8))
    out = fmt(f"ruleset r\nsegment s = {cond} and (profile.a == 1 or profile.b == 2)\n")
    lines = out.splitlines()[1:]
    assert all(len(line) <= WIDTH for line in lines)
    assert lines[0] == "segment s = profile.field_0 > 0"
    assert lines[1] == "            and profile.field_1 > 1"
    assert lines[-1].strip().startswith("and (profile.a == 1 or profile.b == 2)")
    assert fmt(out) == out


@pytest.mark.parametrize(
    ("source", "printed"),
    [
        ("(a or b) and c", "(a or b) and c"),
        ("a or b and c", "a or b and c"),
        ("(a and b) and c", "(a and b) and c"),
        ("not (a and b)", "not (a and b)"),
        ("not a > 3", "not (a > 3)"),
        ("not not a", "not not a"),
        ("a - (b - c)", "a - (b - c)"),
        ("(a - b) - c", "a - b - c"),
        ("a * (b + c)", "a * (b + c)"),
        ("a / b * c", "a / b * c"),
        ("-(a + b)", "-(a + b)"),
        ("a - -3", "a - -3"),
        ("(a + b) between 1 and 2", "a + b between 1 and 2"),
        ("(a + b) is missing", "a + b is missing"),
        ("x in [web, app]", "x in [web, app]"),
        ("count( view   within 24h )>=1", "count(view within 24h) >= 1"),
        ("sum(purchase.amount within 30d)", "sum(purchase.amount within 30d)"),
        ('lower(x) matches "a\\\\.b"', 'lower(x) matches "a\\\\.b"'),
        ("max(a, b)", "max(a, b)"),
        ("5% * value", "5% * value"),
        ("t > 2026-01-01T10:00Z", "t > 2026-01-01T10:00Z"),
    ],
)
def test_expressions(source: str, printed: str) -> None:
    (seg,) = dsl.parse(f"ruleset r\nsegment s = {source}\n", "e.rules").of(n.SegmentDecl)
    assert expr(seg.expr) == printed


def test_literals() -> None:
    assert number(5.0) == "5"
    assert number(0.1) == "0.1"
    assert number(1e-05) == "0.00001"
    assert number(-2.5) == "-2.5"
    assert number(1e20) == "100000000000000000000"
    assert duration(7 * 86400) == "7d"
    assert duration(5400) == "90min"
    assert duration(0.25) == "250ms"
    assert percent(0.05) == "5%"
    assert percent(0.125) == "12.5%"


def test_payload_keys_and_values_that_need_quotes() -> None:
    text = (
        'ruleset r\naction a { value 1, payload { "two words": "x", value: true, "null": null,'
        ' n: -1.5, list: [1, "b", { c: [] }], s: "true", quote: "say \\"hi\\"", "é": "ü" } }\n'
    )
    out = fmt(text)
    assert dsl.parse(out, "f.rules").decls == dsl.parse(text, "f.rules").decls
    assert '"two words": "x"' in out and 's: "true"' in out


def test_scenario_layout() -> None:
    text = """ruleset r
context { channel: one of [web, app], page: string }
scenario "s" { expect [a] now 2026-03-01T09:00:00Z in holdout experiments { x: b }
  scores { m: 0.5, bandit: { a: 1 } } events { view: 2 180min ago, buy.amount: 9.5 2d ago }
  context { channel: web, page: "home" } customer "c-1" }
"""
    assert (
        fmt(text)
        == """ruleset r
context { channel: one of [web, app], page: string }
scenario "s" {
  customer "c-1"
  context { channel: web, page: "home" }
  events { view: 2 3h ago, buy.amount: 9.5 2d ago }
  scores { m: 0.5, bandit: { a: 1 } }
  experiments { x: b }
  in holdout
  now 2026-03-01T09:00:00Z
  expect [a]
}
"""
    )


# ------------------------------------------------------------------ random expressions

LEAVES = [
    "3", "-2", "2.5", '"hi"', '"a \\"q\\" #"', "true", "false", "24h", "30d", "5%",
    "2026-12-01", "2026-12-01T10:30:00Z", "profile.visits", "context.page", "vip",
    "count(view within 24h)", "sum(purchase.amount within 30d)", "last_seen(view)",
    "days_since(profile.t)", "[web, app]",
]  # fmt: skip


def _leaf(text: str) -> n.Expr:
    (seg,) = dsl.parse(f"ruleset r\nsegment s = {text}\n", "l.rules").of(n.SegmentDecl)
    return seg.expr


_S = n.NO_SPAN
leaves = st.one_of(
    st.sampled_from(LEAVES).map(_leaf),
    st.floats(allow_nan=False, allow_infinity=False).map(lambda x: n.Number(_S, x)),
    st.text(st.characters(blacklist_categories=("Cs",)), max_size=8).map(lambda s: n.String(_S, s)),
)


def _extend(children: st.SearchStrategy[n.Expr]) -> st.SearchStrategy[n.Expr]:
    ops = ["+", "-", "*", "/", "==", "!=", "<", ">=", "in", "not in", "starts with", "matches"]
    not_a_number = children.filter(lambda e: not isinstance(e, n.Number | n.Unary))
    return st.one_of(
        st.builds(
            lambda op, a, b: n.Binary(_S, op, a, b), st.sampled_from(ops), children, children
        ),
        st.builds(
            lambda op, xs: n.BoolOp(_S, op, tuple(xs)),
            st.sampled_from(["and", "or"]),
            st.lists(children, min_size=2, max_size=3),
        ),
        children.map(lambda e: n.Unary(_S, "not", e)),
        not_a_number.map(lambda e: n.Unary(_S, "neg", e)),
        st.builds(lambda a, b, c: n.Between(_S, a, b, c), children, children, children),
        st.builds(lambda a, p: n.Presence(_S, a, p), children, st.booleans()),
        st.lists(children, max_size=2).map(lambda xs: n.Call(_S, "coalesce", tuple(xs))),
        st.lists(children, max_size=2).map(lambda xs: n.ListLit(_S, tuple(xs))),
    )


expressions = st.recursive(leaves, _extend, max_leaves=12)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(expressions)
def test_any_expression_prints_to_text_that_parses_back_to_it(e: n.Expr) -> None:
    text = f"ruleset r\nsegment s = {expr(e)}\n"
    (seg,) = dsl.parse(text, "h.rules").of(n.SegmentDecl)
    assert seg.expr == e
    assert fmt(text, "h.rules") == fmt(fmt(text, "h.rules"), "h.rules")


def _commented_everywhere(text: str) -> tuple[str, list[str]]:
    """The text with a comment after every line that has code and one between every two lines."""
    out: list[str] = []
    markers: list[str] = []
    for i, line in enumerate(text.splitlines()):
        alone = f"# between-{i}"
        markers.append(alone)
        out.append(alone)
        if line.strip() and "#" not in line:
            trailing = f"# after-{i}"
            markers.append(trailing)
            line += "  " + trailing
        out.append(line)
    return "\n".join(out) + "\n", markers


@pytest.mark.parametrize("path", ALL, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_comments_anywhere_are_kept_and_change_nothing(path: Path) -> None:
    text, markers = _commented_everywhere(path.read_text(encoding="utf-8"))
    before = dsl.parse(text, str(path))
    once = fmt(text, str(path))
    assert dsl.parse(once, str(path)).decls == before.decls
    assert fmt(once, str(path)) == once
    for marker in markers:
        assert marker in once, marker

"""Parsing: text → AST nodes with spans, literals, and friendly syntax errors."""

from __future__ import annotations

import pytest
from lark import Lark
from lark.exceptions import GrammarError

from arbiter import dsl
from arbiter.dsl import nodes as n
from arbiter.dsl.errors import RulesError
from arbiter.dsl.parser import _GRAMMAR
from arbiter.dsl.syntax_errors import SYNTAX_CASES


def parse(body: str) -> n.Ruleset:
    return dsl.parse("ruleset r\n" + body, "r.rules")


def first_error(text: str) -> dsl.Diagnostic:
    with pytest.raises(RulesError) as info:
        dsl.parse(text, "bad.rules")
    return info.value.first


def strict_lalr(grammar: str) -> Lark:
    """The parser's grammar built as `dsl.parser` builds it, but strict.

    Without `strict=True` Lark resolves a shift/reduce conflict silently in
    favour of shift; strict mode (which needs `interegular`) makes it an error,
    as it does terminals whose regular expressions collide.
    """
    return Lark(
        grammar, parser="lalr", strict=True, propagate_positions=True, maybe_placeholders=False
    )


def test_grammar_is_lalr_without_conflicts() -> None:
    strict_lalr(_GRAMMAR.read_text(encoding="utf-8"))


def test_a_shift_reduce_conflict_fails_the_strict_build() -> None:
    # A binary operator with no precedence level: `a ~ b ~ c` can group either way.
    conflicting = _GRAMMAR.read_text(encoding="utf-8") + '\n%extend sum: sum "~" sum\n'
    Lark(conflicting, parser="lalr")  # what the non-strict build does: resolves it silently
    with pytest.raises(GrammarError, match="Shift/Reduce conflict"):
        strict_lalr(conflicting)


# ------------------------------------------------------------------ the table of mistakes


@pytest.mark.parametrize(
    ("code", "example"),
    [(case.code, example) for case in SYNTAX_CASES for example in case.examples],
)
def test_every_example_in_the_table_gets_its_code(code: str, example: str) -> None:
    assert first_error(example).code == code


@pytest.mark.parametrize(
    ("text", "code", "line", "column"),
    [
        # The same mistakes nested deeper than the table's examples.
        ("ruleset r\nif a {\n  if b {\n    when c > 1 d\n  }\n}\n", "missing-offer", 4, 16),
        ("ruleset r\nif a {\n  when c.d = 2 offer x\n}\n", "double-equals", 3, 12),
        ("ruleset r\nscenario \"s\" {\n  context { page: 'home' }\n}\n", "single-quote", 3, 19),
        ("ruleset r\nif a {\n  when a offer x\n\nsegment s = true\n", "unclosed-brace", 2, 6),
        ("ruleset r\nprofile { a: number\naction x { value 1 }\n", "unclosed-brace", 2, 9),
        ("ruleset r\naction x { value 1\n", "unclosed-brace", 2, 10),
        ("ruleset r\nwhen a or !b offer x\n", "logical-operator", 2, 11),
        ("ruleset r\nwhen a != b offer x\nwhen a b\n", "missing-offer", 3, 8),
    ],
)
def test_mistakes_are_recognised_in_context(text: str, code: str, line: int, column: int) -> None:
    diag = first_error(text)
    assert (diag.code, diag.span.line, diag.span.column) == (code, line, column)


def test_a_correct_comparison_is_not_mistaken_for_assignment() -> None:
    # `!=` and `==` are comparisons; only a lone `=` is the mistake.
    parse("action x { value 1 }\nwhen 1 != 2 offer x\nwhen 1 == 1 offer x\n")


def test_syntax_error_text() -> None:
    with pytest.raises(RulesError) as info:
        dsl.parse("ruleset r\naction x { value 1 }\nwhen profile.a = 3 offer x\n", "shop.rules")
    assert info.value.format() == (
        "shop.rules:3:16: error[double-equals]: '=' assigns; to compare, use '=='\n"
        "    when profile.a = 3 offer x\n"
        "                   ^\n"
        "  hint: write: when profile.a == 3 offer x"
    )


def test_unknown_statement_suggests_the_keyword() -> None:
    diag = first_error("ruleset r\nsegmnt s = true\n")
    assert diag.code == "unknown-statement"
    assert diag.hint == "did you mean 'segment'?"


def test_generic_syntax_error_lists_what_was_expected() -> None:
    diag = first_error("ruleset r\naction x { value }\n")
    assert diag.code == "syntax"
    assert diag.message == "unexpected '}', expected '-', a number or a whole number"


def test_a_string_holding_a_brace_does_not_confuse_the_brace_count() -> None:
    diag = first_error('ruleset r\naction x { payload { a: "}" }\n')
    assert diag.code == "unclosed-brace"
    assert (diag.span.line, diag.span.column) == (2, 10)


# ------------------------------------------------------------------ the AST


def test_nodes_carry_spans() -> None:
    rs = parse("action welcome { value 5 }\n\n  when profile.visits <= 1 offer welcome\n")
    rule = rs.of(n.WhenRule)[0]
    assert (rule.span.line, rule.span.column) == (4, 3)
    assert (rule.action_span.line, rule.action_span.column) == (4, 34)
    assert (rule.condition.span.line, rule.condition.span.column) == (4, 8)
    action = rs.of(n.ActionDecl)[0]
    assert (action.name_span.line, action.name_span.column) == (2, 8)


def test_action_properties_with_or_without_commas() -> None:
    with_commas = parse(
        'action a { value 5, channels [web, app], cap 2 per 7d, requires consent "email",'
        ' tags [promo], discount_pct 10, payload { code: "X", n: [1, 2] } }'
    ).of(n.ActionDecl)[0]
    without = parse(
        'action a { value 5 channels [web app] cap 2 per 7d requires consent "email"'
        ' tags [promo] discount_pct 10 payload { code: "X", n: [1, 2] } }'
    ).of(n.ActionDecl)[0]
    assert with_commas == without
    assert with_commas.cap == n.Cap(2, 7 * 86400, "2 per 7d")
    assert with_commas.attributes == {"discount_pct": 10}
    assert with_commas.payload == {"code": "X", "n": [1, 2]}


def test_validity_includes_the_whole_last_day() -> None:
    action = parse("action a { valid 2026-12-01 .. 2026-12-24 }").of(n.ActionDecl)[0]
    assert action.valid_until is not None and action.valid_from is not None
    assert action.valid_until - action.valid_from == 24 * 86400


def test_duplicate_property_is_an_error() -> None:
    diag = first_error("ruleset r\naction a { value 1, value 2 }\n")
    assert diag.code == "duplicate-property"


def test_per_action_model() -> None:
    rs = parse(
        'model click = onnx "m.onnx" inputs (value, action.discount) per action\n'
        'model churn = onnx "c.onnx" inputs (profile.a)\n'
    )
    click, churn = rs.of(n.ModelDecl)
    assert click.per_action and not churn.per_action
    assert click.inputs[1] == n.Ref(n.NO_SPAN, ("action", "discount"))


def test_min_and_max_are_both_functions_and_aggregates() -> None:
    rs = parse(
        "action a { }\nwhen max(profile.a, profile.b) > 1 offer a\n"
        "when max(purchase.amount within 30d) > 1 offer a\n"
    )
    call, agg = (r.condition for r in rs.of(n.WhenRule))
    assert isinstance(call, n.Binary) and isinstance(call.left, n.Call)
    assert isinstance(agg, n.Binary) and isinstance(agg.left, n.Aggregate)
    assert agg.left.prop == "amount" and agg.left.window_seconds == 30 * 86400


def test_precedence() -> None:
    rs = parse("action a { }\nwhen not x and y or z offer a\n")
    cond = rs.of(n.WhenRule)[0].condition
    assert isinstance(cond, n.BoolOp) and cond.op == "or"
    left = cond.operands[0]
    assert isinstance(left, n.BoolOp) and left.op == "and"
    assert isinstance(left.operands[0], n.Unary)


def test_else_if_nests() -> None:
    rs = parse("action a { }\nif x { when y offer a } else if z { } else { when w offer a }\n")
    block = rs.of(n.IfBlock)[0]
    (inner,) = block.orelse
    assert isinstance(inner, n.IfBlock) and len(inner.orelse) == 1


def test_literals() -> None:
    rs = parse(
        "action a { }\nwhen x > -2.5 and y < 5% and z == 2026-03-01T10:30:00Z and d > 90min offer a\n"
    )
    cond = rs.of(n.WhenRule)[0].condition
    assert isinstance(cond, n.BoolOp)
    values = [op.right for op in cond.operands if isinstance(op, n.Binary)]
    assert values[0] == n.Number(n.NO_SPAN, -2.5)
    assert values[1] == n.Percent(n.NO_SPAN, 0.05, "5%")
    assert isinstance(values[2], n.TimeLit) and values[2].epoch == 1772361000.0
    assert values[3] == n.Duration(n.NO_SPAN, 5400, "90min")


def test_scenario_parts() -> None:
    rs = parse(
        'scenario "vip" {\n'
        '  customer "c-42"\n'
        '  profile { visits: 3, consents: ["email"], since: null }\n'
        "  context { channel: web }\n"
        "  events { add_to_cart: 2 3h ago, purchase.amount: 120 10d ago, page_view: 1 }\n"
        "  scores { churn: 0.8, click: { a: 0.1 } }\n"
        "  experiments { banner: bold }\n"
        "  in holdout\n"
        "  now 2026-03-01\n"
        "  expect [a, b]\n"
        "}\n"
        'scenario "none" { expect nothing }\n'
    )
    vip, none = rs.of(n.ScenarioDecl)
    assert vip.customer == "c-42" and vip.in_holdout
    assert vip.profile == {"visits": 3, "consents": ["email"], "since": None}
    assert vip.context == {"channel": "web"}
    assert vip.events == (
        n.ScenarioEvent("add_to_cart", None, 2, 3 * 3600),
        n.ScenarioEvent("purchase", "amount", 120, 10 * 86400),
        n.ScenarioEvent("page_view", None, 1, 0),
    )
    assert vip.scores == {"churn": 0.8, "click": {"a": 0.1}}
    assert vip.variants == {"banner": "bold"}
    assert vip.expect == ("a", "b")
    assert none.expect == () and none.customer is None and not none.in_holdout


def test_comments_are_ignored_but_hash_in_strings_is_kept() -> None:
    rs = parse('# a comment\naction a { payload { tag: "#1" } }  # trailing\n')
    assert rs.of(n.ActionDecl)[0].payload == {"tag": "#1"}


def test_impossible_dates_are_errors() -> None:
    diag = first_error('ruleset r\nscenario "s" { now 2026-02-30 expect nothing }\n')
    assert diag.code == "invalid-date"
    assert diag.message == "2026-02-30 is not a real date"


def test_the_parser_returns_only_nodes() -> None:
    rs = parse("action a { value 1 }\nwhen true offer a\n")
    assert isinstance(rs, n.Ruleset)
    assert all(isinstance(d, n.Decl) for d in rs.decls)

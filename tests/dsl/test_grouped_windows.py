"""Grouped and distinct windows and calendar months in the language: parsing, printing, errors.

Every mistake a marketer can make with `count(… by p)` and `distinct(…)` is an
error at the line and column of the aggregate, with its exact text and hint.
"""

from __future__ import annotations

import pytest

from arbiter import dsl
from arbiter.dsl import nodes as n
from arbiter.dsl.errors import RulesError
from arbiter.dsl.printing import expr

HEAD = (
    "ruleset r\n"
    "event product_view { category: string, price: number }\n"
    "event purchase { amount: number }\n"
    "action a { value 1 }\n"
)


def diagnostics(text: str) -> list[str]:
    with pytest.raises(RulesError) as info:
        dsl.check(dsl.parse(text, "r.rules"))
    return [
        f"{d.span.line}:{d.span.column} {d.code}: {d.message} | {d.hint}"
        for d in info.value.diagnostics
    ]


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (
            "when count(product_view within 24h by category) >= 3 offer a",
            "5:6 type-mismatch: count(product_view within 24h by category) is one count per"
            " category, not a number | compare the largest:"
            " max(count(product_view within 24h by category)) >= 3",
        ),
        (
            "when max(count(product_view within 24h by price)) >= 3 offer a",
            "5:10 type-mismatch: product_view.price is a number: events are grouped by a string"
            " property | product_view's string properties: category",
        ),
        (
            "when max(count(product_view within 24h by categry)) >= 3 offer a",
            "5:10 unknown-field: event product_view has no field 'categry'"
            " | did you mean 'category'?",
        ),
        (
            "when distinct(product_view.categry within 30d) >= 3 offer a",
            "5:6 unknown-field: event product_view has no field 'categry'"
            " | did you mean 'category'?",
        ),
        (
            "when distinct(product_view within 30d) >= 3 offer a",
            "5:6 missing-property: distinct() needs an event property, e.g."
            " distinct(product_view.category within 30d) | None",
        ),
        (
            "when distinct(product_view.price within 30d) >= 3 offer a",
            "5:6 type-mismatch: product_view.price is a number: events are grouped by a string"
            " property | product_view's string properties: category",
        ),
        (
            "when max(sum(purchase.amount within 30d by category)) > 1 offer a",
            "5:10 type-mismatch: only count() can be grouped 'by' a property, not sum()"
            " | write max(count(purchase within 30d by category))",
        ),
        (
            "when distinct(product_view.category within 30d by category) > 1 offer a",
            "5:6 type-mismatch: distinct() counts the values of one property; drop the 'by'"
            " | write distinct(product_view.category within 30d)",
        ),
        (
            "when max(count(product_view within 0mo by category)) > 1 offer a",
            "5:10 bad-window: the window must be longer than zero | None",
        ),
    ],
)
def test_grouping_mistakes_are_errors(line: str, expected: str) -> None:
    assert diagnostics(HEAD + line + "\n") == [expected]


def test_grouping_needs_a_declared_event_property() -> None:
    text = (
        "ruleset r\naction a { value 1 }\nwhen max(count(v within 24h by category)) >= 3 offer a\n"
    )
    assert diagnostics(text) == [
        "3:10 unknown-field: grouping by 'category' needs it declared as a string property"
        " of v | declare it: event v { category: string }"
    ]


@pytest.mark.parametrize(
    ("event", "expected"),
    [
        ("product_view.category: 3", "product_view.category takes a text value in quotes"),
        ('purchase.amount: "x"', "purchase.amount takes a number"),
        ('product_view: "shoes"', "product_view: a text value belongs to a property, e.g."
         " product_view.category"),
    ],
)  # fmt: skip
def test_scenario_event_values_match_their_property(event: str, expected: str) -> None:
    text = HEAD + (
        "when max(count(product_view within 24h by category)) >= 3 offer a\n"
        f'scenario "s" {{\n  events {{ {event} }}\n  expect [a]\n}}\n'
    )
    assert diagnostics(text) == [f"7:12 scenario-value: {expected} | None"]


def test_checked_forms_and_printing() -> None:
    text = HEAD + (
        "segment focus = max(count(product_view within 24h by category)) >= 3\n"
        "segment explorer = distinct(product_view.category within 2 months) >= 5\n"
        "when focus and explorer offer a\n"
    )
    checked = dsl.check(dsl.parse(text, "r.rules"))
    focus = checked.segments["focus"].expr
    explorer = checked.segments["explorer"].expr
    assert isinstance(focus, n.Binary) and isinstance(explorer, n.Binary)
    top, distinct = focus.left, explorer.left
    assert isinstance(top, n.Aggregate) and isinstance(distinct, n.Aggregate)
    assert (top.fn, top.event, top.prop, top.window_seconds) == (
        "max_count", "product_view", "category", 86400,
    )  # fmt: skip
    # A calendar month is a negative window: -N months.
    assert (distinct.fn, distinct.prop, distinct.window_seconds) == ("distinct", "category", -2)
    assert expr(top) == "max(count(product_view within 24h by category))"
    assert expr(distinct) == "distinct(product_view.category within 2 months)"

"""Reserved words and duration units: the silent traps of issue 9 are errors now."""

from __future__ import annotations

import re

import pytest

from arbiter import dsl
from arbiter.dsl import nodes as n
from arbiter.dsl.errors import RulesError
from arbiter.dsl.parser import _parser
from arbiter.dsl.reserved import KEYWORDS


def test_keywords_are_the_grammars_words() -> None:
    words = {
        str(t.pattern.value)
        for t in _parser().terminals
        if t.pattern.type == "str" and re.fullmatch(r"[a-z_]+", str(t.pattern.value))
    }
    assert words == KEYWORDS


@pytest.mark.parametrize("name", ["true", "false", "missing", "now", "not", "count", "within"])
def test_a_segment_may_not_take_a_reserved_word(name: str) -> None:
    text = (
        f"ruleset r\nprofile {{ v: int }}\naction a {{ value 1 }}\nsegment {name} = profile.v > 1\n"
    )
    with pytest.raises(RulesError) as info:
        dsl.check(dsl.parse(text + "when profile.v > 2 offer a\n", "r.rules"))
    assert [d.code for d in info.value.diagnostics] == ["reserved-name"]
    assert (info.value.first.span.line, info.value.first.span.column) == (4, 9)


@pytest.mark.parametrize(
    ("text", "seconds", "months"),
    [
        ("90min", 5400, 0),
        ("2w", 2 * 604800, 0),
        ("2 weeks", 2 * 604800, 0),
        ("1 week", 604800, 0),
        ("3 days", 3 * 86400, 0),
        # A month literal keeps its months: added to a time it moves by calendar months.
        ("1mo", 30 * 86400, 1),
        ("2 months", 60 * 86400, 2),
        ("36h", 36 * 3600, 0),
        ("30 seconds", 30, 0),
    ],
)
def test_duration_units(text: str, seconds: float, months: int) -> None:
    rs = dsl.parse(f"ruleset r\naction a {{ value 1 }}\nwhen now() - now() < {text} offer a\n")
    rule = rs.of(n.WhenRule)[0]
    assert rule.condition.right == n.Duration(n.NO_SPAN, seconds, text, months)


def test_one_m_is_ambiguous() -> None:
    with pytest.raises(RulesError) as info:
        dsl.parse("ruleset r\nevent e\naction a { value 1 }\nwhen count(e within 1m) > 1 offer a\n")
    assert info.value.first.code == "ambiguous-unit"
    assert info.value.first.message == "'1m' could mean 1 minute or 1 month"
    assert info.value.first.hint == "write 1min for minutes or 1mo for months"

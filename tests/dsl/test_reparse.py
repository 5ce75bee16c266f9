"""`dsl.reparse`: an editor's parse that reuses unchanged declarations gives exactly
what `dsl.parse` gives (spans included), for every example and after every edit."""

from __future__ import annotations

from pathlib import Path

import pytest
from support.paths import CASES_DIR, RULESETS_DIR

from arbiter import dsl
from arbiter.dsl.reparse import Reparser

EXAMPLES = sorted(RULESETS_DIR.glob("*.rules")) + sorted(CASES_DIR.glob("**/*.rules"))
RETAIL = (RULESETS_DIR / "retail.rules").read_text(encoding="utf-8")


def outcome(parse: object, text: str, name: str = "f.rules") -> str:
    """The parse as text (every node and span), or the errors exactly as reported."""
    try:
        return repr(parse(text, name))  # type: ignore[operator]
    except dsl.RulesError as exc:
        return "error: " + exc.format()


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: str(p.relative_to(p.parents[1])))
def test_every_example_parses_as_the_whole_text_does(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    assert outcome(Reparser().parse, text) == outcome(dsl.parse, text)


@pytest.mark.parametrize("path", EXAMPLES[:3], ids=lambda p: p.name)
def test_lines_added_above_move_the_remembered_declarations(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    header, rest = text.split("\n", 1)
    reparser = Reparser()
    reparser.parse(text, "f.rules")
    for moved in (f"{header}\n\n\n{rest}", f"{header}\n{rest}", f"{header}\n\n{rest}"):
        before = reparser.reused
        assert outcome(reparser.parse, moved) == outcome(dsl.parse, moved)
        assert reparser.reused > before  # moved, not parsed again


def test_edit_after_edit_only_the_changed_declaration_is_parsed_again() -> None:
    reparser = Reparser()
    line = "segment vip = profile.lifetime_value > 1000 and profile.orders_90d >= 3"
    assert line in RETAIL
    edits = [
        RETAIL,
        RETAIL.replace(line, line.replace("1000", "1200")),  # a keystroke
        RETAIL.replace(line, line.replace("1000", "12000")),
        RETAIL.replace(line, line.replace("1000", "1200") + "\n"),  # a new line: later lines move
        RETAIL.replace(line, line.replace("> 1000", "> ")),  # a syntax error
        RETAIL.replace(line, line.replace(" and", "\n    and")),  # an expression over two lines
        RETAIL.replace(line, ""),  # a declaration removed
        RETAIL,
    ]
    for text in edits:
        assert outcome(reparser.parse, text, "retail.rules") == outcome(
            dsl.parse, text, "retail.rules"
        )
    before = reparser.reused
    reparser.parse(RETAIL.replace(line, line.replace("1000", "1300")), "retail.rules")
    pieces = sum(RETAIL.count("\n" + word + " ") for word in ("segment", "action", "scenario"))
    assert reparser.reused - before >= pieces - 1  # all but the edited one reused


def test_a_declaration_word_inside_braces_falls_back_to_the_whole_parse() -> None:
    # `action` starts a line inside a contact policy: a cut there leaves pieces that do
    # not parse, and the whole text is parsed instead (same answer).
    text = (
        "ruleset p\naction a { channels [email] }\ncontact policy {\n"
        "action a: 1 per 7d\n}\nwhen true offer a\n"
    )
    assert "error" not in outcome(dsl.parse, text)
    assert outcome(Reparser().parse, text) == outcome(dsl.parse, text)


def test_pieces_are_remembered_within_a_bound() -> None:
    reparser = Reparser(size=4)
    for k in range(10):
        reparser.parse(RETAIL.replace("1000", str(1000 + k)), "retail.rules")
    assert len(reparser._pieces) == 4

"""The TextMate grammar in editors/ scores every token of every example ruleset as the
language's own lexer (Lark, from dsl/grammar.lark) reads it."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path

import pytest
from lark import Lark, Token
from support.paths import ROOT_DIR, RULESETS_DIR
from support.textmate import Grammar, scope_at

EDITORS = ROOT_DIR / "editors" / "vscode"
GRAMMAR = Grammar(EDITORS / "syntaxes" / "rules.tmLanguage.json")
EXAMPLES = sorted(RULESETS_DIR.glob("*.rules"))
KEYWORDISH = (
    "keyword.",
    "storage.type.",
    "constant.language.",
    "variable.language.",
    "support.function.",
)


SEEN: list[Token] = []


@cache
def parser() -> Lark:
    """Arbiter's own grammar, parsing as the DSL does (LALR, contextual lexer), with every
    token it lexes, the comments it skips included, collected in SEEN."""
    text = (ROOT_DIR / "dsl" / "grammar.lark").read_text(encoding="utf-8")
    names = [t.name for t in Lark(text, parser="lalr").terminals]

    def seen(tok: Token) -> Token:
        SEEN.append(tok)
        return tok

    return Lark(text, parser="lalr", lexer_callbacks=dict.fromkeys(names, seen))


def tokens(text: str) -> list[Token]:
    """Every token of the text as the parser reads it, in order."""
    SEEN.clear()
    parser().parse(text)
    return sorted(SEEN, key=lambda t: (t.line or 0, t.column or 0))


def expected_scope(tok: Token) -> tuple[str, ...] | None:
    """The scope prefixes a token may carry, by the token's type."""
    kind = tok.type
    if kind == "COMMENT":
        return ("comment.line.number-sign.rules",)
    if kind == "STRING":
        return ("string.quoted.double.rules",)
    if kind == "DURATION":
        return ("constant.numeric.duration.rules",)
    if kind in {"DATE", "DATETIME"}:
        return ("constant.numeric.date.rules",)
    if kind == "PERCENT":
        return ("constant.numeric.percent.rules",)
    if kind in {"NUMBER", "INT"}:
        return ("constant.numeric.rules",)
    if kind == "AGGREGATE":
        return ("support.function.aggregate.rules", "keyword.")
    if tok.value.isidentifier() and kind == tok.value.upper():
        return KEYWORDISH
    return None


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_every_token_of_an_example_is_scoped_as_the_language_reads_it(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    scoped = GRAMMAR.tokenize(text)
    checked = {"comment": 0, "string": 0, "duration": 0, "number": 0, "keyword": 0, "name": 0}
    for tok in tokens(text):
        assert tok.line is not None and tok.column is not None
        scopes = scope_at(scoped, tok.line, tok.column - 1)
        innermost = scopes[-1] if scopes else ""
        want = expected_scope(tok)
        where = f"{path.name}:{tok.line}:{tok.column} {tok.type} {tok.value!r}: {scopes}"
        if tok.type == "NAME":
            # a name is never taken for a string, a comment or a number
            assert not innermost.startswith(("string", "comment", "constant.numeric")), where
            checked["name"] += 1
            continue
        if want is None:
            continue
        assert innermost.startswith(want), where
        # the whole token carries the scope, not just its first character
        end = tok.column - 1 + len(tok.value.splitlines()[0]) - 1
        assert scope_at(scoped, tok.line, end) == scopes, where
        key = {"COMMENT": "comment", "STRING": "string", "DURATION": "duration"}.get(tok.type)
        if key is None:
            key = (
                "number"
                if tok.type in {"NUMBER", "INT", "PERCENT", "DATE", "DATETIME"}
                else "keyword"
            )
        checked[key] += 1
    assert all(checked.values()), checked  # every kind occurs in every example


def test_declared_names_are_entity_names_and_references_are_split() -> None:
    scoped = GRAMMAR.tokenize("segment vip = profile.lifetime_value > 1000 # big\n")
    assert scope_at(scoped, 1, 0)[-1] == "keyword.other.declaration.rules"
    assert scope_at(scoped, 1, 8)[-1] == "entity.name.type.rules"
    assert scope_at(scoped, 1, 14)[-1] == "variable.language.rules"
    assert scope_at(scoped, 1, 22)[-1] == "variable.other.property.rules"
    assert scope_at(scoped, 1, 37)[-1] == "keyword.operator.comparison.rules"
    assert scope_at(scoped, 1, 45)[-1] == "comment.line.number-sign.rules"


def test_the_vscode_manifest_points_at_the_grammar() -> None:
    manifest = json.loads((EDITORS / "package.json").read_text(encoding="utf-8"))
    [grammar] = manifest["contributes"]["grammars"]
    assert (EDITORS / grammar["path"]).is_file()
    assert grammar["scopeName"] == GRAMMAR.scope
    [language] = manifest["contributes"]["languages"]
    assert language["extensions"] == [".rules"]
    assert (EDITORS / language["configuration"]).is_file()

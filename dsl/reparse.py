"""Parse an edited text again, reusing the declarations that did not change.

Editors check the whole text on every keystroke (the studio's `POST
/v1/check`, `arbiter lsp`), but a keystroke changes one declaration, and the
parse is most of a check. So the text is cut before every line that starts,
in its first column, with a word that starts a top-level declaration; each
piece is parsed on its own, at its own lines (after a `ruleset _` line and
blank lines, as `parser._syntax_errors` resumes, so spans are those of the
file), and remembered by (file, text). A piece met again at another line (a
line was added or removed above it) is not parsed again: its spans are moved.

When every piece parses, their declarations in order are exactly the whole
text's: the grammar is `header item*` and unambiguous, and a piece ends at a
line end, which no token spans. When any piece does not parse (a cut inside
an unindented block, a syntax error), the whole text is parsed as `parse`
does, so errors are reported exactly as before.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from dataclasses import fields, is_dataclass, replace
from itertools import pairwise
from typing import Any

from arbiter.dsl import nodes as n
from arbiter.dsl.errors import RulesError
from arbiter.dsl.parser import parse

#: Words that start a declaration that never sits inside braces (a cut before a rule
#: word, `when`/`if`/`suppress`, could fall inside an unindented `if` block).
_TOP_LEVEL = (
    "include", "event", "model", "segment", "action", "bandit", "arbitrate", "contact",
    "holdout", "experiment", "default", "trigger", "scenario",
)  # fmt: skip
_CUT = re.compile(rf"^(?:{'|'.join(_TOP_LEVEL)})\b", re.MULTILINE)

#: Pieces remembered (a few rulesets of a few hundred declarations each).
CACHE_SIZE = 2048


class Reparser:
    """`parse`, reusing the declarations of pieces of text it has parsed before."""

    def __init__(self, size: int = CACHE_SIZE) -> None:
        self.size = size
        # (file, text) -> (the line it was parsed at, the parse)
        self._pieces: OrderedDict[tuple[str, str], tuple[int, n.Ruleset]] = OrderedDict()
        self.reused = 0  # pieces taken from the cache (tests and benchmarks read it)

    def parse(self, text: str, filename: str = "<rules>") -> n.Ruleset:
        """The same `Ruleset` as `dsl.parse(text, filename)`; raises `RulesError` as it does."""
        text = text.removeprefix("\ufeff")
        cuts = [m.start() for m in _CUT.finditer(text)]
        if not cuts or cuts[0] == 0:
            return parse(text, filename)  # no header piece: let the full parse say why
        bounds = [0, *cuts, len(text)]
        try:
            head = self._piece(text[: bounds[1]], 1, filename)
            decls = list(head.decls)
            line = text.count("\n", 0, bounds[1]) + 1
            for start, end in pairwise(bounds[1:]):
                piece = text[start:end]
                decls.extend(self._piece(piece, line, filename).decls)
                line += piece.count("\n")
        except RulesError:
            return parse(text, filename)
        return n.Ruleset(head.name, head.span, tuple(decls), text)

    def _piece(self, piece: str, line: int, filename: str) -> n.Ruleset:
        """The piece parsed at `line` (line 1: the header piece, parsed as it is)."""
        key = (filename, piece)
        found = self._pieces.get(key)
        if found is not None and (found[0] == 1) == (line == 1):
            self._pieces.move_to_end(key)
            self.reused += 1
            at, parsed = found
            if at != line:
                parsed = _moved(parsed, line - at)
                self._pieces[key] = (line, parsed)
            return parsed
        # Later pieces: `ruleset _` on line 1, blank lines down to the piece's first line.
        parsed = parse(piece if line == 1 else "ruleset _" + "\n" * (line - 1) + piece, filename)
        parsed = replace(parsed, source="")  # not kept: the padded text is as long as the file
        self._pieces[key] = (line, parsed)
        while len(self._pieces) > self.size:
            self._pieces.popitem(last=False)
        return parsed


def _moved(value: Any, lines: int) -> Any:
    """`value` (a node, or what a node holds) with every span `lines` further down."""
    if isinstance(value, n.Span):
        if value.line <= 0:  # no position (generated)
            return value
        return n.Span(
            value.file, value.line + lines, value.column, value.end_line + lines, value.end_column
        )
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    if isinstance(value, tuple):
        return tuple(_moved(v, lines) for v in value)
    if isinstance(value, list):
        return [_moved(v, lines) for v in value]
    if isinstance(value, dict):
        return {k: _moved(v, lines) for k, v in value.items()}
    if is_dataclass(value) and not isinstance(value, type):
        return replace(
            value, **{f.name: _moved(getattr(value, f.name), lines) for f in fields(value)}
        )
    return value

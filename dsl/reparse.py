"""Parse an edited text again, reusing the declarations that did not change.

Editors check the whole text on every keystroke (the studio's `POST
/v1/check`, `arbiter lsp`), but a keystroke changes one declaration, and the
parse is most of a check. So the text is cut before every line that starts,
in its first column, with a word that starts a top-level declaration; each
piece is parsed on its own, at its own lines (after a `ruleset _` line and
blank lines, as `parser._syntax_errors` resumes, so spans are those of the
file), and remembered by (file, first line, text).

When every piece parses, their declarations in order are exactly the whole
text's: the grammar is `header item*` and unambiguous, and a piece ends at a
line end, which no token spans. When any piece does not parse (a cut inside
an unindented block, a syntax error), the whole text is parsed as `parse`
does, so errors are reported exactly as before.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from itertools import pairwise

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
        self._pieces: OrderedDict[tuple[str, int, str], n.Ruleset] = OrderedDict()
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
        key = (filename, line, piece)
        found = self._pieces.get(key)
        if found is not None:
            self._pieces.move_to_end(key)
            self.reused += 1
            return found
        # Later pieces: `ruleset _` on line 1, blank lines down to the piece's first line.
        parsed = parse(piece if line == 1 else "ruleset _" + "\n" * (line - 1) + piece, filename)
        self._pieces[key] = parsed
        while len(self._pieces) > self.size:
            self._pieces.popitem(last=False)
        return parsed

"""Check `.rules` text without using it: every diagnostic, and what could be built.

The studio's `POST /v1/check` and `arbiter lsp` call this on every edit. It is
the same pipeline as `arbiter check` (load with includes, parse, check); a
syntax error stops at the parse, so `ruleset` is None then and editors keep
their last outline.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from arbiter.dsl import nodes as n
from arbiter.dsl.checked import CheckedRuleset
from arbiter.dsl.checker import check
from arbiter.dsl.errors import Diagnostic, RulesError
from arbiter.dsl.loader import load
from arbiter.dsl.parser import parse
from arbiter.dsl.reparse import Reparser


@dataclass
class Diagnosis:
    """The outcome of checking one text."""

    diagnostics: list[Diagnostic] = field(default_factory=list)
    ruleset: n.Ruleset | None = None  # parsed (includes spliced in), or None on a syntax error
    checked: CheckedRuleset | None = None  # None when any error was found
    sources: dict[str, str] = field(default_factory=dict)

    @property
    def errors(self) -> list[Diagnostic]:
        """The error diagnostics (warnings left out)."""
        return [d for d in self.diagnostics if d.severity == "error"]


def diagnose(path: str | Path, text: str, reparser: Reparser | None = None) -> Diagnosis:
    """Parse and check `text` as if it were the file at `path` (its includes resolve there).

    An editor checking text after text passes its `Reparser`: declarations that did not
    change since an earlier check are not parsed again (the answer is the same).
    """
    out = Diagnosis()
    try:
        out.ruleset, out.sources = load(path, text, reparser.parse if reparser else parse)
    except RulesError as exc:
        out.diagnostics = list(exc.diagnostics)
        out.sources = exc.sources or {str(path): text}
        return out
    try:
        out.checked = check(out.ruleset, out.sources)
    except RulesError as exc:
        out.diagnostics = list(exc.diagnostics)
        return out
    out.diagnostics = list(out.checked.warnings)
    return out

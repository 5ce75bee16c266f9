"""Diagnostics for `.rules` files: one shape for syntax, semantic and run-time problems.

A `Diagnostic` has a stable `code` (e.g. `unknown-name`), a `Span`, a message
and an optional hint ("did you mean …"). The CLI and the HTTP admin API print
the same codes. `RulesError` carries one or more error diagnostics.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

from arbiter.dsl.nodes import Span

Severity = Literal["error", "warning"]

#: At most this many diagnostics are reported per file; the rest are counted.
MAX_DIAGNOSTICS = 50


@dataclass(frozen=True, slots=True)
class Diagnostic:
    """One located problem in a `.rules` file."""

    code: str
    message: str
    span: Span
    severity: Severity = "error"
    hint: str | None = None

    def format(self, source: str | None = None) -> str:
        """`file:line:col: severity[code]: message`, then the source line and a caret."""
        head = f"{self.span}: {self.severity}[{self.code}]: {self.message}"
        lines = [head]
        if source is not None and self.span.line >= 1:
            text_lines = source.splitlines()
            if self.span.line <= len(text_lines):
                text = text_lines[self.span.line - 1]
                width = 1
                if self.span.end_line == self.span.line and self.span.end_column > self.span.column:
                    width = self.span.end_column - self.span.column
                lines.append(f"    {text}")
                lines.append("    " + " " * (self.span.column - 1) + "^" * width)
        if self.hint:
            lines.append(f"  hint: {self.hint}")
        return "\n".join(lines)

    def to_json(self) -> dict[str, object]:
        """A JSON-ready dict, the shape `arbiter check --format json` and the API print."""
        return {
            "code": self.code,
            "severity": self.severity,
            "message": self.message,
            "file": self.span.file,
            "line": self.span.line,
            "column": self.span.column,
            "hint": self.hint,
        }


def sort_and_cap(diags: Iterable[Diagnostic]) -> list[Diagnostic]:
    """Order diagnostics by place and keep the first `MAX_DIAGNOSTICS`."""
    ordered = sorted(diags, key=lambda d: (d.span.file, d.span.line, d.span.column, d.code))
    return ordered[:MAX_DIAGNOSTICS]


class ArbiterError(Exception):
    """The root of every error Arbiter raises on purpose.

    `code` is stable (tests, logs and the CLI print it); each stage's errors
    subclass this, so a caller can catch them all at once, as the `arbiter`
    command does. It lives in the lowest layer so every layer can derive from it.
    """

    code: str = "arbiter-error"


class RulesError(ArbiterError):
    """A `.rules` file that cannot be used: syntax or semantic errors, with locations."""

    code = "rules-error"

    def __init__(self, diagnostics: Sequence[Diagnostic], sources: dict[str, str] | None = None):
        self.diagnostics = list(diagnostics)
        self.sources = sources or {}
        super().__init__(self.format())

    @property
    def first(self) -> Diagnostic:
        return self.diagnostics[0]

    def format(self) -> str:
        """All diagnostics, each with its source line and caret."""
        return "\n".join(d.format(self.sources.get(d.span.file)) for d in self.diagnostics)


def did_you_mean(name: str, candidates: Iterable[str]) -> str | None:
    """A "did you mean …" hint for a near-miss name, or None."""
    close = difflib.get_close_matches(name, list(candidates), n=1, cutoff=0.7)
    return f"did you mean '{close[0]}'?" if close else None

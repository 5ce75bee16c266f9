"""A small TextMate tokenizer: enough of the format to test `editors/`'s grammar.

Handles what that grammar uses: `patterns` of `match` rules (with `name` and
`captures`) and `include`s of repository entries, applied line by line; at
each position the rule whose match starts first wins, the earlier rule on a
tie, as TextMate does. Its regexes are written in the subset of syntax that
Oniguruma (editors) and Python's `re` read alike.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Scoped:
    """A stretch of one line and the scope names on it (outermost first)."""

    line: int  # 1-based
    start: int  # 0-based column
    end: int
    scopes: tuple[str, ...]


class Grammar:
    """A loaded `.tmLanguage.json` grammar, flattened to one ordered list of match rules."""

    def __init__(self, path: Path) -> None:
        data = json.loads(path.read_text(encoding="utf-8"))
        self.scope = data["scopeName"]
        self.rules: list[tuple[re.Pattern[str], dict[str, Any]]] = []
        self._flatten(data["patterns"], data.get("repository", {}))

    def _flatten(self, patterns: list[dict[str, Any]], repo: dict[str, Any]) -> None:
        for p in patterns:
            if "include" in p:
                target = repo[p["include"].lstrip("#")]
                self._flatten(target.get("patterns", [target]), repo)
            elif "match" in p:
                self.rules.append((re.compile(p["match"]), p))
            elif "patterns" in p:
                self._flatten(p["patterns"], repo)
            else:
                raise ValueError(f"unsupported rule {p}")

    def tokenize(self, text: str) -> list[Scoped]:
        """Every scoped stretch of the text (unscoped text is left out)."""
        out: list[Scoped] = []
        for number, line in enumerate(text.splitlines(), start=1):
            pos = 0
            while pos < len(line):
                best: tuple[re.Match[str], dict[str, Any]] | None = None
                for rx, rule in self.rules:
                    m = rx.search(line, pos)
                    if m and m.end() > m.start() and (best is None or m.start() < best[0].start()):
                        best = (m, rule)
                if best is None:
                    break
                m, rule = best
                outer = (self.scope, rule["name"]) if "name" in rule else (self.scope,)
                out.append(Scoped(number, m.start(), m.end(), outer))
                for group, cap in (rule.get("captures") or {}).items():
                    if m.group(int(group)) is not None:
                        out.append(
                            Scoped(
                                number,
                                m.start(int(group)),
                                m.end(int(group)),
                                (*outer, cap["name"]),
                            )
                        )
                pos = m.end()
        return out


def scope_at(tokens: list[Scoped], line: int, column: int) -> tuple[str, ...]:
    """The innermost scopes covering (line, 0-based column); () if none."""
    best: tuple[str, ...] = ()
    for t in tokens:
        if t.line == line and t.start <= column < t.end and len(t.scopes) >= len(best):
            best = t.scopes
    return best

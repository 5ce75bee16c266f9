"""Comments in `.rules` source, found again by line for `dsl.formatter`.

The parser drops comments, so the formatter re-reads the source text:
`Comments.scan` sorts every line into trailing comment, whole-line comment or
blank, and hands each comment out once to whatever the formatter prints from
that line. The helpers here read source lines the way the parser counts them
and skip `#` inside strings.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from arbiter.dsl import nodes as n


@dataclass
class Comments:
    """The source's comments by line; each is handed out once."""

    trailing: dict[int, str] = field(default_factory=dict)  # after code on the line
    alone: dict[int, str] = field(default_factory=dict)  # the whole line is a comment
    blank: set[int] = field(default_factory=set)
    last_line: int = 0

    @classmethod
    def scan(cls, source: str) -> Comments:
        out = cls()
        lines = source_lines(source)
        out.last_line = len(lines)
        for line_no, text in enumerate(lines, start=1):
            start = comment_start(text)
            if start is None:
                if not text.strip():
                    out.blank.add(line_no)
                continue
            comment = text[start:].rstrip()
            if text[:start].strip():
                out.trailing[line_no] = comment
            else:
                out.alone[line_no] = comment
        return out

    def take_trailing(self, first: int, last: int) -> list[str]:
        """Trailing comments on lines first..last, removed from the pool."""
        return [self.trailing.pop(i) for i in range(first, last + 1) if i in self.trailing]

    def inside(self, span: n.Span) -> bool:
        """Whether any comment sits after the first line of `span` and within it."""
        lines = range(span.line + 1, span.end_line + 1)
        return any(i in self.alone or i in self.trailing for i in lines)

    def take_alone(self, first: int, last: int) -> list[str]:
        return [self.alone.pop(i) for i in range(first, last + 1) if i in self.alone]

    def gap(self, first: int, last: int, indent: str, at_start: bool) -> list[str]:
        """Lines first..last between two items: their comments, and one blank line where
        the source had any (none at the start of a block)."""
        out: list[str] = []
        for i in range(first, last + 1):
            if i in self.alone:
                out.append(indent + self.alone.pop(i))
            elif i in self.blank and out[-1:] != [""] and not (at_start and not out):
                out.append("")
        return out


def source_lines(source: str) -> list[str]:
    # Lines as the parser counts them: only "\n" ends a line (not "\u2028", say).
    return [line.removesuffix("\r") for line in source.split("\n")]


def comment_start(line: str) -> int | None:
    """Where a `#` comment starts, skipping `#` inside double-quoted strings."""
    in_string = False
    i = 0
    while i < len(line):
        ch = line[i]
        if in_string:
            if ch == "\\":
                i += 1
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch == "#":
            return i
        i += 1
    return None


def with_trailing(line: str, comments: Sequence[str]) -> str:
    return line + "  " + "  ".join(comments) if comments else line


def property_lines(source: str, d: n.ActionDecl, keys: Iterable[str]) -> dict[str, int]:
    """The source line of each property keyword at the top level of the action's braces."""
    wanted = set(keys)
    found: dict[str, int] = {}
    lines = source_lines(source)
    depth = 0
    for number_ in range(d.span.line, min(d.span.end_line, len(lines)) + 1):
        text = lines[number_ - 1]
        cut = comment_start(text)
        text = text if cut is None else text[:cut]
        for token in re.finditer(r'"(?:[^"\\]|\\.)*"|[{}\[\]]|[A-Za-z_][A-Za-z0-9_]*', text):
            word = token.group(0)
            if word in "{[":
                depth += 1
            elif word in "}]":
                depth -= 1
            elif depth == 1 and word in wanted and word not in found:
                found[word] = number_
    return found

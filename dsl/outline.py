"""The names a ruleset declares, by kind, with where each is declared.

Editors use it: the studio and `arbiter lsp` complete declared names
(segments, actions, profile and context fields, events, models, bandits,
experiments) and jump to a declaration. It reads the parsed AST only, so it
works on a file whose semantic checks fail.
"""

from __future__ import annotations

from dataclasses import dataclass

from arbiter.dsl import nodes as n

#: The kinds of declared names, in the order editors list them.
KINDS = (
    "segment",
    "action",
    "profile",
    "context",
    "event",
    "model",
    "bandit",
    "experiment",
)


@dataclass(frozen=True, slots=True)
class Symbol:
    """One declared name: `profile` and `context` fields carry their type's text."""

    kind: str
    name: str
    span: n.Span
    detail: str = ""

    def to_json(self) -> dict[str, object]:
        """A JSON-ready dict for the HTTP check endpoint."""
        return {
            "kind": self.kind,
            "name": self.name,
            "detail": self.detail,
            "line": self.span.line,
            "column": self.span.column,
        }


def outline(ruleset: n.Ruleset) -> list[Symbol]:
    """Every declared name of a parsed ruleset, in source order."""
    out: list[Symbol] = []
    for decl in ruleset.decls:
        if isinstance(decl, n.SchemaDecl):
            out += [Symbol(decl.kind, f.name, f.span, f.type.text) for f in decl.fields]
        elif isinstance(decl, n.EventDecl):
            fields = ", ".join(f"{f.name}: {f.type.text}" for f in decl.fields)
            out.append(Symbol("event", decl.name, decl.span, fields))
        elif isinstance(decl, n.SegmentDecl):
            out.append(Symbol("segment", decl.name, decl.span))
        elif isinstance(decl, n.ActionDecl):
            out.append(Symbol("action", decl.name, decl.name_span, f"value {decl.value:g}"))
        elif isinstance(decl, n.ModelDecl):
            out.append(Symbol("model", decl.name, decl.span, decl.path))
        elif isinstance(decl, n.BanditDecl):
            out.append(Symbol("bandit", decl.name, decl.span, ", ".join(decl.arms)))
        elif isinstance(decl, n.ExperimentDecl):
            variants = ", ".join(name for name, _ in decl.variants)
            out.append(Symbol("experiment", decl.name, decl.span, variants))
    return out


def find(symbols: list[Symbol], name: str, kinds: tuple[str, ...] = KINDS) -> Symbol | None:
    """The declaration of `name` among `kinds`, or None."""
    for s in symbols:
        if s.name == name and s.kind in kinds:
            return s
    return None

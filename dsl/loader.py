"""Files → one ruleset: reads a `.rules` file and splices in its `include`s."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from arbiter.dsl import nodes as n
from arbiter.dsl.checker import CheckedRuleset, check
from arbiter.dsl.errors import Diagnostic, RulesError
from arbiter.dsl.parser import parse

#: Text and file name → the parsed file (`dsl.parse`, or an editor's `Reparser.parse`).
Parse = Callable[[str, str], n.Ruleset]


def load(
    path: str | Path, text: str | None = None, parse_text: Parse = parse
) -> tuple[n.Ruleset, dict[str, str]]:
    """Parse a file and its includes (paths relative to the including file).

    `text`, when given, is used instead of reading `path` (a ruleset uploaded
    through the API, whose includes still resolve next to `path`). Included
    declarations come first, in include order. Returns the merged ruleset and
    every source text by file name, for error display. `parse_text` parses each
    file (editors pass one that reuses what they parsed at the last keystroke).
    """
    sources: dict[str, str] = {}
    main = Path(path)
    parsed: list[n.Ruleset] = []  # the main file's own parse, read once
    decls = _collect(main, sources, [], parse_text, text=text, parsed=parsed)
    root = parsed[0]
    return n.Ruleset(root.name, root.span, tuple(decls), root.source), sources


def load_checked(path: str | Path, text: str | None = None) -> CheckedRuleset:
    """`load` then `check`."""
    ruleset, sources = load(path, text)
    return check(ruleset, sources)


def _collect(
    path: Path,
    sources: dict[str, str],
    stack: list[Path],
    parse_text: Parse,
    text: str | None = None,
    parsed: list[n.Ruleset] | None = None,
) -> list[n.Decl]:
    if text is None:
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            span = n.Span(str(path), 0, 0, 0, 0)
            message = f"cannot read {path}: {exc.strerror}"
            raise RulesError([Diagnostic("file-not-found", message, span)]) from None
    text = text.removeprefix("\ufeff")  # a byte-order mark is not part of the text
    sources[str(path)] = text
    ruleset = parse_text(text, str(path))
    if parsed is not None:
        parsed.append(ruleset)
    decls: list[n.Decl] = []
    for decl in ruleset.decls:
        if not isinstance(decl, n.Include):
            decls.append(decl)
            continue
        target = path.parent / decl.path
        if target.resolve() in [p.resolve() for p in [*stack, path]]:
            message = f"'{decl.path}' includes itself"
            raise RulesError([Diagnostic("include-cycle", message, decl.span)], sources)
        if not target.is_file():
            message = f"included file '{decl.path}' does not exist"
            raise RulesError([Diagnostic("file-not-found", message, decl.span)], sources)
        decls.extend(_collect(target, sources, [*stack, path], parse_text))
    return decls

"""Files → one ruleset: reads a `.rules` file and splices in its `include`s."""

from __future__ import annotations

from pathlib import Path

from dsl import nodes as n
from dsl.checker import CheckedRuleset, check
from dsl.errors import Diagnostic, RulesError
from dsl.parser import parse


def load(path: str | Path) -> tuple[n.Ruleset, dict[str, str]]:
    """Parse a file and its includes (paths relative to the including file).

    Included declarations come first, in include order, so the main file reads
    like it was written after them. Returns the merged ruleset and every source
    text by file name, for error display.
    """
    sources: dict[str, str] = {}
    main = Path(path)
    decls = _collect(main, sources, stack=[])
    root = parse(sources[str(main)], str(main))
    return n.Ruleset(root.name, root.span, tuple(decls), root.source), sources


def load_checked(path: str | Path) -> CheckedRuleset:
    """`load` then `check`."""
    ruleset, sources = load(path)
    return check(ruleset, sources)


def _collect(path: Path, sources: dict[str, str], stack: list[Path]) -> list[n.Decl]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise RulesError(
            [
                Diagnostic(
                    "file-not-found",
                    f"cannot read {path}: {exc.strerror}",
                    n.Span(str(path), 0, 0, 0, 0),
                )
            ]
        ) from None
    sources[str(path)] = text
    ruleset = parse(text, str(path))
    decls: list[n.Decl] = []
    for decl in ruleset.decls:
        if not isinstance(decl, n.Include):
            decls.append(decl)
            continue
        target = (path.parent / decl.path).resolve()
        if target in [p.resolve() for p in [*stack, path]]:
            raise RulesError(
                [Diagnostic("include-cycle", f"'{decl.path}' includes itself", decl.span)], sources
            )
        if not target.exists():
            raise RulesError(
                [
                    Diagnostic(
                        "file-not-found", f"included file '{decl.path}' does not exist", decl.span
                    )
                ],
                sources,
            )
        shown = path.parent / decl.path
        decls[:0] = []  # included declarations go before this file's own
        decls.extend(_collect(Path(str(shown)), sources, [*stack, path]))
    own_and_included = decls
    return own_and_included

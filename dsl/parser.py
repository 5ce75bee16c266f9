"""Text → AST: the parse entry points. Lark (LALR) parses; `dsl.builder` shapes `dsl.nodes`.

Lark trees never leave this module and `dsl.builder`. Syntax errors become
`RulesError` with a stable code, `file:line:col`, the source line, a caret and
the tokens that would have been accepted, phrased for people rather than for
parser authors. Over-deep nesting and unreadable literals are reported here too.
"""

from __future__ import annotations

import contextlib
import gc
import re
from functools import cache
from pathlib import Path

from lark import Lark, Token, Tree
from lark.exceptions import UnexpectedInput, VisitError

from arbiter.dsl import nodes as n
from arbiter.dsl.builder import Builder, node_span
from arbiter.dsl.errors import MAX_DIAGNOSTICS, Diagnostic, RulesError
from arbiter.dsl.syntax_errors import DECLARATION_KEYWORDS, syntax_diagnostic

_GRAMMAR = Path(__file__).with_name("grammar.lark")

#: Parse trees nest at most this deep: the stages after parsing walk them recursively,
#: and Python's stack would overflow long before a real ruleset needed more.
MAX_NESTING = 100


@cache
def _parser() -> Lark:
    return Lark(
        _GRAMMAR.read_text(encoding="utf-8"),
        parser="lalr",
        propagate_positions=True,
        maybe_placeholders=False,
    )


def prepare() -> None:
    """Build the parser now rather than on the first parse (a third of a second of CPU:
    Lark compiles the grammar, checks its terminals for collisions and compiles the
    lexer's patterns on its first text). A process that forks workers calls it first,
    so each worker starts with the parser built."""
    with contextlib.suppress(UnexpectedInput):
        _parser().parse("")  # the lexer is built on a first text, even one that fails


def prepared() -> bool:
    """Whether this process has built the parser already (`prepare`, or a first parse)."""
    return _parser.cache_info().currsize > 0


def parse(text: str, filename: str = "<rules>") -> n.Ruleset:
    """Parse `.rules` text into a `Ruleset`. Raises `RulesError` on bad syntax or literals."""
    # Parsing allocates many small objects that all stay alive; the cyclic GC would
    # rescan them again and again while they pile up.
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        return _parse(text, filename)
    finally:
        if was_enabled:
            gc.enable()


def _parse(text: str, filename: str) -> n.Ruleset:
    # Editors on Windows save UTF-8 with a byte-order mark; it is not part of the text
    # (and editors do not count it as a column).
    text = text.removeprefix("\ufeff")
    try:
        tree = _parser().parse(text)
    except UnexpectedInput as exc:
        raise RulesError(_syntax_errors(exc, text, filename), {filename: text}) from None
    deep = _too_deep(tree)
    if deep is not None:
        message = f"this nests more than {MAX_NESTING} levels deep; split it into segments"
        diagnostic = Diagnostic("too-complex", message, node_span(filename, deep.meta))
        raise RulesError([diagnostic], {filename: text})
    builder = Builder(filename)
    try:
        ruleset: n.Ruleset = builder.transform(tree)
    except VisitError as exc:
        # A literal Python cannot read: a 5,000-digit number, a string escape JSON rejects.
        if not isinstance(exc.orig_exc, ValueError):
            raise
        where = exc.obj.meta if isinstance(exc.obj, Tree) else exc.obj
        message = f"cannot read this literal: {exc.orig_exc}"
        diagnostic = Diagnostic("syntax", message, node_span(filename, where))
        raise RulesError([diagnostic], {filename: text}) from None
    if builder.errors:
        raise RulesError(builder.errors, {filename: text})
    return n.Ruleset(ruleset.name, ruleset.span, ruleset.decls, text)


def _syntax_errors(first: UnexpectedInput, text: str, filename: str) -> list[Diagnostic]:
    """Every independent syntax error of a file, not only the first.

    After an error, parsing resumes at the next line that starts a top-level
    declaration in its first column; the text before it is replaced by blank
    lines (after a `ruleset` line), so lines and columns stay those of the file.
    An unclosed brace or a missing `ruleset` line ends the search: what follows
    would only repeat it.
    """
    parser = _parser()
    diagnostics = [syntax_diagnostic(first, text, filename, parser)]
    line_starts = [0, *(i + 1 for i, ch in enumerate(text) if ch == "\n")]
    while len(diagnostics) < MAX_DIAGNOSTICS:
        last = diagnostics[-1]
        if last.code in _FINAL_SYNTAX_CODES or last.span.line < 1:
            break
        resume = _next_declaration(text, line_starts, last.span.line)
        if resume is None:
            break
        chunk = "ruleset _" + "\n" * (resume - 1) + text[line_starts[resume - 1] :]
        try:
            parser.parse(chunk)
        except UnexpectedInput as exc:
            diagnostics.append(syntax_diagnostic(exc, chunk, filename, parser))
            continue
        break
    return diagnostics


#: Syntax errors after which nothing useful can be said about the rest of the file.
_FINAL_SYNTAX_CODES = frozenset({"unclosed-brace", "missing-ruleset"})


def _next_declaration(text: str, line_starts: list[int], after_line: int) -> int | None:
    """The 1-based number of the first line after `after_line` that starts a declaration."""
    for line in range(after_line + 1, len(line_starts) + 1):
        start = line_starts[line - 1]
        if _DECLARATION_START.match(text, start):
            return line
    return None


_DECLARATION_START = re.compile(rf"(?:{'|'.join(DECLARATION_KEYWORDS)})\b")


def _too_deep(tree: Tree[Token]) -> Tree[Token] | None:
    """The first subtree nested deeper than MAX_NESTING, found without recursion."""
    stack = [(tree, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > MAX_NESTING:
            return node
        stack.extend((c, depth + 1) for c in node.children if isinstance(c, Tree))
    return None


def parse_file(path: str | Path) -> n.Ruleset:
    """Read and parse one `.rules` file; the span file name is the path as given."""
    p = Path(path)
    return parse(p.read_text(encoding="utf-8"), str(p))

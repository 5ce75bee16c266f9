"""Text → AST: the parse entry points. Lark (LALR) parses; `dsl.builder` shapes `dsl.nodes`.

Lark trees never leave this module and `dsl.builder`. Syntax errors become
`RulesError` with a stable code, `file:line:col`, the source line, a caret and
the tokens that would have been accepted, phrased for people rather than for
parser authors. Over-deep nesting and unreadable literals are reported here too.
"""

from __future__ import annotations

import gc
from functools import cache
from pathlib import Path

from lark import Lark, Token, Tree
from lark.exceptions import UnexpectedInput, VisitError

from arbiter.dsl import nodes as n
from arbiter.dsl.builder import Builder, node_span
from arbiter.dsl.errors import Diagnostic, RulesError
from arbiter.dsl.syntax_errors import syntax_diagnostic

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
    try:
        tree = _parser().parse(text)
    except UnexpectedInput as exc:
        diagnostic = syntax_diagnostic(exc, text, filename, _parser())
        raise RulesError([diagnostic], {filename: text}) from None
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

"""Which predicates the evaluator computes once per decision, in memo locals.

A predicate (a comparison, a string test, a call) that several segment or
rule conditions share, and that costs more than comparing locals and
literals, is worth computing once. This module only chooses them;
`engine.codegen.rules` hands the choice to `ExprCompiler.memo`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator

from arbiter.dsl import nodes as n

#: At most this many shared predicates get a memo local (each costs one store per decision).
MAX_MEMOS = 256

_EXPENSIVE_OPS = ("matches", "starts with", "ends with", "contains")


def shared_predicates(conditions: Iterable[n.Expr]) -> list[n.Expr]:
    """The expensive predicates used more than once, in order of first use.

    At most `MAX_MEMOS`; when there are more, the most used win (ties: the
    first used).
    """
    counts: Counter[n.Expr] = Counter()
    first: dict[n.Expr, int] = {}
    for cond in conditions:
        for p in _predicates(cond):
            if _expensive(p):
                counts[p] += 1
                first.setdefault(p, len(first))
    shared = [p for p, c in counts.items() if c > 1]
    shared.sort(key=lambda p: (-counts[p], first[p]))
    return sorted(shared[:MAX_MEMOS], key=lambda p: first[p])


def _predicates(e: n.Expr) -> Iterator[n.Expr]:
    """The atomic predicates of a condition, through `and`, `or` and `not`."""
    if isinstance(e, n.BoolOp):
        for o in e.operands:
            yield from _predicates(o)
    elif isinstance(e, n.Unary) and e.op == "not":
        yield from _predicates(e.operand)
    elif isinstance(e, n.Between) or (isinstance(e, n.Binary) and e.op not in ("+", "-", "*", "/")):
        yield e


def _expensive(e: n.Expr) -> bool:
    """More than a comparison of locals and literals: worth a memo local when shared."""
    if isinstance(e, n.Binary) and e.op in _EXPENSIVE_OPS:
        return True
    stack: list[n.Expr] = [e]
    while stack:
        x = stack.pop()
        if isinstance(x, n.Call) or (isinstance(x, n.Unary) and x.op == "neg"):
            return True
        if isinstance(x, n.Binary):
            if x.op in ("+", "-", "*", "/") or x.op in _EXPENSIVE_OPS:
                return True
            stack += (x.left, x.right)
        elif isinstance(x, n.Between):
            stack += (x.operand, x.low, x.high)
        elif isinstance(x, n.ListLit):
            stack += x.items
        elif isinstance(x, n.BoolOp):
            stack += x.operands
        elif isinstance(x, n.Unary | n.Presence):
            stack.append(x.operand)
    return False

"""Can a condition ever be true? A small, sound satisfiability test for the checker.

The checker uses it to warn about rules that can never fire (a constant-false
condition, conditions that contradict each other or the enclosing `if`) and
actions no path can offer. It must never claim "unreachable" for a rule that
can fire, so it only reasons about what it fully understands and treats every
other condition as unconstrained:

- atoms on one value: comparisons with a literal (`x > 3`, `"a" != x`),
  membership in a literal list, `between` literal bounds, `is missing` /
  `is present`, and boolean references (segments, bool fields);
- conjunctions of those (`and`, and `not` pushed inward by De Morgan), with a
  positive segment reference expanded into its definition's conjuncts;
- facts from enclosing blocks: in `if X { … }` the body knows X is true; in the
  `else` it knows only that X was *not true* (false or unknown, since a
  missing value takes the else branch).

Atoms on the same value are satisfiable together when some candidate value
satisfies all of them under three-valued logic. The candidates are every
literal the atoms mention, the midpoints between the numeric ones and one
beyond each end, a string no atom mentions, true, false and missing. Each atom
is constant between consecutive literals, so these candidates are exhaustive.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from itertools import pairwise
from typing import Any

from arbiter.dsl import nodes as n

Truth = bool | None  # None: unknown (a missing value)
Predicate = Callable[[Any], Truth]

#: A value no literal in a ruleset can equal, standing for "any other string".
_FRESH = "\x00other"
_MISSING = None


@dataclass(frozen=True, slots=True)
class Fact:
    """A condition known to hold on a path: `expr` is true, or (when `not_true`) is not true."""

    expr: n.Expr
    not_true: bool = False


@dataclass(frozen=True, slots=True)
class _Atom:
    key: n.Expr | None  # None: a constant (no value involved)
    test: Predicate
    literals: tuple[Any, ...]


_literal = n.literal_value


def _same_kind(a: Any, b: Any) -> bool:
    number = (int, float)
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool)
    return (isinstance(a, number) and isinstance(b, number)) or (
        isinstance(a, str) and isinstance(b, str)
    )


_FLIP = {"<": ">", "<=": ">=", ">": "<", ">=": "<=", "==": "==", "!=": "!="}


def _compare(op: str, c: Any) -> Predicate:
    def test(v: Any) -> Truth:
        if v is None:
            return None
        if not _same_kind(v, c):
            # A candidate of another kind stands for no real value of this key.
            return False
        if op == "==":
            return bool(v == c)
        if op == "!=":
            return bool(v != c)
        if op == "<":
            return bool(v < c)
        if op == "<=":
            return bool(v <= c)
        if op == ">":
            return bool(v > c)
        return bool(v >= c)

    return test


def _orderable(op: str, c: Any) -> bool:
    # Strings are ordered too, but between two strings there are always others
    # ("b" < "bb" < "c") that no finite candidate set covers: not understood.
    return op in ("==", "!=") or (isinstance(c, int | float) and not isinstance(c, bool))


def _atom(e: n.Expr) -> _Atom | None:
    """The atom `e` is, or None when `e` is not one this module understands."""
    if isinstance(e, n.Bool):
        value = e.value
        return _Atom(None, lambda v: value, ())
    if isinstance(e, n.Presence):
        present = e.present
        return _Atom(e.operand, lambda v: (v is not None) == present, ())
    if isinstance(e, n.Ref):
        return _Atom(e, lambda v: None if v is None else v is True, (True, False))
    if isinstance(e, n.Between):
        ok_lo, lo = _literal(e.low)
        ok_hi, hi = _literal(e.high)
        if not (ok_lo and ok_hi and _orderable("<", lo) and _orderable("<", hi)):
            return None
        low, high = _compare(">=", lo), _compare("<=", hi)
        return _Atom(e.operand, lambda v: _and3(low(v), high(v)), (lo, hi))
    if not isinstance(e, n.Binary):
        return None
    if e.op in _FLIP:
        ok_l, lv = _literal(e.left)
        ok_r, rv = _literal(e.right)
        if ok_l and ok_r:
            const = _compare(e.op, rv)(lv) if _same_kind(lv, rv) else None
            return _Atom(None, lambda v: const, ())
        if not _orderable(e.op, rv if ok_r else lv):
            return None
        if ok_r:
            return _Atom(e.left, _compare(e.op, rv), (rv,))
        if ok_l:
            return _Atom(e.right, _compare(_FLIP[e.op], lv), (lv,))
        return None
    if e.op in ("in", "not in") and isinstance(e.right, n.ListLit):
        items = [_literal(i) for i in e.right.items]
        if not all(ok for ok, _ in items):
            return None
        values = tuple(v for _, v in items)
        positive = e.op == "in"

        def member(v: Any) -> Truth:
            if v is None:
                return None
            return any(_same_kind(v, x) and v == x for x in values) == positive

        return _Atom(e.left, member, values)
    return None


def _and3(a: Truth, b: Truth) -> Truth:
    if a is False or b is False:
        return False
    if a is None or b is None:
        return None
    return True


def _not3(a: Truth) -> Truth:
    return None if a is None else not a


Expand = Callable[[str, bool], list[_Atom]]


def _conjuncts(e: n.Expr, positive: bool, expand: Expand) -> Iterator[_Atom]:
    """Atoms that must all be true for `e` to be true (`positive`) or false (not `positive`).

    `expand(segment, positive)` gives the atoms of a segment's definition."""
    if isinstance(e, n.Unary) and e.op == "not":
        yield from _conjuncts(e.operand, not positive, expand)
        return
    if isinstance(e, n.BoolOp):
        # `a and b` true: both true. `a or b` false: both false. The other two are disjunctions.
        if (e.op == "and") == positive:
            for operand in e.operands:
                yield from _conjuncts(operand, positive, expand)
        return
    atom = _atom(e)
    if atom is None:
        return
    if positive:
        yield atom
    else:
        test = atom.test
        yield _Atom(atom.key, lambda v: _not3(test(v)), atom.literals)
    if isinstance(e, n.Ref) and len(e.parts) == 1:
        # A segment is true exactly when its definition is, false when it is false.
        yield from expand(e.parts[0], positive)


def _candidates(literals: Sequence[Any]) -> list[Any]:
    numbers = sorted(
        {x for x in literals if isinstance(x, int | float) and not isinstance(x, bool)}
    )
    out: list[Any] = [_MISSING, True, False, _FRESH]
    out += [x for x in literals if isinstance(x, str)]
    out += numbers
    out += [(a + b) / 2 for a, b in pairwise(numbers)]
    if numbers:
        out += [numbers[0] - 1, numbers[-1] + 1]
    else:
        out.append(0)
    return out


class Reasoner:
    """Satisfiability over one ruleset's segments, remembering what it has worked out.

    The atoms of an `if`'s fact are shared by every rule inside it, and a
    segment's definition by every rule that uses it: each is computed once,
    which keeps checking linear in the number of rules.
    """

    def __init__(self, segments: Mapping[str, n.Expr]) -> None:
        self.segments = segments
        self._atoms: dict[Fact, list[_Atom]] = {}
        self._segment_atoms: dict[tuple[str, bool], list[_Atom]] = {}
        self._expanding: set[tuple[str, bool]] = set()

    def _expand(self, name: str, positive: bool) -> list[_Atom]:
        key = (name, positive)
        found = self._segment_atoms.get(key)
        if found is not None:
            return found
        if name not in self.segments or key in self._expanding:
            return []  # not a segment, or a cycle (reported by the checker)
        self._expanding.add(key)
        found = list(_conjuncts(self.segments[name], positive, self._expand))
        self._expanding.discard(key)
        self._segment_atoms[key] = found
        return found

    def atoms(self, fact: Fact, remember: bool = True) -> list[_Atom]:
        """The atoms of a fact; `remember=False` for a fact seen once (hashing one costs
        a walk of its whole expression)."""
        found = self._atoms.get(fact) if remember else None
        if found is not None:
            return found
        if not fact.not_true:
            found = list(_conjuncts(fact.expr, True, self._expand))
        else:
            # "Not true" of a single atom is a fact about its value; of anything
            # larger it is a disjunction, about which we claim nothing.
            atom = None if isinstance(fact.expr, n.BoolOp) else _atom(fact.expr)
            found = []
            if atom is not None:
                test = atom.test
                found = [_Atom(atom.key, lambda v: test(v) is not True, atom.literals)]
        if remember:
            self._atoms[fact] = found
        return found

    def satisfiable(self, facts: Sequence[Fact], once: Sequence[Fact] = ()) -> bool:
        """False only when the facts certainly cannot all hold at once.

        `facts` recur (the conditions of enclosing blocks); `once` do not (a rule's own)."""
        by_key: dict[n.Expr | None, list[_Atom]] = {}
        for fact, remember in [*((f, True) for f in facts), *((f, False) for f in once)]:
            for atom in self.atoms(fact, remember):
                by_key.setdefault(atom.key, []).append(atom)
        for key, atoms in by_key.items():
            if key is None:
                if any(a.test(None) is not True for a in atoms):
                    return False
                continue
            literals = [x for a in atoms for x in a.literals]
            if not any(all(a.test(v) is True for a in atoms) for v in _candidates(literals)):
                return False
        return True


def satisfiable(facts: Sequence[Fact], segments: Mapping[str, n.Expr]) -> bool:
    """False only when the facts certainly cannot all hold at once."""
    return Reasoner(segments).satisfiable(facts)


def always_true(e: n.Expr) -> bool:
    """Whether a condition is a literal truth (`true`, `1 < 2`): nothing can make it false."""
    atom = _atom(e)
    return atom is not None and atom.key is None and atom.test(None) is True

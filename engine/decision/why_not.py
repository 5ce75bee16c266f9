"""Why a rule did not fire: the comparison that was false (or unknown), with its values.

The generated evaluator says which rules fired, and nothing else; explaining a
rule that did not fire needs the condition looked into. This module evaluates
checked expressions directly (a small interpreter with the same three-valued
logic as `engine.codegen.expressions`, missing = `None`) over the values the
decision already read. It never calls a model: a score the decision did not
compute is reported as not computed. It only explains; whether a rule fired is
always what the evaluator said.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from arbiter.dsl import nodes as n
from arbiter.dsl import printing
from arbiter.engine.decision import runtime
from arbiter.engine.decision.policies import contact_key
from arbiter.engine.plan import AggregateSpec

#: A condition's path to a rule: the enclosing `if` conditions and whether each must hold.
Path = tuple[tuple[n.Expr, bool], ...]

_COMPARE: dict[str, Callable[[Any, Any], Any]] = {
    "==": operator.eq,
    "!=": operator.ne,
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
}
_ARITH: dict[str, Callable[[Any, Any], Any]] = {
    "+": operator.add,
    "-": operator.sub,
    "*": operator.mul,
    "/": operator.truediv,
}
_SINCE = {"days_since": 86400.0, "hours_since": 3600.0, "minutes_since": 60.0}


@dataclass(frozen=True, slots=True)
class Leaf:
    """The part of a condition that made it not hold."""

    expr: n.Expr
    result: str  # "false", "true" (under a `not`) or "unknown" (a missing value)
    values: dict[str, Any]
    segment: str | None  # the segment it is inside, if any

    @property
    def text(self) -> str:
        return printing.expr(self.expr)


@dataclass(frozen=True, slots=True)
class Env:
    """The values one decision saw."""

    profile: Mapping[str, Any]
    context: Mapping[str, Any]
    aggregates: Mapping[str, Any]  # AggregateSpec.key -> value
    segments: Mapping[str, Any]
    segment_exprs: Mapping[str, n.Expr]
    variants: Mapping[str, str]
    models: Mapping[str, Any]  # computed customer-level scores only
    now: float
    contacts: Mapping[str, int] | None = None  # contact counters; None when unknown


class Interpreter:
    """Evaluates checked expressions over an `Env`; `None` is missing."""

    def __init__(self, env: Env) -> None:
        self.env = env

    # ------------------------------------------------------------ values

    def value(self, e: n.Expr) -> Any:
        """The expression's value, or None when missing or when it cannot be computed."""
        try:
            return self._value(e)
        except (TypeError, ValueError, ZeroDivisionError, AttributeError, re.error):
            return None

    def _value(self, e: n.Expr) -> Any:
        if isinstance(e, n.Number | n.String | n.Bool):
            return e.value
        if isinstance(e, n.Percent):
            return e.fraction
        if isinstance(e, n.Duration):
            return e.seconds
        if isinstance(e, n.TimeLit):
            return e.epoch
        if isinstance(e, n.ListLit):
            return tuple(self.value(i) for i in e.items)
        if isinstance(e, n.Ref):
            return self._ref(e)
        if isinstance(e, n.Aggregate):
            spec = AggregateSpec(e.fn, e.event, e.prop, e.window_seconds)
            return self.env.aggregates.get(spec.key)
        if isinstance(e, n.LastSeen):
            return self.env.aggregates.get(AggregateSpec("last", e.event, None, 0).key)
        if isinstance(e, n.Call):
            return self._call(e)
        if isinstance(e, n.Unary) and e.op == "neg":
            x = self.value(e.operand)
            return None if x is None else -x
        if isinstance(e, n.Binary) and e.op in _ARITH:
            a, b = self.value(e.left), self.value(e.right)
            return None if a is None or b is None else _ARITH[e.op](a, b)
        if isinstance(e, n.Contacts):
            if self.env.contacts is None:
                return None  # the store was unreachable: the history is unknown
            return self.env.contacts.get(contact_key(e.scope, e.name, e.window_seconds), 0)
        if isinstance(e, n.Unary | n.BoolOp | n.Presence | n.Between | n.Binary):
            return self.truth(e)
        return None

    def _ref(self, e: n.Ref) -> Any:
        head, rest = e.parts[0], e.parts[1:]
        if head == "profile" and rest:
            return self.env.profile.get(rest[0])
        if head == "context" and rest:
            return self.env.context.get(rest[0])
        if head == "experiment" and rest:
            return self.env.variants.get(rest[0])
        if head in self.env.segments:
            return self.env.segments[head]
        return self.env.models.get(head)

    def _call(self, e: n.Call) -> Any:
        args = [self.value(a) for a in e.args]
        if e.name == "now":
            return self.env.now
        if e.name in _SINCE:
            return None if args[0] is None else (self.env.now - args[0]) / _SINCE[e.name]
        helper: Callable[..., Any] = runtime.EXPORTED[f"f_{e.name}"]
        if e.name in runtime.CLOCK_HELPERS:
            return helper(self.env.now, *args)
        return helper(*args)

    # ------------------------------------------------------------ conditions

    def truth(self, e: n.Expr) -> bool | None:
        """True, False, or None (unknown), with the language's three-valued logic."""
        try:
            return self._truth(e)
        except (TypeError, ValueError, ZeroDivisionError, AttributeError, re.error):
            return None

    def _truth(self, e: n.Expr) -> bool | None:
        if isinstance(e, n.Bool):
            return e.value
        if isinstance(e, n.Unary) and e.op == "not":
            inner = self.truth(e.operand)
            return None if inner is None else not inner
        if isinstance(e, n.BoolOp):
            values = [self.truth(o) for o in e.operands]
            decisive = e.op == "or"  # `or`: one true decides; `and`: one false decides
            if decisive in values:
                return decisive
            return None if None in values else not decisive
        if isinstance(e, n.Presence):
            return (self.value(e.operand) is not None) == e.present
        if isinstance(e, n.Between):
            x, lo, hi = (self.value(v) for v in (e.operand, e.low, e.high))
            return None if None in (x, lo, hi) else bool(lo <= x <= hi)
        if isinstance(e, n.Binary) and e.op not in _ARITH:
            return self._predicate(e)
        if isinstance(e, n.Ref | n.Call):
            x = self.value(e)
            return x if isinstance(x, bool) else None
        return None

    def _predicate(self, e: n.Binary) -> bool | None:
        x, y = self.value(e.left), self.value(e.right)
        if x is None or y is None:
            return None
        op = e.op
        if op in _COMPARE:
            return bool(_COMPARE[op](x, y))
        if op in ("in", "not in"):
            return (x in y) == (op == "in")
        if op == "starts with":
            return bool(x.startswith(y))
        if op == "ends with":
            return bool(x.endswith(y))
        if op == "contains":
            return y in x
        return runtime.f_matches(x, y)

    # ------------------------------------------------------------ the culprit

    def culprit(self, e: n.Expr, want: bool = True, segment: str | None = None) -> Leaf | None:
        """The innermost part of `e` that keeps it from being `want`, or None if it is."""
        got = self.truth(e)
        if got is want:
            return None
        if isinstance(e, n.Unary) and e.op == "not":
            return self.culprit(e.operand, not want, segment)
        if isinstance(e, n.BoolOp):
            # `a and b` is not true because of an operand that is not true (and so on).
            for operand in e.operands:
                if self.truth(operand) is not want:
                    return self.culprit(operand, want, segment)
        if isinstance(e, n.Ref) and len(e.parts) == 1 and e.parts[0] in self.env.segment_exprs:
            name = e.parts[0]
            inner = self.culprit(self.env.segment_exprs[name], want, name)
            if inner is not None:
                return inner
        result = "unknown" if got is None else ("true" if got else "false")
        return Leaf(e, result, self._operands(e), segment)

    def _operands(self, e: n.Expr) -> dict[str, Any]:
        """Each operand of a leaf that is not a literal, with its value."""
        if isinstance(e, n.Binary):
            parts: tuple[n.Expr, ...] = (e.left, e.right)
        elif isinstance(e, n.Between):
            parts = (e.operand, e.low, e.high)
        elif isinstance(e, n.Presence):
            parts = (e.operand,)
        else:
            parts = (e,)
        return {
            printing.expr(p): _plain(self.value(p))
            for p in parts
            if not isinstance(p, n.Number | n.String | n.Bool | n.Percent | n.Duration | n.TimeLit)
            and not (isinstance(p, n.ListLit))
        }

    def misses(self, path: Path, condition: n.Expr) -> int:
        """How far a rule is from firing: its `if`s that went the other way, plus the
        parts of its condition (the operands of a top-level `and`) that are not true."""
        count = sum(1 for cond, want in path if (self.truth(cond) is True) != want)
        parts = (
            condition.operands
            if isinstance(condition, n.BoolOp) and condition.op == "and"
            else (condition,)
        )
        return count + sum(1 for p in parts if self.truth(p) is not True)

    def path_culprit(self, path: Path, condition: n.Expr) -> Leaf | None:
        """The first thing on a rule's path, then in its condition, that did not hold."""
        for cond, want in path:
            if (self.truth(cond) is True) != want:
                # An `else` branch runs when its `if` is not true (false or unknown).
                return self.culprit(cond, want) if want else self.culprit(cond, False)
        return self.culprit(condition, True)


def _plain(value: Any) -> Any:
    """A value as JSON shows it: tuples and sets as lists."""
    if isinstance(value, tuple | set | frozenset | list):
        return [_plain(v) for v in value]
    return value


def rules_for(rules: tuple[n.Rule, ...], path: Path = ()) -> Iterator[tuple[n.Rule, Path]]:
    """Every `when` and `suppress` rule with the `if` conditions on its way."""
    for rule in rules:
        if isinstance(rule, n.IfBlock):
            yield from rules_for(rule.then, (*path, (rule.condition, True)))
            yield from rules_for(rule.orelse, (*path, (rule.condition, False)))
        else:
            yield rule, path

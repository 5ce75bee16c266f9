"""Expressions → Python source, with three-valued logic for missing values.

`None` means missing. A value expression evaluates to a value or `None`. A
condition is compiled twice: `truth(e)` is a plain Python boolean that is
true only when `e` is definitely true, `falsity(e)` only when definitely
false. `not`, `and`, `or` combine these without ever materialising "unknown",
so conditions stay native, short-circuiting Python.

Literals enter the source only through `repr()` of numbers and strings or as
entries of the constants table `K`; names are generated. Rule text is never
pasted into the source.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from typing import Any

from arbiter.dsl import nodes as n
from arbiter.dsl.errors import ArbiterError
from arbiter.engine.decision.runtime import CLOCK_HELPERS


class Writer:
    """Accumulates indented lines of source and maps each to a `.rules` span."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.spans: list[n.Span | None] = []
        self._indent = 0

    def line(self, text: str, span: n.Span | None = None) -> None:
        self.lines.append("    " * self._indent + text)
        self.spans.append(span)

    def indent(self) -> None:
        self._indent += 1

    def dedent(self) -> None:
        self._indent -= 1

    def splice(self, other: Writer) -> None:
        """Append another writer's lines (and spans) at this writer's indentation."""
        pad = "    " * self._indent
        self.lines.extend(pad + line for line in other.lines)
        self.spans.extend(other.spans)

    def source(self) -> str:
        return "\n".join(self.lines) + "\n"


#: Generated code for one expression may not exceed this many characters.
MAX_EXPRESSION_CODE = 200_000


class TooComplex(ArbiterError):
    """An expression whose generated code would be unreasonably large."""

    code = "too-complex"

    def __init__(self, span: n.Span) -> None:
        super().__init__(f"{span}: expression too complex")
        self.span = span


class Constants:
    """The `K` table: values too rich for `repr()` in source (sets, regexes, tuples)."""

    def __init__(self) -> None:
        self.values: list[Any] = []
        self._index: dict[Any, int] = {}

    def add(self, value: Any) -> str:
        key = (type(value).__name__, value) if _hashable(value) else None
        if key is not None and key in self._index:
            return f"K[{self._index[key]}]"
        self.values.append(value)
        idx = len(self.values) - 1
        if key is not None:
            self._index[key] = idx
        return f"K[{idx}]"


def _hashable(value: Any) -> bool:
    try:
        hash(value)
    except TypeError:
        return False
    return True


_SIMPLE = re.compile(r"^(?:[A-Za-z_][A-Za-z0-9_]*|K\[\d+\]|-?[0-9.e+]+|'[^'\\]*')$")

_COMPARE = {"==": "==", "!=": "!=", "<": "<", "<=": "<=", ">": ">", ">=": ">="}


def _calendar_months(e: n.Binary) -> int | None:
    """N (or -N) when `e` moves a time by N calendar months (`t ± Nmo`, `Nmo + t`), else None.

    The checker types both sides: a month literal is added to or taken from a time only
    in these shapes (any other use of a month is its 30 days, `Duration.months`).
    """
    if e.op == "-" and isinstance(e.right, n.Duration) and e.right.months:
        return None if isinstance(e.left, n.Duration) else -e.right.months
    if e.op == "+" and isinstance(e.right, n.Duration) and e.right.months:
        return None if isinstance(e.left, n.Duration) else e.right.months
    if e.op == "+" and isinstance(e.left, n.Duration) and e.left.months:
        return None if isinstance(e.right, n.Duration) else e.left.months
    return None


class ExprCompiler:
    """Compiles checked expressions; `resolve` maps a `Ref` to a source expression."""

    def __init__(self, consts: Constants, resolve: Callable[[n.Ref], str]) -> None:
        self.k = consts
        self.resolve = resolve
        self.aggregate: Callable[[n.Expr], str] = _unsupported
        self.contacts: Callable[[n.Contacts], str] = _unsupported
        #: Shared predicates -> the local that memoizes their three-valued result.
        self.memo: dict[n.Expr, str] = {}
        self._computing: n.Expr | None = None
        self._temp = 0

    def _fresh(self) -> str:
        self._temp += 1
        return f"_t{self._temp}"

    # ------------------------------------------------------------ values

    def value(self, e: n.Expr) -> str:
        """Source of an expression that yields the value or None when missing."""
        method: Callable[[Any], str] = getattr(self, f"v_{type(e).__name__}")
        return method(e)

    def v_Number(self, e: n.Number) -> str:
        if isinstance(e.value, float) and not math.isfinite(e.value):
            # `1.0e999` is inf, and repr(inf) is not Python source.
            return self.k.add(e.value)
        return repr(e.value)

    def _plain_literal(self, e: n.Expr) -> str:
        return repr(n.literal_value(e)[1])

    v_Percent = v_Duration = v_TimeLit = v_String = _plain_literal

    def v_Bool(self, e: n.Bool) -> str:
        return "True" if e.value else "False"

    def v_ListLit(self, e: n.ListLit) -> str:
        if all(isinstance(i, n.Number | n.String | n.Bool) for i in e.items):
            return self.k.add(frozenset(getattr(i, "value", None) for i in e.items))
        return "(" + "".join(self.value(i) + ", " for i in e.items) + ")"

    def v_Ref(self, e: n.Ref) -> str:
        return self.resolve(e)

    def v_Aggregate(self, e: n.Aggregate) -> str:
        return self.aggregate(e)

    def v_LastSeen(self, e: n.LastSeen) -> str:
        return self.aggregate(e)

    def v_Contacts(self, e: n.Contacts) -> str:
        return self.contacts(e)

    def v_Call(self, e: n.Call) -> str:
        args = [self.value(a) for a in e.args]
        if e.name == "now":
            return "NOW"
        if e.name in ("days_since", "hours_since", "minutes_since"):
            unit = {"days_since": 86400.0, "hours_since": 3600.0, "minutes_since": 60.0}[e.name]
            x, guard = self._bind(args[0])
            return f"(None if {guard} is None else (NOW - {x}) / {unit!r})"
        if e.name in CLOCK_HELPERS:
            return f"f_{e.name}(NOW, {', '.join(args)})"
        return f"f_{e.name}({', '.join(args)})"

    def v_Unary(self, e: n.Unary) -> str:
        if e.op == "not":
            return self._tristate(e)
        x, guard = self._bind(self.value(e.operand))
        return f"(None if {guard} is None else -{x})"

    def v_Binary(self, e: n.Binary) -> str:
        months = _calendar_months(e)
        if months is not None:
            # `now() - 1mo`: a calendar month back, as event windows count one.
            time_side = e.left if isinstance(e.right, n.Duration) else e.right
            x, guard = self._bind(self.value(time_side))
            call = f"f_add_months({x}, {months})"
            return f"(None if {guard} is None else {call})" if guard else call
        if e.op in ("+", "-", "*", "/"):
            left, lg = self._bind(self.value(e.left))
            right, rg = self._bind(self.value(e.right))
            guards = " or ".join(f"{g} is None" for g in (lg, rg) if g is not None)
            expr = f"{left} {e.op} {right}"
            return f"(None if {guards} else {expr})" if guards else f"({expr})"
        return self._tristate(e)

    def v_BoolOp(self, e: n.BoolOp) -> str:
        return self._tristate(e)

    def v_Between(self, e: n.Between) -> str:
        return self._tristate(e)

    def v_Presence(self, e: n.Presence) -> str:
        return self.truth(e)

    def _tristate(self, e: n.Expr) -> str:
        code = f"(True if {self.truth(e)} else (False if {self.falsity(e)} else None))"
        # A condition used as a value carries both its truth and its falsity code, so
        # nesting such values (`((x > 1) == true) == true …`) quadruples the code per level.
        if len(code) > MAX_EXPRESSION_CODE:
            raise TooComplex(e.span)
        return code

    def _bind(self, source: str) -> tuple[str, str | None]:
        """Name a value once so a None guard does not evaluate it twice.

        Returns (expression to use, expression to test for None — or None when
        the value is a literal that cannot be missing).
        """
        if _SIMPLE.match(source):
            literal = source[0].isdigit() or source[0] in "-'" or source.startswith("K[")
            return source, (None if literal else source)
        temp = self._fresh()
        return temp, f"({temp} := {source})"

    # ------------------------------------------------------------ conditions

    def truth(self, e: n.Expr) -> str:
        """Source that is True exactly when `e` is definitely true."""
        return self._cond(e, want=True)

    def falsity(self, e: n.Expr) -> str:
        """Source that is True exactly when `e` is definitely false."""
        return self._cond(e, want=False)

    def _cond(self, e: n.Expr, want: bool) -> str:
        if self.memo and e is not self._computing and e in self.memo:
            return f"({self._memoized(e)} is {want})"
        if isinstance(e, n.Bool):
            return "True" if e.value == want else "False"
        if isinstance(e, n.Unary) and e.op == "not":
            return self._cond(e.operand, not want)
        if isinstance(e, n.BoolOp):
            joiner = " and " if (e.op == "and") == want else " or "
            return "(" + joiner.join(self._cond(o, want) for o in e.operands) + ")"
        if isinstance(e, n.Presence):
            x = self.value(e.operand)
            present = e.present == want
            return f"({x} is not None)" if present else f"({x} is None)"
        if isinstance(e, n.Between):
            x, xg = self._bind(self.value(e.operand))
            lo, lg = self._bind(self.value(e.low))
            hi, hg = self._bind(self.value(e.high))
            test = f"{lo} <= {x} <= {hi}"
            return self._guarded([xg, lg, hg], test, want)
        if isinstance(e, n.Binary) and e.op not in ("+", "-", "*", "/"):
            return self._predicate(e, want)
        # A boolean-valued reference (segment, bool field) or anything else.
        x = self.value(e)
        return f"({x} is {want})"

    def _memoized(self, e: n.Expr) -> str:
        """The predicate's True/False/None, computed on first use in a decision, then reused.

        Lazy rather than up front, so that a predicate raises (and is reported)
        exactly where and as often as the unshared code would: a failed
        computation leaves the local UNSET and the next use tries again.
        """
        local = self.memo[e]
        outer, self._computing = self._computing, e
        try:
            t, f = self._cond(e, True), self._cond(e, False)
        finally:
            self._computing = outer
        tri = f"(True if {t} else (False if {f} else None))"
        return f"({local} if {local} is not UNSET else ({local} := {tri}))"

    def _guarded(self, guards: list[str | None], test: str, want: bool) -> str:
        parts = [f"{g} is not None" for g in guards if g is not None]
        parts.append(test if want else f"not ({test})")
        return "(" + " and ".join(parts) + ")"

    def _predicate(self, e: n.Binary, want: bool) -> str:
        op = e.op
        if op in ("in", "not in") and isinstance(e.right, n.ListLit):
            # Membership in a literal list is never unknown on the right side.
            right = self.v_ListLit(e.right)
            x, xg = self._bind(self.value(e.left))
            positive = (op == "in") == want
            test = f"{x} in {right}"
            return self._guarded([xg], test, True) if positive else self._guarded([xg], test, False)
        if op == "matches" and isinstance(e.right, n.String):
            pattern = self.k.add(re.compile(e.right.value))
            x, xg = self._bind(self.value(e.left))
            return self._guarded([xg], f"{pattern}.search({x}) is not None", want)
        x, xg = self._bind(self.value(e.left))
        y, yg = self._bind(self.value(e.right))
        if op in _COMPARE:
            test = f"{x} {_COMPARE[op]} {y}"
        elif op == "in":
            test = f"{x} in {y}"
        elif op == "not in":
            test = f"{x} not in {y}"
        elif op == "starts with":
            test = f"{x}.startswith({y})"
        elif op == "ends with":
            test = f"{x}.endswith({y})"
        elif op == "contains":
            test = f"{y} in {x}"
        elif op == "matches":
            test = f"f_matches({x}, {y})"
        else:  # pragma: no cover - the checker admits no other operator
            raise ValueError(f"unknown operator {op}")
        return self._guarded([xg, yg], test, want)


def _unsupported(e: n.Expr) -> str:
    raise ValueError(f"{type(e).__name__} is not available here")

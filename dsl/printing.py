"""Printing the pieces of a `.rules` file: literals, JSON-ish values and expressions.

Used by `dsl.formatter`. Every function here prints text the grammar reads back
to the same value or node: numbers without exponents, strings JSON-escaped,
expressions with the parentheses precedence requires and no others (except
`not (a > 3)`, which parses like `not a > 3` but reads unambiguously).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from arbiter.dsl import nodes as n

WIDTH = 100
INDENT = "  "

#: Words a bare JSON-ish value cannot be: they read as literals, not strings.
_KEYWORDS = frozenset({"true", "false", "null"})
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


# ------------------------------------------------------------------ literals


def number(value: float | int) -> str:
    """A number as the grammar reads it back exactly: no exponent, integers without `.0`."""
    if isinstance(value, bool):
        raise TypeError("a bool is not a number")
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, int):
        return str(value)
    text = format(Decimal(repr(value)), "f")
    return text if "." in text else text + ".0"


def duration(seconds: float) -> str:
    """Seconds as the largest whole unit (days, not weeks: `14d` reads better than `2w`).

    A negative window is a number of calendar months (`engine.decision.window_span`):
    -2 is `2mo`, as `fmt` writes it (`window` spells it out for people).
    """
    if seconds < 0:
        return f"{int(-seconds)}mo"
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60), ("s", 1)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    if seconds == 0:
        return "0s"
    return f"{round(seconds * 1000)}ms"


def window(seconds: float) -> str:
    """A window for people (explain output, messages): `7d`, or `1 month`, `2 months` for
    a calendar-month window (negative), never the encoding's `-1`."""
    if seconds < 0:
        months = int(-seconds)
        return f"{months} month{'s' * (months != 1)}"
    return duration(seconds)


def percent(fraction: float) -> str:
    """`0.05` as `5%`: the shortest decimal that reads back to the same fraction."""
    scaled = fraction * 100
    for digits in range(0, 16):
        text = number(round(scaled, digits))
        if float(text) / 100.0 == fraction:
            return text + "%"
    return number(scaled) + "%"


def date(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%d")


def moment(epoch: float) -> str:
    """A date at midnight UTC, else a date-time."""
    when = datetime.fromtimestamp(epoch, UTC)
    if (when.hour, when.minute, when.second) == (0, 0, 0):
        return when.strftime("%Y-%m-%d")
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


def string(value: str) -> str:
    return json.dumps(value, ensure_ascii=False)


def key(name: str) -> str:
    return name if _IDENT.fullmatch(name) and name not in _KEYWORDS else string(name)


def json_value(value: Any, bare: bool = False) -> str:
    """A payload, attribute or scenario value. `bare`: identifier-like strings unquoted."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return number(value)
    if isinstance(value, str):
        return key(value) if bare else string(value)
    if isinstance(value, list):
        return "[" + ", ".join(json_value(v) for v in value) + "]"
    if isinstance(value, dict):
        if not value:
            return "{}"
        return "{ " + ", ".join(f"{key(k)}: {json_value(v, bare)}" for k, v in value.items()) + " }"
    raise TypeError(f"cannot print {type(value).__name__}")


# ------------------------------------------------------------------ expressions

# Binding strength of each expression form; an operand weaker than its place needs parens.
_OR, _AND, _NOT, _COMPARE, _SUM, _PRODUCT, _UNARY, _ATOM = range(1, 9)
_LEVEL = {"+": _SUM, "-": _SUM, "*": _PRODUCT, "/": _PRODUCT}


def _level(e: n.Expr) -> int:
    if isinstance(e, n.BoolOp):
        return _OR if e.op == "or" else _AND
    if isinstance(e, n.Unary):
        return _NOT if e.op == "not" else _UNARY
    if isinstance(e, n.Binary):
        return _LEVEL.get(e.op, _COMPARE)
    if isinstance(e, n.Between | n.Presence):
        return _COMPARE
    if isinstance(e, n.Number) and e.value < 0:
        return _UNARY
    return _ATOM


def expr(e: n.Expr) -> str:
    """One expression on one line, with the parentheses precedence requires."""
    method: Callable[[Any], str] = globals()[f"_x_{type(e).__name__}"]
    return method(e)


def _at(e: n.Expr, least: int) -> str:
    text = expr(e)
    return f"({text})" if _level(e) < least else text


def _x_Number(e: n.Number) -> str:
    return number(e.value)


def _x_String(e: n.String) -> str:
    return string(e.value)


def _x_Bool(e: n.Bool) -> str:
    return "true" if e.value else "false"


def _x_Duration(e: n.Duration) -> str:
    return e.text


def _x_TimeLit(e: n.TimeLit) -> str:
    return e.text


def _x_Percent(e: n.Percent) -> str:
    return e.text


def _x_ListLit(e: n.ListLit) -> str:
    return "[" + ", ".join(expr(i) for i in e.items) + "]"


def _x_Ref(e: n.Ref) -> str:
    return e.dotted


def _x_Call(e: n.Call) -> str:
    return f"{e.name}(" + ", ".join(expr(a) for a in e.args) + ")"


def _x_Aggregate(e: n.Aggregate) -> str:
    if e.fn == "max_count":  # as written: `max(count(e within W by p))`
        return f"max(count({e.event} within {e.window_text} by {e.prop}))"
    target = e.event if e.prop is None else f"{e.event}.{e.prop}"
    by = f" by {e.by}" if e.by is not None else ""
    return f"{e.fn}({target} within {e.window_text}{by})"


def _x_Contacts(e: n.Contacts) -> str:
    return f"contacts({e.scope} {e.name} within {e.window_text})"


def _x_LastSeen(e: n.LastSeen) -> str:
    return f"last_seen({e.event})"


def _x_Unary(e: n.Unary) -> str:
    if e.op == "not":
        # `not (a > 3)` parses like `not a > 3`, but reads unambiguously.
        least = _COMPARE + 1 if _level(e.operand) == _COMPARE else _NOT
        return "not " + _at(e.operand, least)
    return "-" + _at(e.operand, _UNARY)


def _x_Binary(e: n.Binary) -> str:
    if e.op in _LEVEL:
        # Left-associative: the right operand must bind tighter than the operator.
        level = _LEVEL[e.op]
        return f"{_at(e.left, level)} {e.op} {_at(e.right, level + 1)}"
    return f"{_at(e.left, _SUM)} {e.op} {_at(e.right, _SUM)}"


def _x_BoolOp(e: n.BoolOp) -> str:
    least = _NOT if e.op == "and" else _AND
    return f" {e.op} ".join(_at(o, least) for o in e.operands)


def _x_Between(e: n.Between) -> str:
    return f"{_at(e.operand, _SUM)} between {_at(e.low, _SUM)} and {_at(e.high, _SUM)}"


def _x_Presence(e: n.Presence) -> str:
    return f"{_at(e.operand, _SUM)} is {'present' if e.present else 'missing'}"


def _layout(e: n.Expr, col: int, least: int, reserve: int = 0) -> list[str]:
    """Lines of `e` printed from column `col`: broken before `and` / `or` when too long,
    nested groups aligned inside their parentheses. Later lines carry their own indent.
    `reserve` is how much text follows `e` on its last line (`offer x`, a `)`)."""
    text = _at(e, least)
    if col + len(text) + reserve <= WIDTH or not isinstance(e, n.BoolOp):
        return [text]
    paren = _level(e) < least
    inner = col + 1 if paren else col
    operand_least = _NOT if e.op == "and" else _AND
    lines: list[str] = []
    last = len(e.operands) - 1
    for i, operand in enumerate(e.operands):
        after = (reserve + (1 if paren else 0)) if i == last else 0
        if i == 0:
            lines += _layout(operand, inner, operand_least, after)
            continue
        prefix = f"{e.op} "
        sub = _layout(operand, inner + len(prefix), operand_least, after)
        lines.append(" " * inner + prefix + sub[0])
        lines += sub[1:]
    if paren:
        lines[0] = "(" + lines[0]
        lines[-1] += ")"
    return lines


def condition_lines(head: str, e: n.Expr, tail: str, indent: str) -> list[str]:
    """`head + expr + tail`, broken before top-level (and nested) `and`/`or` when too long."""
    lines = _layout(e, len(indent) + len(head), _OR, len(tail))
    lines[0] = indent + head + lines[0]
    lines[-1] += tail
    return lines


def list_lines(head: str, items: Sequence[str], close: str, indent: str) -> list[str]:
    """`head(item, item, …)close`, continuing under the first item when too long."""
    one = f"{indent}{head}{', '.join(items)}{close}"
    if len(one) <= WIDTH or not items:
        return [one]
    pad = indent + " " * len(head)
    lines = [f"{indent}{head}{items[0]}"]
    for k, item in enumerate(items[1:], start=2):
        # What must still fit on this line after the item: a comma, or the closing text.
        after = len(close) if k == len(items) else 1
        if len(lines[-1]) + 2 + len(item) + after <= WIDTH:
            lines[-1] += f", {item}"
        else:
            lines[-1] += ","
            lines.append(pad + item)
    lines[-1] += close
    return lines

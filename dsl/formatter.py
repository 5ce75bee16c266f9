"""AST → canonical `.rules` text, the `arbiter fmt` printer.

    text = format_ruleset(dsl.parse(source, "retail.rules"))

The canonical form: two-space indentation; declarations in source order;
blank lines between declarations kept where the source had them (several
collapse to one); expressions with single spaces and only the parentheses
precedence needs; action properties in a fixed order; lines wrapped at
`and` / `or` and at list commas past 100 characters.

Comments are kept. The parser drops them, so they are found again in the
source text by line (`_Comments`) and attached to the declaration, field,
rule or action property on that line; a comment on its own line stays with
what follows it. A comment inside a multi-line statement that has no such
anchor (the middle of a long condition) moves to the end of the statement.

Formatting never changes meaning: the formatted text parses to the same AST,
spans aside, and formatting twice gives the same text (both tested). Give it
a ruleset parsed from one file: `dsl.load` splices included files in, and
their declarations would be printed into the including file.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from dsl import nodes as n

WIDTH = 100
INDENT = "  "

#: Words a bare JSON-ish value cannot be: they read as literals, not strings.
_KEYWORDS = frozenset({"true", "false", "null"})
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


# ------------------------------------------------------------------ comments


@dataclass
class _Comments:
    """The source's comments by line; each is handed out once."""

    trailing: dict[int, str] = field(default_factory=dict)  # after code on the line
    alone: dict[int, str] = field(default_factory=dict)  # the whole line is a comment
    blank: set[int] = field(default_factory=set)
    last_line: int = 0

    @classmethod
    def scan(cls, source: str) -> _Comments:
        out = cls()
        lines = _lines(source)
        out.last_line = len(lines)
        for number, text in enumerate(lines, start=1):
            start = _comment_start(text)
            if start is None:
                if not text.strip():
                    out.blank.add(number)
                continue
            comment = text[start:].rstrip()
            if text[:start].strip():
                out.trailing[number] = comment
            else:
                out.alone[number] = comment
        return out

    def take_trailing(self, first: int, last: int) -> list[str]:
        """Trailing comments on lines first..last, removed from the pool."""
        return [self.trailing.pop(i) for i in range(first, last + 1) if i in self.trailing]

    def inside(self, span: n.Span) -> bool:
        """Whether any comment sits after the first line of `span` and within it."""
        lines = range(span.line + 1, span.end_line + 1)
        return any(i in self.alone or i in self.trailing for i in lines)

    def take_alone(self, first: int, last: int) -> list[str]:
        return [self.alone.pop(i) for i in range(first, last + 1) if i in self.alone]

    def gap(self, first: int, last: int, indent: str, at_start: bool) -> list[str]:
        """Lines first..last between two items: their comments, and one blank line where
        the source had any (none at the start of a block)."""
        out: list[str] = []
        for i in range(first, last + 1):
            if i in self.alone:
                out.append(indent + self.alone.pop(i))
            elif i in self.blank and out[-1:] != [""] and not (at_start and not out):
                out.append("")
        return out


def _lines(source: str) -> list[str]:
    # Lines as the parser counts them: only "\n" ends a line (not "\u2028", say).
    return [line.removesuffix("\r") for line in source.split("\n")]


def _comment_start(line: str) -> int | None:
    """Where a `#` comment starts, skipping `#` inside double-quoted strings."""
    in_string = False
    i = 0
    while i < len(line):
        ch = line[i]
        if in_string:
            if ch == "\\":
                i += 1
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch == "#":
            return i
        i += 1
    return None


def _with_trailing(line: str, comments: Sequence[str]) -> str:
    return line + "  " + "  ".join(comments) if comments else line


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
    """Seconds as the largest whole unit (days, not weeks: `14d` reads better than `2w`)."""
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    if seconds == 0:
        return "0s"
    return f"{round(seconds * 1000)}ms"


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


def _key(name: str) -> str:
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
        return _key(value) if bare else string(value)
    if isinstance(value, list):
        return "[" + ", ".join(json_value(v) for v in value) + "]"
    if isinstance(value, dict):
        if not value:
            return "{}"
        return (
            "{ " + ", ".join(f"{_key(k)}: {json_value(v, bare)}" for k, v in value.items()) + " }"
        )
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
    target = e.event if e.prop is None else f"{e.event}.{e.prop}"
    return f"{e.fn}({target} within {e.window_text})"


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


def _wrapped_condition(head: str, e: n.Expr, tail: str, indent: str) -> list[str]:
    """`head + expr + tail`, broken before top-level (and nested) `and`/`or` when too long."""
    lines = _layout(e, len(indent) + len(head), _OR, len(tail))
    lines[0] = indent + head + lines[0]
    lines[-1] += tail
    return lines


def _wrapped_list(head: str, items: Sequence[str], close: str, indent: str) -> list[str]:
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


# ------------------------------------------------------------------ declarations


class _Printer:
    def __init__(self, ruleset: n.Ruleset) -> None:
        self.rs = ruleset
        self.file = ruleset.span.file
        self.comments = _Comments.scan(ruleset.source)
        self.enum_fields: dict[str, set[str]] = {"profile": set(), "context": set()}
        for decl in ruleset.of(n.SchemaDecl):
            for f in decl.fields:
                if f.type.kind == "enum":
                    self.enum_fields[decl.kind].add(f.name)

    def run(self) -> str:
        header_line = self.rs.span.line or 1
        out = self.comments.gap(1, header_line - 1, "", at_start=True)
        trailing = self.comments.take_trailing(header_line, header_line)
        out.append(_with_trailing(f"ruleset {self.rs.name}", trailing))
        previous_end = self.rs.span.end_line or header_line
        for decl in self.rs.decls:
            if decl.span.file != self.file:
                continue
            out += self.comments.gap(previous_end + 1, decl.span.line - 1, "", at_start=False)
            out += self.decl(decl)
            previous_end = decl.span.end_line
        out += self.comments.gap(previous_end + 1, self.comments.last_line, "", at_start=False)
        while out and out[-1] == "":
            out.pop()
        return "\n".join(out) + "\n"

    def _leaf(self, lines: list[str], span: n.Span, indent: str = "") -> list[str]:
        """A statement without inner anchors: own-line comments inside it go before it,
        trailing ones after its last line."""
        before = [indent + c for c in self.comments.take_alone(span.line + 1, span.end_line)]
        trailing = self.comments.take_trailing(span.line, span.end_line)
        lines = list(lines)
        lines[-1] = _with_trailing(lines[-1], trailing)
        return before + lines

    def decl(self, d: n.Decl) -> list[str]:
        method: Callable[[Any], list[str]] = getattr(self, f"d_{type(d).__name__}")
        return method(d)

    def d_Include(self, d: n.Include) -> list[str]:
        return self._leaf([f"include {string(d.path)}"], d.span)

    def d_SchemaDecl(self, d: n.SchemaDecl) -> list[str]:
        one = f"{d.kind} {{ " + ", ".join(_field_text(f) for f in d.fields) + " }"
        if d.fields and len(one) <= WIDTH and not self.comments.inside(d.span):
            return self._leaf([one], d.span)
        return self._block(f"{d.kind} {{", d.span, d.fields, self._field, INDENT, "")

    def d_EventDecl(self, d: n.EventDecl) -> list[str]:
        if not d.fields:
            return self._leaf([f"event {d.name}"], d.span)
        one = f"event {d.name} {{ " + ", ".join(_field_text(f) for f in d.fields) + " }"
        if len(one) <= WIDTH and not self.comments.inside(d.span):
            return self._leaf([one], d.span)
        return self._block(f"event {d.name} {{", d.span, d.fields, self._field, INDENT, "")

    def _field(self, f: n.Field, indent: str) -> list[str]:
        return self._leaf([indent + _field_text(f)], f.span, indent)

    def d_ModelDecl(self, d: n.ModelDecl) -> list[str]:
        head = f"model {d.name} = onnx {string(d.path)}"
        inputs = [expr(i) for i in d.inputs]
        per = " per action" if d.per_action else ""
        one = f"{head} inputs ({', '.join(inputs)}){per}"
        if len(one) <= WIDTH:
            return self._leaf([one], d.span)
        lines = [head, *_wrapped_list("inputs (", inputs, ")", INDENT)]
        if d.per_action:
            lines.append(INDENT + "per action")
        return self._leaf(lines, d.span)

    def d_SegmentDecl(self, d: n.SegmentDecl) -> list[str]:
        return self._leaf(_wrapped_condition(f"segment {d.name} = ", d.expr, "", ""), d.span)

    def d_ActionDecl(self, d: n.ActionDecl) -> list[str]:
        props = _action_props(d)
        body = ", ".join(text for _, text in props)
        one = f"action {d.name} {{ {body} }}"
        if len(one) <= WIDTH and not self.comments.inside(d.span):
            return self._leaf([one], d.span)
        # One property per line, each with the comment from its source line; a comment
        # on a line of its own goes before the first property that followed it.
        where = _property_lines(self.rs.source, d, [key for key, _ in props])
        alone = {i: self.comments.alone.pop(i) for i in range(d.span.line + 1, d.span.end_line)
                 if i in self.comments.alone}  # fmt: skip
        head = self.comments.take_trailing(d.span.line, d.span.line)
        out = [_with_trailing(f"action {d.name} {{", head)]
        for key, text in props:
            line = where.get(key)
            trailing: list[str] = []
            if line is not None:
                for i in sorted(i for i in alone if i < line):
                    out.append(INDENT + alone.pop(i))
                trailing = self.comments.take_trailing(line, line)
            out.append(_with_trailing(INDENT + text, trailing))
        out += [INDENT + alone[i] for i in sorted(alone)]
        rest = self.comments.take_trailing(d.span.line + 1, d.span.end_line)
        out.append(_with_trailing("}", rest))
        return out

    def d_WhenRule(self, d: n.WhenRule, indent: str = "") -> list[str]:
        return self._leaf(
            _wrapped_condition("when ", d.condition, _offer(d), indent), d.span, indent
        )

    def d_SuppressRule(self, d: n.SuppressRule, indent: str = "") -> list[str]:
        head = f"suppress {d.action} when "
        return self._leaf(_wrapped_condition(head, d.condition, "", indent), d.span, indent)

    def d_IfBlock(self, d: n.IfBlock, indent: str = "", keyword: str = "if") -> list[str]:
        opening = _wrapped_condition(f"{keyword} ", d.condition, " {", indent)
        opening[-1] = _with_trailing(
            opening[-1], self.comments.take_trailing(d.span.line, _then_start(d))
        )
        out = opening
        end_of_then = d.orelse[0].span.line - 1 if d.orelse else d.span.end_line
        out += self._rules(d.then, _then_start(d), end_of_then, indent + INDENT)
        if not d.orelse:
            out.append(
                _with_trailing(
                    indent + "}", self.comments.take_trailing(d.span.end_line, d.span.end_line)
                )
            )
            return out
        first = d.orelse[0]
        if len(d.orelse) == 1 and isinstance(first, n.IfBlock):
            # `else { if … }` and `else if …` parse alike; the canonical form is `else if`.
            nested = self.d_IfBlock(first, indent, keyword="} else if")
            return out + nested
        out.append(indent + "} else {")
        out += self._rules(d.orelse, first.span.line, d.span.end_line, indent + INDENT)
        out.append(
            _with_trailing(
                indent + "}", self.comments.take_trailing(d.span.end_line, d.span.end_line)
            )
        )
        return out

    def _rules(self, rules: Sequence[n.Rule], first: int, last: int, indent: str) -> list[str]:
        out: list[str] = []
        previous = first - 1
        at_start = True
        for rule in rules:
            out += self.comments.gap(previous + 1, rule.span.line - 1, indent, at_start)
            at_start = False
            out += self._rule(rule, indent)
            previous = rule.span.end_line
        # Comments after the last rule, before the closing brace.
        out += self.comments.gap(previous + 1, last - 1, indent, at_start=True)
        while out and out[-1] == "":
            out.pop()
        return out

    def _rule(self, rule: n.Rule, indent: str) -> list[str]:
        if isinstance(rule, n.WhenRule):
            return self.d_WhenRule(rule, indent)
        if isinstance(rule, n.SuppressRule):
            return self.d_SuppressRule(rule, indent)
        assert isinstance(rule, n.IfBlock)
        return self.d_IfBlock(rule, indent)

    def d_BanditDecl(self, d: n.BanditDecl) -> list[str]:
        clauses = [
            f"over [{', '.join(d.arms)}]",
            f"features ({', '.join(expr(f) for f in d.features)})",
        ]
        clauses.append(f"explore {d.exploration} {number(d.rate)}")
        if d.reward is not None:
            clauses.append(f"reward {d.reward}")
        one = f"bandit {d.name} " + " ".join(clauses)
        if len(one) <= WIDTH:
            return self._leaf([one], d.span)
        lines = [f"bandit {d.name} {clauses[0]}"] + [INDENT + c for c in clauses[1:]]
        return self._leaf(lines, d.span)

    def d_ArbitrateDecl(self, d: n.ArbitrateDecl) -> list[str]:
        tail = ""
        if d.top is not None:
            tail += f", top {d.top}"
        if d.max_per_tag is not None:
            tail += f", max {d.max_per_tag} per tag"
        return self._leaf([f"arbitrate by {expr(d.formula)}{tail}"], d.span)

    def d_HoldoutDecl(self, d: n.HoldoutDecl) -> list[str]:
        return self._leaf([f"holdout {percent(d.fraction)} {d.name}"], d.span)

    def d_ExperimentDecl(self, d: n.ExperimentDecl) -> list[str]:
        variants = ", ".join(f"{name}: {percent(share)}" for name, share in d.variants)
        return self._leaf([f"experiment {d.name} {{ {variants} }}"], d.span)

    def d_DefaultDecl(self, d: n.DefaultDecl) -> list[str]:
        return self._leaf([f"default {d.action}"], d.span)

    def d_ScenarioDecl(self, d: n.ScenarioDecl) -> list[str]:
        parts: list[list[str]] = []
        if d.customer is not None:
            parts.append([f"customer {string(d.customer)}"])
        if d.profile:
            parts.append(self._object("profile", d.profile, self.enum_fields["profile"]))
        if d.context:
            parts.append(self._object("context", d.context, self.enum_fields["context"]))
        if d.events:
            parts.append(_entries("events", [_scenario_event(e) for e in d.events]))
        if d.scores:
            parts.append(
                _entries(
                    "scores",
                    [f"{_key(k)}: {json_value(v, bare=True)}" for k, v in d.scores.items()],
                )
            )
        if d.variants:
            parts.append(
                _entries(
                    "experiments",
                    [f"{_key(k)}: {json_value(v, bare=True)}" for k, v in d.variants.items()],
                )
            )
        if d.in_holdout:
            parts.append(["in holdout"])
        if d.now is not None:
            parts.append([f"now {moment(d.now)}"])
        if d.expect is not None:
            parts.append(["expect " + (f"[{', '.join(d.expect)}]" if d.expect else "nothing")])
        head = self.comments.take_trailing(d.span.line, d.span.line)
        inner = self.comments.take_alone(d.span.line + 1, d.span.end_line - 1)
        inner += self.comments.take_trailing(d.span.line + 1, d.span.end_line)
        out = [_with_trailing(f"scenario {string(d.name)} {{", head)]
        out += [INDENT + c for c in inner]
        for part in parts:
            out += [INDENT + line for line in part]
        out.append("}")
        return out

    def _object(self, kind: str, values: Mapping[str, Any], enums: set[str]) -> list[str]:
        entries = [f"{_key(k)}: {json_value(v, bare=k in enums)}" for k, v in values.items()]
        return _entries(kind, entries)

    def _block(
        self,
        head: str,
        span: n.Span,
        items: Sequence[n.Field],
        show: Callable[[n.Field, str], list[str]],
        indent: str,
        outer: str,
    ) -> list[str]:
        out = [_with_trailing(outer + head, self.comments.take_trailing(span.line, span.line))]
        previous = span.line
        at_start = True
        for item in items:
            out += self.comments.gap(previous + 1, item.span.line - 1, indent, at_start)
            at_start = False
            out += show(item, indent)
            previous = item.span.end_line
        out += self.comments.gap(previous + 1, span.end_line - 1, indent, at_start=True)
        while out and out[-1] == "":
            out.pop()
        out.append(
            _with_trailing(outer + "}", self.comments.take_trailing(span.end_line, span.end_line))
        )
        return out


# ------------------------------------------------------------------ pieces


def _field_text(f: n.Field) -> str:
    return f"{f.name}: {f.type.text}"


def _offer(d: n.WhenRule) -> str:
    text = f" offer {d.action}"
    if d.weight != 1.0:
        text += f" weight {number(d.weight)}"
    if d.priority != 0:
        text += f" priority {d.priority}"
    return text


def _then_start(d: n.IfBlock) -> int:
    """The first line of the `then` block's contents (the line of its `{`)."""
    return d.condition.span.end_line


def _entries(kind: str, entries: Sequence[str]) -> list[str]:
    one = f"{kind} {{ " + ", ".join(entries) + " }"
    if len(INDENT + one) <= WIDTH:
        return [one]
    return [
        f"{kind} {{",
        *(INDENT + e + ("," if i < len(entries) - 1 else "") for i, e in enumerate(entries)),
        "}",
    ]


def _scenario_event(e: n.ScenarioEvent) -> str:
    target = e.event if e.prop is None else f"{e.event}.{e.prop}"
    ago = f" {duration(e.ago_seconds)} ago" if e.ago_seconds else ""
    return f"{target}: {number(e.amount)}{ago}"


def _action_props(d: n.ActionDecl) -> list[tuple[str, str]]:
    """(source keyword, text) of each property, in the canonical order."""
    # `value` is always shown, 0 included: every action's worth is then visible.
    props: list[tuple[str, str]] = [("value", f"value {number(d.value)}")]
    if d.channels:
        props.append(("channels", f"channels [{', '.join(d.channels)}]"))
    if d.cap is not None:
        props.append(("cap", f"cap {d.cap.count} per {duration(d.cap.window_seconds)}"))
    if d.consent is not None:
        props.append(("requires", f"requires consent {string(d.consent)}"))
    if d.valid_from is not None and d.valid_until is not None:
        # `valid A .. B` includes the whole of day B (the parser adds a day).
        props.append(("valid", f"valid {date(d.valid_from)} .. {date(d.valid_until - 86400)}"))
    if d.tags:
        props.append(("tags", f"tags [{', '.join(d.tags)}]"))
    if d.fatigue is not None:
        f = d.fatigue
        text = (
            f"suppress after {f.rejections} rejections within {duration(f.window_seconds)}"
            f" for {duration(f.period_seconds)}"
        )
        props.append(("suppress", text))
    for key, value in d.attributes.items():
        props.append((key, f"{key} {json_value(value)}"))
    if d.payload:
        props.append(("payload", f"payload {json_value(d.payload)}"))
    return props


def _property_lines(source: str, d: n.ActionDecl, keys: Iterable[str]) -> dict[str, int]:
    """The source line of each property keyword at the top level of the action's braces."""
    wanted = set(keys)
    found: dict[str, int] = {}
    lines = _lines(source)
    depth = 0
    for number_ in range(d.span.line, min(d.span.end_line, len(lines)) + 1):
        text = lines[number_ - 1]
        cut = _comment_start(text)
        text = text if cut is None else text[:cut]
        for token in re.finditer(r'"(?:[^"\\]|\\.)*"|[{}\[\]]|[A-Za-z_][A-Za-z0-9_]*', text):
            word = token.group(0)
            if word in "{[":
                depth += 1
            elif word in "}]":
                depth -= 1
            elif depth == 1 and word in wanted and word not in found:
                found[word] = number_
    return found


def format_ruleset(ruleset: n.Ruleset) -> str:
    """The canonical text of a ruleset parsed from one file, its comments kept."""
    return _Printer(ruleset).run()

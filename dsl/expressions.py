"""Type checking of expressions: the half of the checker that visits one expression.

`ExprChecker` is mixed into the checker (`dsl.checker`): it resolves names,
infers types, records which declarations are used, and rewrites what parsing
cannot know (a bare name compared with an enum field, `context.channel == web`,
becomes the string "web"). Dispatch is on node class (`visit_<ClassName>`).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from arbiter.dsl import nodes as n
from arbiter.dsl import types as t
from arbiter.dsl.checked import CheckedRuleset
from arbiter.dsl.errors import did_you_mean

#: Names the arbitration formula may use besides models, profile and context.
FORMULA_NAMES = {"value": t.NUMBER, "weight": t.NUMBER, "priority": t.NUMBER}

#: Where an expression is: decides which names it may use.
Place = str  # condition, formula, feature, model_input, model_input_action


def _is_literal(e: n.Expr) -> bool:
    return isinstance(e, n.LITERALS)


class ExprChecker:
    """Expression visitors; the host class provides `out`, `where`, `used` and `error`."""

    out: CheckedRuleset
    where: Place
    used: set[str]
    segment_deps: dict[str, set[str]]
    current_segment: str | None
    diags: list[Any]
    _undeclared_events: set[str]

    if TYPE_CHECKING:  # provided by the checker class this is mixed into

        def error(self, code: str, message: str, span: n.Span, hint: str | None = None) -> None: ...

    if TYPE_CHECKING:  # provided by the checker class this is mixed into

        def warn(self, code: str, message: str, span: n.Span, hint: str | None = None) -> None: ...

    # ------------------------------------------------------------ entry points

    def condition(self, expr: n.Expr) -> n.Expr:
        """Check a condition: it must be true or false."""
        new, ty = self.expr(expr)
        if ty.kind not in ("bool", "any"):
            self.error("type-mismatch", f"a condition must be true or false, not {ty}", expr.span)
        return new

    def expr(self, expr: n.Expr) -> tuple[n.Expr, t.Type]:
        """Check any expression; returns it (names resolved) and its type."""
        method: Callable[[Any], tuple[n.Expr, t.Type]] = getattr(
            self, f"visit_{type(expr).__name__}"
        )
        return method(expr)

    def _peek(self, expr: n.Expr) -> t.Type:
        """An expression's type without reporting its errors (they are reported where it is)."""
        saved = len(self.diags)
        _, ty = self.expr(expr)
        del self.diags[saved:]
        return ty

    # ------------------------------------------------------------ literals

    def visit_Number(self, e: n.Number) -> tuple[n.Expr, t.Type]:
        return e, t.NUMBER

    def visit_Percent(self, e: n.Percent) -> tuple[n.Expr, t.Type]:
        return e, t.NUMBER

    def visit_String(self, e: n.String) -> tuple[n.Expr, t.Type]:
        return e, t.STRING

    def visit_Bool(self, e: n.Bool) -> tuple[n.Expr, t.Type]:
        return e, t.BOOL

    def visit_Duration(self, e: n.Duration) -> tuple[n.Expr, t.Type]:
        return e, t.DURATION

    def visit_TimeLit(self, e: n.TimeLit) -> tuple[n.Expr, t.Type]:
        return e, t.TIME

    def visit_ListLit(self, e: n.ListLit) -> tuple[n.Expr, t.Type]:
        items = tuple(self.expr(i)[0] for i in e.items)
        return replace(e, items=items), t.LIST

    # ------------------------------------------------------------ names

    def visit_Ref(self, e: n.Ref) -> tuple[n.Expr, t.Type]:
        head, rest = e.parts[0], e.parts[1:]
        if head in ("profile", "context") and len(rest) == 1:
            schema = self.out.profile if head == "profile" else self.out.context
            if rest[0] not in schema:
                hint = did_you_mean(rest[0], schema)
                self.error("unknown-field", f"{head} has no field '{rest[0]}'", e.span, hint)
                return e, t.ANY
            self.used.add(f"field:{head}.{rest[0]}")
            return e, schema[rest[0]]
        if head == "experiment" and len(rest) == 1:
            exp = self.out.experiments.get(rest[0])
            if exp is None:
                hint = did_you_mean(rest[0], self.out.experiments)
                self.error("unknown-name", f"no experiment named '{rest[0]}'", e.span, hint)
                return e, t.ANY
            self.used.add(f"experiment:{rest[0]}")
            return e, t.Type("enum", tuple(v for v, _ in exp.variants))
        if head == "action" and len(rest) == 1:
            if self.where not in ("formula", "model_input_action"):
                self.error(
                    "misplaced-name",
                    "action attributes can only be used in 'arbitrate by' and per-action models",
                    e.span,
                )
                return e, t.ANY
            return e, self._check_attribute(e, rest[0])
        if len(e.parts) == 1:
            found = self._simple_name(e, head)
            if found is not None:
                return e, found
        self._unknown(e)
        return e, t.ANY

    def _check_attribute(self, e: n.Ref, attr: str) -> t.Type:
        """`action.x` must be a declared attribute (`action attributes { … }`); its type."""
        declared = self.out.attributes
        if attr in declared:
            return declared[attr]
        hint = did_you_mean(attr, declared)
        if attr == "value":
            hint = "an action's value is the plain name 'value'"
        self.error("unknown-field", f"no action attribute '{attr}' is declared", e.span, hint)
        return t.ANY

    def _simple_name(self, e: n.Ref, name: str) -> t.Type | None:
        if name in self.out.segments:
            self.used.add(f"segment:{name}")
            if self.current_segment is not None:
                self.segment_deps[self.current_segment].add(name)
            if self.where != "condition":
                self.error("misplaced-name", "segments are conditions, not numbers", e.span)
                return t.ANY  # reported; no second error about what it is combined with
            return t.BOOL
        if name in self.out.models:
            self.used.add(f"model:{name}")
            model = self.out.models[name]
            if self.where.startswith("model_input"):
                self.error("misplaced-name", "a model cannot feed another model", e.span)
            elif model.per_action and self.where != "formula":
                self.error(
                    "misplaced-name",
                    f"model '{name}' is scored per action; use it in 'arbitrate by'",
                    e.span,
                )
            return t.NUMBER
        if self._formula_name(name):
            return FORMULA_NAMES[name]
        return None

    def _formula_name(self, name: str) -> bool:
        # Per-action models see the candidate's value; the formula sees all three.
        if self.where == "model_input_action":
            return name == "value"
        return self.where == "formula" and name in FORMULA_NAMES

    def _unknown(self, e: n.Ref) -> None:
        names = [*self.out.segments, *self.out.models]
        names += [f"profile.{k}" for k in self.out.profile]
        names += [f"context.{k}" for k in self.out.context]
        names += [k for k in FORMULA_NAMES if self._formula_name(k)]
        hint = did_you_mean(e.dotted, names)
        if hint is None and len(e.parts) == 1:
            # `visits` for `profile.visits`: the most common slip.
            for head in ("profile", "context"):
                schema = self.out.profile if head == "profile" else self.out.context
                if e.parts[0] in schema:
                    hint = f"did you mean '{head}.{e.parts[0]}'?"
        self.error("unknown-name", f"unknown name '{e.dotted}'", e.span, hint)

    # ------------------------------------------------------------ calls, events

    def visit_Call(self, e: n.Call) -> tuple[n.Expr, t.Type]:
        sig = t.BUILTINS.get(e.name)
        args = [self.expr(a) for a in e.args]
        new = replace(e, args=tuple(a for a, _ in args))
        if sig is None:
            hint = did_you_mean(e.name, t.BUILTINS)
            if e.name in ("count", "sum", "avg"):
                hint = f"an event aggregate reads: {e.name}(<event> within <duration>)"
            self.error("unknown-function", f"unknown function '{e.name}'", e.span, hint)
            return new, t.ANY
        params, result = sig
        fewest = t.OPTIONAL_ARGS.get(e.name, len(params))
        if not fewest <= len(args) <= len(params):
            takes = f"{fewest} or {len(params)}" if fewest != len(params) else f"{len(params)}"
            self.error(
                "wrong-arity",
                f"{e.name}() takes {takes} argument(s), got {len(args)}",
                e.span,
            )
            return new, result
        if len(args) < len(params):
            # `hour_of_day()`: in the customer's zone, the first of context.time_zone and
            # profile.time_zone that is declared (and, at run time, present); else UTC.
            new = replace(new, args=self._customer_zone(e.span))
        if e.name in ("min", "max") and len(args) == 2:
            kinds = {args[0][1].kind, args[1][1].kind}
            if kinds <= {"time", "any"} and "time" in kinds:
                return new, t.TIME  # the earlier or later of two times
            if kinds <= {"duration", "any"} and "duration" in kinds:
                return new, t.DURATION
        for (arg, ty), want in zip(args, params, strict=False):
            if want.kind != "any" and not t.comparable(ty, want):
                code = "literal-type" if _is_literal(arg) else "type-mismatch"
                self.error(code, f"{e.name}() expects {want}, got {ty}", arg.span)
        if e.name == "coalesce":
            return new, args[0][1]
        return new, result

    def _customer_zone(self, span: n.Span) -> tuple[n.Expr, ...]:
        """The zone argument `hour_of_day()` and `day_of_week()` get when none is given."""
        fields = [
            n.Ref(span, (head, "time_zone"))
            for head, schema in (("context", self.out.context), ("profile", self.out.profile))
            if "time_zone" in schema
        ]
        for f in fields:
            self.used.add(f"field:{f.dotted}")
        if not fields:
            return (n.String(span, "UTC"),)
        zone: n.Expr = fields[0]
        for later in fields[1:]:
            zone = n.Call(span, "coalesce", (zone, later))
        return (n.Call(span, "coalesce", (zone, n.String(span, "UTC"))),)

    def visit_Aggregate(self, e: n.Aggregate) -> tuple[n.Expr, t.Type]:
        self._check_event(e.event, e.span)
        if e.fn == "count" and e.prop is not None:
            self.error("type-mismatch", "count() counts events; drop the property", e.span)
        if e.fn != "count" and e.prop is None:
            self.error(
                "missing-property",
                f"{e.fn}() needs an event property, e.g. {e.fn}({e.event}.amount within 30d)",
                e.span,
            )
        if e.prop is not None and e.event in self.out.events:
            fields = self.out.events[e.event]
            if e.prop not in fields:
                hint = did_you_mean(e.prop, fields)
                self.error(
                    "unknown-field", f"event {e.event} has no field '{e.prop}'", e.span, hint
                )
            elif not fields[e.prop].is_numeric:
                self.error("type-mismatch", f"{e.fn}() needs a number property", e.span)
        if e.window_seconds <= 0:
            self.error("bad-window", "the window must be longer than zero", e.span)
        return e, t.NUMBER

    def visit_Contacts(self, e: n.Contacts) -> tuple[n.Expr, t.Type]:
        self.check_contact_target(e.scope, e.name, e.span)
        if e.window_seconds <= 0:
            self.error("bad-window", "the window must be longer than zero", e.span)
        return e, t.NUMBER

    def check_contact_target(self, scope: str, name: str, span: n.Span) -> None:
        """A channel context.channel can take, a tag some action has, or an action."""
        if scope == "channel":
            channel = self.out.context.get("channel")
            members = channel.members if channel is not None and channel.kind == "enum" else ()
            if members and name not in members:
                hint = did_you_mean(name, members)
                message = f"channel '{name}' is not one of context.channel's values"
                self.error("unknown-channel", message, span, hint)
        elif scope == "tag":
            tags = {tg for a in self.out.actions.values() for tg in a.tags}
            if name not in tags:
                hint = did_you_mean(name, tags)
                self.error("unknown-name", f"no action has the tag '{name}'", span, hint)
        elif name not in self.out.actions:
            hint = did_you_mean(name, self.out.actions)
            self.error("unknown-action", f"no action named '{name}'", span, hint)

    def visit_LastSeen(self, e: n.LastSeen) -> tuple[n.Expr, t.Type]:
        self._check_event(e.event, e.span)
        return e, t.TIME

    def _check_event(self, name: str, span: n.Span) -> None:
        self.used.add(f"event:{name}")
        if name in self.out.events:
            return
        if self.out.events:
            hint = did_you_mean(name, self.out.events)
            self.error("unknown-event", f"no event named '{name}'", span, hint)
        elif name not in self._undeclared_events:
            # Quick sketches may skip event declarations; say so once per event.
            self._undeclared_events.add(name)
            self.warn(
                "undeclared-event",
                f"event '{name}' is not declared",
                span,
                hint=f"declare it: event {name}",
            )

    # ------------------------------------------------------------ operators

    def visit_Unary(self, e: n.Unary) -> tuple[n.Expr, t.Type]:
        if e.op == "not":
            return replace(e, operand=self.condition(e.operand)), t.BOOL
        operand, ty = self.expr(e.operand)
        if not ty.is_numeric and ty.kind != "duration":
            self.error("type-mismatch", f"cannot negate {ty}", e.span)
        return replace(e, operand=operand), ty

    def visit_BoolOp(self, e: n.BoolOp) -> tuple[n.Expr, t.Type]:
        return replace(e, operands=tuple(self.condition(o) for o in e.operands)), t.BOOL

    def visit_Presence(self, e: n.Presence) -> tuple[n.Expr, t.Type]:
        return replace(e, operand=self.expr(e.operand)[0]), t.BOOL

    def visit_Between(self, e: n.Between) -> tuple[n.Expr, t.Type]:
        operand, ty = self.expr(e.operand)
        low, lt = self.expr(e.low)
        high, ht = self.expr(e.high)
        for bound, bt in ((low, lt), (high, ht)):
            if not t.comparable(ty, bt):
                self._mismatch(e.operand, ty, bound, bt, bound.span)
        return replace(e, operand=operand, low=low, high=high), t.BOOL

    def visit_Binary(self, e: n.Binary) -> tuple[n.Expr, t.Type]:
        left, lt = self.expr_or_enum(e.left, e.right)
        right, rt = self.expr_or_enum(e.right, e.left, lt)
        new = replace(e, left=left, right=right)
        op = e.op
        if op in ("+", "-", "*", "/"):
            return new, self._arith(e, lt, rt)
        if op in ("==", "!=", "<", "<=", ">", ">="):
            segment = _segment_ref(left, self.out) or _segment_ref(right, self.out)
            if (
                segment is not None
                and (lt.is_numeric or rt.is_numeric)
                and "any"
                not in (
                    lt.kind,
                    rt.kind,
                )
            ):
                self._segment_as_number(segment, e.span)
                return new, t.BOOL
            if not t.comparable(lt, rt):
                self._mismatch(left, lt, right, rt, e.span)
            elif lt.kind == "enum" and isinstance(right, n.String):
                self._check_member(right, lt)
            elif rt.kind == "enum" and isinstance(left, n.String):
                self._check_member(left, rt)
            if op not in ("==", "!=") and (lt.kind in ("bool", "set") or rt.kind in ("bool",)):
                self.error("type-mismatch", f"'{op}' needs numbers, times or text", e.span)
            return new, t.BOOL
        if op in ("in", "not in"):
            return new, self._membership(e, left, lt, right, rt)
        # starts with, ends with, contains, matches
        if op == "contains" and lt.kind == "set":
            return new, t.BOOL
        if not lt.is_text or not rt.is_text:
            self.error("type-mismatch", f"'{op}' needs text on both sides", e.span)
        if op == "matches" and isinstance(right, n.String):
            try:
                re.compile(right.value)
            except re.error as exc:
                self.error("bad-regex", f"invalid regular expression: {exc}", right.span)
        return new, t.BOOL

    def _segment_as_number(self, segment: str, span: n.Span) -> None:
        """`churner > 0.5`: a segment is true or false; point at the score it was built on."""
        models = sorted(_models_in(self.out.segments[segment].expr, self.out.models))
        hint = "a segment is a condition: use it alone (when churner …) or with not"
        hint = hint.replace("churner", segment)
        if models:
            hint = f"to compare a score, use the model: {models[0]} > …"
        message = f"'{segment}' is a segment (true or false), not a number to compare"
        self.error("type-mismatch", message, span, hint)

    def _membership(
        self, e: n.Binary, left: n.Expr, lt: t.Type, right: n.Expr, rt: t.Type
    ) -> t.Type:
        if rt.kind not in ("list", "set", "any", "string"):
            self.error("type-mismatch", f"'{e.op}' needs a list or set on the right", e.span)
        if isinstance(right, n.ListLit):
            for item in right.items:
                if lt.kind == "enum" and isinstance(item, n.String):
                    self._check_member(item, lt)
                elif _is_literal(item):
                    it = self._peek(item)
                    if not t.comparable(lt, it):
                        self._mismatch(left, lt, item, it, item.span)
        return t.BOOL

    def _mismatch(self, a: n.Expr, at: t.Type, b: n.Expr, bt: t.Type, span: n.Span) -> None:
        """`cannot compare`, as a literal-type error with a hint when one side is a literal."""
        literal, other, other_type, lit_type = (b, a, at, bt) if _is_literal(b) else (a, b, bt, at)
        if not _is_literal(literal):
            self.error("type-mismatch", f"cannot compare {at} with {bt}", span)
            return
        name = other.dotted if isinstance(other, n.Ref) else "this value"
        hint = None
        if isinstance(literal, n.String) and other_type.is_numeric:
            if re.fullmatch(r"-?\d+(\.\d+)?", literal.value):
                hint = f"drop the quotes: {literal.value}"
        elif isinstance(literal, n.Duration) and other_type.is_numeric:
            hint = "a number of days or hours has no unit: write 30, not 30d"
        elif isinstance(literal, n.Number) and other_type.kind == "time":
            hint = f"compare with a date (2026-01-31) or use days_since({name}) > {literal.value}"
        elif isinstance(literal, n.Number) and other_type.kind == "enum":
            member = other_type.members[0] if other_type.members else "…"
            hint = f"compare with one of its values, e.g. {name} == {member} (values have no order)"
        elif isinstance(literal, n.Number) and other_type.is_text:
            hint = f'put it in quotes: "{literal.value}"'
        self.error(
            "literal-type",
            f"{name} is {_article(other_type)}, but {_show(literal)} is {_article(lit_type)}",
            literal.span,
            hint,
        )

    def expr_or_enum(
        self, e: n.Expr, other: n.Expr, other_type: t.Type | None = None
    ) -> tuple[n.Expr, t.Type]:
        """A bare name compared with an enum value is that member, as a string."""
        if isinstance(e, n.Ref) and len(e.parts) == 1:
            name = e.parts[0]
            if other_type is None:
                other_type = self._peek(other)
            # A member wins over a segment of the same name: comparing an enum with a
            # segment's true/false could never make sense.
            # A segment, model or formula name compared with an enum is as meaningless:
            # it is read as a (misspelled) member, which gets a "did you mean".
            if other_type.kind == "enum":
                return n.String(e.span, name), t.STRING
        if isinstance(e, n.ListLit) and other_type is None:
            other_type = self._peek(other)
        if isinstance(e, n.ListLit) and other_type is not None and other_type.kind == "enum":
            items = tuple(
                n.String(i.span, i.parts[0])
                if isinstance(i, n.Ref) and len(i.parts) == 1 and not self._is_known(i.parts[0])
                else self.expr(i)[0]
                for i in e.items
            )
            return replace(e, items=items), t.LIST
        return self.expr(e)

    def _is_known(self, name: str) -> bool:
        return name in self.out.segments or name in self.out.models or self._formula_name(name)

    def _check_member(self, lit: n.String, ty: t.Type) -> None:
        if lit.value not in ty.members:
            hint = did_you_mean(lit.value, ty.members)
            if hint is None and lit.value in self.out.segments:
                hint = f"'{lit.value}' is a segment; a segment is true or false, not one of these"
            members = ", ".join(ty.members)
            message = f"'{lit.value}' is not one of the values [{members}]"
            self.error("unknown-member", message, lit.span, hint)

    def _arith(self, e: n.Binary, lt: t.Type, rt: t.Type) -> t.Type:
        kinds = (lt.kind, rt.kind)
        if "any" in kinds:
            return t.ANY if kinds == ("any", "any") else (rt if lt.kind == "any" else lt)
        if e.op == "-" and kinds == ("time", "time"):
            return t.DURATION
        if e.op in ("+", "-") and kinds == ("time", "duration"):
            return t.TIME
        if kinds == ("duration", "duration") and e.op in ("+", "-"):
            return t.DURATION
        if e.op in ("*", "/") and kinds in (("duration", "number"), ("number", "duration")):
            return t.DURATION
        if lt.is_numeric and rt.is_numeric:
            return t.NUMBER
        self.error("type-mismatch", f"cannot apply '{e.op}' to {lt} and {rt}", e.span)
        return t.ANY


def _segment_ref(e: n.Expr, out: CheckedRuleset) -> str | None:
    """The segment a bare name refers to, if it is one."""
    if isinstance(e, n.Ref) and len(e.parts) == 1 and e.parts[0] in out.segments:
        return e.parts[0]
    return None


def _models_in(expr: n.Expr, models: Mapping[str, Any]) -> set[str]:
    """The models an expression reads directly."""
    found: set[str] = set()
    stack: list[Any] = [expr]
    while stack:
        node = stack.pop()
        if isinstance(node, n.Ref) and len(node.parts) == 1 and node.parts[0] in models:
            found.add(node.parts[0])
        elif isinstance(node, n.Expr):
            stack.extend(getattr(node, f) for f in node.__dataclass_fields__ if f != "span")
        elif isinstance(node, tuple):
            stack.extend(node)
    return found


def _article(ty: t.Type) -> str:
    text = str(ty)
    if ty.kind == "enum":
        return text
    return f"an {text}" if text[0] in "aeiou" else f"a {text}"


def _show(lit: n.Expr) -> str:
    if isinstance(lit, n.String):
        return f'"{lit.value}"'
    if isinstance(lit, n.Duration | n.TimeLit | n.Percent):
        return lit.text
    if isinstance(lit, n.Bool):
        return "true" if lit.value else "false"
    if isinstance(lit, n.Number):
        return repr(lit.value)
    return "this literal"

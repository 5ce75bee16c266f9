"""Parsed AST → checked ruleset: names, types, cycles and reachability.

The checker runs an ordered list of named checks (`CHECKS`) over one
`Ruleset`, collecting every diagnostic instead of stopping at the first. It
also resolves what parsing cannot know: a bare name compared with an enum
field (`context.channel == web`) becomes the string literal "web".
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any

from dsl import nodes as n
from dsl import types as t
from dsl.errors import Diagnostic, RulesError, did_you_mean, sort_and_cap

EXPLORATIONS = ("epsilon", "softmax", "squarecb")
#: Names the arbitration formula may use besides models, profile and context.
FORMULA_NAMES = {"value": t.NUMBER, "weight": t.NUMBER, "priority": t.NUMBER}


@dataclass
class CheckedRuleset:
    """A ruleset whose names and types are known to be consistent."""

    name: str
    sources: dict[str, str]
    profile: dict[str, t.Type] = field(default_factory=dict)
    context: dict[str, t.Type] = field(default_factory=dict)
    events: dict[str, dict[str, t.Type]] = field(default_factory=dict)
    segments: dict[str, n.SegmentDecl] = field(default_factory=dict)  # dependency order
    models: dict[str, n.ModelDecl] = field(default_factory=dict)
    actions: dict[str, n.ActionDecl] = field(default_factory=dict)
    rules: tuple[n.Rule, ...] = ()
    bandits: dict[str, n.BanditDecl] = field(default_factory=dict)
    arbitrate: n.ArbitrateDecl | None = None
    holdout: n.HoldoutDecl | None = None
    experiments: dict[str, n.ExperimentDecl] = field(default_factory=dict)
    default: str | None = None
    scenarios: tuple[n.ScenarioDecl, ...] = ()
    warnings: list[Diagnostic] = field(default_factory=list)


class _Checker:
    def __init__(self, ruleset: n.Ruleset, sources: dict[str, str]) -> None:
        self.rs = ruleset
        self.out = CheckedRuleset(ruleset.name, sources)
        self.diags: list[Diagnostic] = []
        self.used: set[str] = set()  # names of segments/models/actions referenced
        self.segment_deps: dict[str, set[str]] = {}
        self.where = "condition"
        self.current_segment: str | None = None

    def error(self, code: str, message: str, span: n.Span, hint: str | None = None) -> None:
        self.diags.append(Diagnostic(code, message, span, "error", hint))

    def warn(self, code: str, message: str, span: n.Span, hint: str | None = None) -> None:
        self.diags.append(Diagnostic(code, message, span, "warning", hint))

    # ------------------------------------------------------------ the checks

    def declarations(self) -> None:
        """Collect schema, events and named declarations; report duplicates."""
        seen: dict[str, n.Span] = {}

        def claim(kind: str, name: str, span: n.Span) -> bool:
            if name in seen:
                self.error(
                    "duplicate-name",
                    f"{kind} '{name}' is already defined at {seen[name]}",
                    span,
                )
                return False
            seen[name] = span
            return True

        for decl in self.rs.decls:
            if isinstance(decl, n.SchemaDecl):
                target = self.out.profile if decl.kind == "profile" else self.out.context
                for f in decl.fields:
                    self._declare_field(target, f, decl.kind)
            elif isinstance(decl, n.EventDecl):
                fields: dict[str, t.Type] = {}
                for f in decl.fields:
                    self._declare_field(fields, f, f"event {decl.name}")
                self.out.events[decl.name] = fields
            elif isinstance(decl, n.SegmentDecl):
                if claim("segment", decl.name, decl.span):
                    self.out.segments[decl.name] = decl
            elif isinstance(decl, n.ModelDecl):
                if claim("model", decl.name, decl.span):
                    self.out.models[decl.name] = decl
            elif isinstance(decl, n.ActionDecl):
                if claim("action", decl.name, decl.name_span):
                    self.out.actions[decl.name] = decl
            elif isinstance(decl, n.BanditDecl):
                if claim("bandit", decl.name, decl.span):
                    self.out.bandits[decl.name] = decl
            elif isinstance(decl, n.ExperimentDecl):
                if claim("experiment", decl.name, decl.span):
                    self.out.experiments[decl.name] = decl
            elif isinstance(decl, n.ArbitrateDecl):
                if self.out.arbitrate is not None:
                    self.error("duplicate-arbitrate", "only one 'arbitrate' is allowed", decl.span)
                self.out.arbitrate = decl
            elif isinstance(decl, n.HoldoutDecl):
                if self.out.holdout is not None:
                    self.error("duplicate-holdout", "only one 'holdout' is allowed", decl.span)
                self.out.holdout = decl
            elif isinstance(decl, n.DefaultDecl):
                if self.out.default is not None:
                    self.error("duplicate-default", "only one 'default' is allowed", decl.span)
                self.out.default = decl.action
                self._use_action(decl.action, decl.span)
        self.out.scenarios = tuple(self.rs.of(n.ScenarioDecl))

    def _declare_field(self, target: dict[str, t.Type], f: n.Field, owner: str) -> None:
        if f.name in target:
            self.error("duplicate-field", f"{owner} field '{f.name}' is declared twice", f.span)
            return
        if f.type.kind == "unknown":
            hint = did_you_mean(f.type.text, ["number", "int", "string", "bool", "time"])
            self.error("unknown-type", f"unknown type '{f.type.text}'", f.type.span, hint)
        target[f.name] = t.from_decl(f.type)

    def segments(self) -> None:
        """Type-check segment definitions; record their dependencies for the cycle check."""
        for name, decl in list(self.out.segments.items()):
            self.current_segment = name
            self.segment_deps[name] = set()
            expr = self.condition(decl.expr)
            self.out.segments[name] = replace(decl, expr=expr)
        self.current_segment = None

    def cycles(self) -> None:
        """Segments that use each other in a loop are an error; order them by dependency."""
        order: list[str] = []
        state: dict[str, int] = {}  # 1 visiting, 2 done

        def visit(name: str, path: list[str]) -> None:
            if state.get(name) == 2:
                return
            if state.get(name) == 1:
                loop = " -> ".join([*path[path.index(name) :], name])
                self.error(
                    "segment-cycle",
                    f"segments refer to each other in a loop: {loop}",
                    self.out.segments[name].span,
                )
                return
            state[name] = 1
            for dep in sorted(self.segment_deps.get(name, ())):
                visit(dep, [*path, name])
            state[name] = 2
            order.append(name)

        for name in self.out.segments:
            visit(name, [])
        self.out.segments = {k: self.out.segments[k] for k in order}

    def models(self) -> None:
        """Model inputs are numeric expressions."""
        for name, decl in list(self.out.models.items()):
            self.where = "model_input_action" if decl.per_action else "model_input"
            inputs = []
            for expr in decl.inputs:
                new, ty = self.expr(expr)
                if not ty.is_numeric and ty.kind not in ("bool", "duration"):
                    self.error(
                        "type-mismatch",
                        f"model inputs must be numbers, this one is {ty}",
                        expr.span,
                    )
                inputs.append(new)
            self.out.models[name] = replace(decl, inputs=tuple(inputs))
        self.where = "condition"

    def rules(self) -> None:
        """Rule conditions are booleans; offered and suppressed actions exist."""
        self.out.rules = tuple(self._rule(r) for r in self.rs.of(n.Rule))

    def _rule(self, rule: n.Rule) -> n.Rule:
        if isinstance(rule, n.WhenRule):
            self._use_action(rule.action, rule.action_span)
            cond = self.condition(rule.condition)
            if isinstance(cond, n.Bool) and not cond.value:
                self.warn("unreachable-rule", "this rule can never fire", rule.span)
            return replace(rule, condition=cond)
        if isinstance(rule, n.SuppressRule):
            self._use_action(rule.action, rule.action_span)
            return replace(rule, condition=self.condition(rule.condition))
        assert isinstance(rule, n.IfBlock)
        cond = self.condition(rule.condition)
        return replace(
            rule,
            condition=cond,
            then=tuple(self._rule(r) for r in rule.then),
            orelse=tuple(self._rule(r) for r in rule.orelse),
        )

    def _use_action(self, name: str, span: n.Span) -> None:
        self.used.add(f"action:{name}")
        if name not in self.out.actions:
            hint = did_you_mean(name, self.out.actions)
            self.error("unknown-action", f"no action named '{name}'", span, hint)

    def bandits(self) -> None:
        """Bandit arms are actions; exploration kind and rate are valid; features typed."""
        for name, decl in list(self.out.bandits.items()):
            for arm in decl.arms:
                if arm not in self.out.actions:
                    hint = did_you_mean(arm, self.out.actions)
                    self.error("unknown-action", f"no action named '{arm}'", decl.span, hint)
            if len(decl.arms) < 2:
                self.error("bandit-arms", f"bandit '{name}' needs at least two arms", decl.span)
            if decl.exploration not in EXPLORATIONS:
                hint = did_you_mean(decl.exploration, EXPLORATIONS)
                self.error(
                    "unknown-exploration",
                    f"unknown exploration '{decl.exploration}' (one of {', '.join(EXPLORATIONS)})",
                    decl.span,
                    hint,
                )
            elif decl.exploration == "epsilon" and not 0 <= decl.rate <= 1:
                self.error("bad-rate", "epsilon must be between 0 and 1", decl.span)
            elif decl.rate < 0:
                self.error("bad-rate", "exploration rate must not be negative", decl.span)
            self.where = "feature"
            features = tuple(self.expr(e)[0] for e in decl.features)
            self.where = "condition"
            self.out.bandits[name] = replace(decl, features=features)

    def arbitration(self) -> None:
        """The formula is numeric; top and diversity limits are positive."""
        decl = self.out.arbitrate
        if decl is None:
            return
        self.where = "formula"
        formula, ty = self.expr(decl.formula)
        self.where = "condition"
        if not ty.is_numeric:
            self.error("type-mismatch", f"arbitrate by needs a number, not {ty}", decl.span)
        if decl.top is not None and decl.top < 1:
            self.error("bad-limit", "top must be at least 1", decl.span)
        if decl.max_per_tag is not None and decl.max_per_tag < 1:
            self.error("bad-limit", "max per tag must be at least 1", decl.span)
        self.out.arbitrate = replace(decl, formula=formula)

    def splits(self) -> None:
        """Holdout and experiment shares are percentages that add up."""
        if self.out.holdout is not None and not 0 <= self.out.holdout.fraction < 1:
            self.error("bad-percent", "holdout must be below 100%", self.out.holdout.span)
        for decl in self.out.experiments.values():
            total = sum(share for _, share in decl.variants)
            if abs(total - 1.0) > 1e-9:
                self.error(
                    "bad-percent",
                    f"experiment '{decl.name}' variants add up to {total * 100:g}%, not 100%",
                    decl.span,
                )
            names = [v for v, _ in decl.variants]
            if len(set(names)) != len(names):
                self.error("duplicate-name", "experiment variants must differ", decl.span)

    def actions(self) -> None:
        """Channels exist in the context's channel enum; warn on actions never offered."""
        channel = self.out.context.get("channel")
        for name, action in self.out.actions.items():
            if channel is not None and channel.kind == "enum":
                for ch in action.channels:
                    if ch not in channel.members:
                        hint = did_you_mean(ch, channel.members)
                        self.error(
                            "unknown-channel",
                            f"channel '{ch}' is not one of context.channel's values",
                            action.span,
                            hint,
                        )
            in_bandit = any(name in b.arms for b in self.out.bandits.values())
            offered = any(
                isinstance(r, n.WhenRule) and r.action == name for r in _walk_rules(self.out.rules)
            )
            if not offered and self.out.default != name and not in_bandit:
                self.warn(
                    "unused-action",
                    f"action '{name}' is never offered by any rule",
                    action.name_span,
                )

    def unused(self) -> None:
        """Warn on segments and models nothing uses."""
        for name, seg in self.out.segments.items():
            if f"segment:{name}" not in self.used:
                self.warn("unused-segment", f"segment '{name}' is never used", seg.span)
        for name, model in self.out.models.items():
            if f"model:{name}" not in self.used:
                self.warn("unused-model", f"model '{name}' is never used", model.span)

    def shadowed(self) -> None:
        """A rule identical to an earlier one in the same block adds nothing."""
        self._shadowed_in(self.out.rules)

    def _shadowed_in(self, rules: tuple[n.Rule, ...]) -> None:
        seen: dict[tuple[Any, ...], n.Span] = {}
        for rule in rules:
            if isinstance(rule, n.WhenRule):
                key = (rule.condition, rule.action)
                if key in seen:
                    self.warn(
                        "shadowed-rule",
                        f"same condition and action as the rule at {seen[key]}",
                        rule.span,
                    )
                else:
                    seen[key] = rule.span
            elif isinstance(rule, n.IfBlock):
                self._shadowed_in(rule.then)
                self._shadowed_in(rule.orelse)

    def scenarios(self) -> None:
        """Scenario profiles and contexts name declared fields; expected actions exist."""
        for sc in self.out.scenarios:
            for kind, values, schema in (
                ("profile", sc.profile, self.out.profile),
                ("context", sc.context, self.out.context),
            ):
                for key in values:
                    if key not in schema:
                        hint = did_you_mean(key, schema)
                        self.error("unknown-field", f"{kind} has no field '{key}'", sc.span, hint)
            for action in sc.expect or ():
                if action not in self.out.actions:
                    hint = did_you_mean(action, self.out.actions)
                    self.error("unknown-action", f"no action named '{action}'", sc.span, hint)
            for key in sc.scores:
                if key not in self.out.models:
                    hint = did_you_mean(key, self.out.models)
                    self.error("unknown-model", f"no model named '{key}'", sc.span, hint)

    # ---------------------------------------------------------- expressions

    def condition(self, expr: n.Expr) -> n.Expr:
        new, ty = self.expr(expr)
        if ty.kind not in ("bool", "any"):
            self.error("type-mismatch", f"a condition must be true or false, not {ty}", expr.span)
        return new

    def expr(self, expr: n.Expr) -> tuple[n.Expr, t.Type]:
        method: Callable[[Any], tuple[n.Expr, t.Type]] = getattr(
            self, f"visit_{type(expr).__name__}"
        )
        return method(expr)

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

    def visit_Ref(self, e: n.Ref) -> tuple[n.Expr, t.Type]:
        head, rest = e.parts[0], e.parts[1:]
        if head in ("profile", "context") and len(rest) == 1:
            schema = self.out.profile if head == "profile" else self.out.context
            if rest[0] not in schema:
                hint = did_you_mean(rest[0], schema)
                self.error("unknown-field", f"{head} has no field '{rest[0]}'", e.span, hint)
                return e, t.ANY
            return e, schema[rest[0]]
        if head == "experiment" and len(rest) == 1:
            exp = self.out.experiments.get(rest[0])
            if exp is None:
                hint = did_you_mean(rest[0], self.out.experiments)
                self.error("unknown-name", f"no experiment named '{rest[0]}'", e.span, hint)
                return e, t.ANY
            return e, t.Type("enum", tuple(v for v, _ in exp.variants))
        if head == "action" and len(rest) == 1:
            if self.where not in ("formula", "model_input_action"):
                self.error(
                    "misplaced-name",
                    "action attributes can only be used in 'arbitrate by' and per-action models",
                    e.span,
                )
            return e, t.ANY
        if len(e.parts) == 1:
            name = head
            if name in self.out.segments:
                if self.where != "condition":
                    self.error("misplaced-name", "segments are conditions, not numbers", e.span)
                self.used.add(f"segment:{name}")
                if self.current_segment is not None:
                    self.segment_deps[self.current_segment].add(name)
                return e, t.BOOL
            if name in self.out.models:
                self.used.add(f"model:{name}")
                model = self.out.models[name]
                if model.per_action and self.where != "formula":
                    self.error(
                        "misplaced-name",
                        f"model '{name}' is scored per action; use it in 'arbitrate by'",
                        e.span,
                    )
                if self.where.startswith("model_input"):
                    self.error("misplaced-name", "a model cannot feed another model", e.span)
                return e, t.NUMBER
            if self.where == "formula" and name in FORMULA_NAMES:
                return e, FORMULA_NAMES[name]
        names = [*self.out.segments, *self.out.models]
        names += [f"profile.{k}" for k in self.out.profile]
        names += [f"context.{k}" for k in self.out.context]
        if self.where == "formula":
            names += list(FORMULA_NAMES)
        hint = did_you_mean(e.dotted, names)
        self.error("unknown-name", f"unknown name '{e.dotted}'", e.span, hint)
        return e, t.ANY

    def visit_Call(self, e: n.Call) -> tuple[n.Expr, t.Type]:
        sig = t.BUILTINS.get(e.name)
        args = [self.expr(a) for a in e.args]
        new = replace(e, args=tuple(a for a, _ in args))
        if sig is None:
            hint = did_you_mean(e.name, t.BUILTINS)
            self.error("unknown-function", f"unknown function '{e.name}'", e.span, hint)
            return new, t.ANY
        params, result = sig
        if len(args) != len(params):
            self.error(
                "wrong-arity",
                f"{e.name}() takes {len(params)} argument(s), got {len(args)}",
                e.span,
            )
            return new, result
        for (arg, ty), want in zip(args, params, strict=True):
            if want.kind != "any" and not t.comparable(ty, want):
                self.error("type-mismatch", f"{e.name}() expects {want}, got {ty}", arg.span)
        if e.name == "coalesce":
            return new, args[0][1]
        return new, result

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

    def visit_LastSeen(self, e: n.LastSeen) -> tuple[n.Expr, t.Type]:
        self._check_event(e.event, e.span)
        return e, t.TIME

    def _check_event(self, name: str, span: n.Span) -> None:
        # Undeclared events are allowed when none are declared (quick sketches);
        # once a file declares events, a typo is caught.
        if self.out.events and name not in self.out.events:
            hint = did_you_mean(name, self.out.events)
            self.error("unknown-event", f"no event named '{name}'", span, hint)

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
                self.error("type-mismatch", f"cannot compare {ty} with {bt}", bound.span)
        return replace(e, operand=operand, low=low, high=high), t.BOOL

    def visit_Binary(self, e: n.Binary) -> tuple[n.Expr, t.Type]:
        left, lt = self.expr_or_enum(e.left, e.right)
        right, rt = self.expr_or_enum(e.right, e.left, lt)
        new = replace(e, left=left, right=right)
        op = e.op
        if op in ("+", "-", "*", "/"):
            return new, self._arith(e, lt, rt)
        if op in ("==", "!=", "<", "<=", ">", ">="):
            if not t.comparable(lt, rt):
                self.error("type-mismatch", f"cannot compare {lt} with {rt}", e.span)
            elif lt.kind == "enum" and isinstance(right, n.String):
                self._check_member(right, lt)
            elif rt.kind == "enum" and isinstance(left, n.String):
                self._check_member(left, rt)
            if op not in ("==", "!=") and (lt.kind in ("bool", "set") or rt.kind in ("bool",)):
                self.error("type-mismatch", f"'{op}' needs numbers, times or text", e.span)
            return new, t.BOOL
        if op in ("in", "not in"):
            if rt.kind not in ("list", "set", "any", "string"):
                self.error("type-mismatch", f"'{op}' needs a list or set on the right", e.span)
            if isinstance(right, n.ListLit) and lt.kind == "enum":
                for item in right.items:
                    if isinstance(item, n.String):
                        self._check_member(item, lt)
            return new, t.BOOL
        # starts with, ends with, contains, matches
        if op == "contains" and lt.kind == "set":
            return new, t.BOOL
        if not lt.is_text or not rt.is_text:
            self.error("type-mismatch", f"'{op}' needs text on both sides", e.span)
        if op == "matches" and isinstance(right, n.String):
            import re

            try:
                re.compile(right.value)
            except re.error as exc:
                self.error("bad-regex", f"invalid regular expression: {exc}", right.span)
        return new, t.BOOL

    def expr_or_enum(
        self, e: n.Expr, other: n.Expr, other_type: t.Type | None = None
    ) -> tuple[n.Expr, t.Type]:
        """A bare name compared with an enum value is that member, as a string."""
        if isinstance(e, n.Ref) and len(e.parts) == 1 and not self._is_known(e.parts[0]):
            if other_type is None:
                # Peek at the other side without reporting its errors twice.
                saved = len(self.diags)
                _, other_type = self.expr(other)
                del self.diags[saved:]
            if other_type.kind == "enum":
                return n.String(e.span, e.parts[0]), t.STRING
        if isinstance(e, n.ListLit) and other_type is None:
            saved = len(self.diags)
            _, other_type = self.expr(other)
            del self.diags[saved:]
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
        return (
            name in self.out.segments
            or name in self.out.models
            or (self.where == "formula" and name in FORMULA_NAMES)
        )

    def _check_member(self, lit: n.String, ty: t.Type) -> None:
        if lit.value not in ty.members:
            hint = did_you_mean(lit.value, ty.members)
            self.error("unknown-member", f"'{lit.value}' is not one of {ty}", lit.span, hint)

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

    def run(self) -> CheckedRuleset:
        for check in CHECKS:
            check(self)
        errors = [d for d in self.diags if d.severity == "error"]
        warnings = [d for d in self.diags if d.severity == "warning"]
        if errors:
            raise RulesError(sort_and_cap(errors), self.out.sources)
        self.out.warnings = sort_and_cap(warnings)
        return self.out


def _walk_rules(rules: tuple[n.Rule, ...]) -> Iterator[n.Rule]:
    for rule in rules:
        yield rule
        if isinstance(rule, n.IfBlock):
            yield from _walk_rules(rule.then)
            yield from _walk_rules(rule.orelse)


#: The checks, in the order they run. Each collects diagnostics; none stops the others.
CHECKS: tuple[Callable[[_Checker], None], ...] = (
    _Checker.declarations,
    _Checker.segments,
    _Checker.cycles,
    _Checker.models,
    _Checker.rules,
    _Checker.bandits,
    _Checker.arbitration,
    _Checker.splits,
    _Checker.actions,
    _Checker.unused,
    _Checker.shadowed,
    _Checker.scenarios,
)


def check(ruleset: n.Ruleset, sources: dict[str, str] | None = None) -> CheckedRuleset:
    """Check a parsed ruleset. Raises `RulesError` with every error found; keeps warnings."""
    return _Checker(ruleset, sources or {ruleset.span.file: ruleset.source}).run()

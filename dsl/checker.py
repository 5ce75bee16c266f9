"""Parsed AST → checked ruleset: names, types, cycles, reachability, scenarios.

The checker runs an ordered list of named checks (`CHECKS`) over one
`Ruleset`, collecting every diagnostic instead of stopping at the first;
errors are sorted by place and capped (`dsl.errors.MAX_DIAGNOSTICS`).
`_Checker` is one pass with three parts, in this order below: the checks of
declarations and rules; the typing of expressions, which resolves names,
infers types, records which declarations are used and rewrites what parsing
cannot know (a bare name compared with an enum field, `context.channel == web`,
becomes the string "web"); and the walk of the rule tree with what is known on
each path, for rules and actions that add nothing (its "can this ever be true"
reasoning is `dsl.reachability`). Scenario checks are `dsl.scenario_check`.
Every code it emits is listed in `dsl.codes.CODES`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, replace
from typing import Any

from arbiter.dsl import nodes as n
from arbiter.dsl import reserved
from arbiter.dsl import types as t
from arbiter.dsl.checked import CheckedRuleset
from arbiter.dsl.codes import CODES
from arbiter.dsl.errors import MAX_DIAGNOSTICS, Diagnostic, RulesError, did_you_mean, sort_and_cap
from arbiter.dsl.reachability import Fact, Reasoner, always_true
from arbiter.dsl.scenario_check import Locator, check_scenarios

#: Names the arbitration formula may use besides models, profile and context.
FORMULA_NAMES = {"value": t.NUMBER, "weight": t.NUMBER, "priority": t.NUMBER}

#: Where an expression is: decides which names it may use.
Place = str  # condition, formula, feature, model_input, model_input_action


def _is_literal(e: n.Expr) -> bool:
    return isinstance(e, n.LITERALS)


EXPLORATIONS = ("epsilon", "softmax", "squarecb")
#: Names a declaration may not take: they mean something else in expressions.
RESERVED = reserved.RESERVED | frozenset(FORMULA_NAMES)

#: The first words of the built-in action properties: no custom attribute may take one.
_PROPERTY_HEADS = frozenset(
    {"value", "channels", "cap", "requires", "valid", "tags", "suppress", "payload"}
)

#: The built-in action properties as written, for "did you mean" on a misspelled one.
PROPERTY_WORDS = (
    "value", "channels", "cap", "requires consent", "valid", "tags", "suppress after", "payload",
)  # fmt: skip

__all__ = ["CHECKS", "EXPLORATIONS", "FORMULA_NAMES", "CheckedRuleset", "check"]


@dataclass(frozen=True, slots=True)
class _PathFact:
    """A fact that holds inside a block, and the `if` it comes from (for messages)."""

    fact: Fact
    span: n.Span


class _Checker:
    """The checks over one ruleset, collecting diagnostics: names, types, cycles, paths.

    One class, one pass: the checks (`CHECKS`), the typing of every expression
    (dispatched on node class, `visit_<ClassName>`), and the path-aware rule
    warnings share the ruleset being checked and the diagnostics collected.
    """

    def __init__(self, ruleset: n.Ruleset, sources: dict[str, str]) -> None:
        self.rs = ruleset
        self.out = CheckedRuleset(ruleset.name, sources)
        self.diags: list[Diagnostic] = []
        self.used: set[str] = set()  # "segment:x", "model:x", "field:profile.x", "event:x", …
        self.segment_deps: dict[str, set[str]] = {}
        self.where = "condition"
        self.current_segment: str | None = None
        self._undeclared_events: set[str] = set()
        # Filled by `rules`: per action, the offering rules that can fire, with their path facts.
        self._offers: dict[str, list[list[Fact]]] = {}
        self._always_suppressed: dict[str, n.Span] = {}
        self._reasoner = Reasoner({})

    def error(self, code: str, message: str, span: n.Span, hint: str | None = None) -> None:
        assert CODES[code].severity == "error", code
        self.diags.append(Diagnostic(code, message, span, "error", hint))

    def warn(self, code: str, message: str, span: n.Span, hint: str | None = None) -> None:
        assert CODES[code].severity == "warning", code
        self.diags.append(Diagnostic(code, message, span, "warning", hint))

    def _emit(self, code: str, message: str, span: n.Span, hint: str | None) -> None:
        if CODES[code].severity == "error":
            self.error(code, message, span, hint)
        else:
            self.warn(code, message, span, hint)

    # ------------------------------------------------------------ declarations

    def declarations(self) -> None:
        """Collect schema, events and named declarations; report duplicates."""
        seen: dict[str, n.Span] = {}

        def claim(kind: str, name: str, span: n.Span) -> bool:
            if name in RESERVED:
                where = self._locator(span).find(name)
                self.error("reserved-name", f"{reserved.reason(name)}; pick another", where)
            if name in seen:
                message = f"{kind} '{name}' is already defined at {seen[name]}"
                self.error("duplicate-name", message, span)
                return False
            seen[name] = span
            return True

        for decl in self.rs.decls:
            if isinstance(decl, n.SchemaDecl):
                target = self.out.profile if decl.kind == "profile" else self.out.context
                for f in decl.fields:
                    self._declare_field(target, f, decl.kind)
            elif isinstance(decl, n.PolicyDecl):
                self.out.policies += decl.limits
                self.out.fatigue_policies += decl.fatigue
            elif isinstance(decl, n.AttributesDecl):
                for f in decl.fields:
                    if f.name in _PROPERTY_HEADS:
                        # `value 5` inside an action would always be the built-in property.
                        message = f"'{f.name}' is a built-in action property; pick another"
                        self.error("reserved-name", message, f.span)
                        continue
                    self._declare_field(self.out.attributes, f, "action attribute")
            elif isinstance(decl, n.EventDecl):
                if decl.name in self.out.events:
                    self.error(
                        "duplicate-name", f"event '{decl.name}' is declared twice", decl.span
                    )
                    continue
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
            elif isinstance(decl, n.TriggerDecl):
                if claim("trigger", decl.name, decl.span):
                    self.out.triggers[decl.name] = decl
            else:
                self._singleton(decl)
        self.out.scenarios = tuple(self.rs.of(n.ScenarioDecl))

    def _singleton(self, decl: n.Decl) -> None:
        """`arbitrate`, `holdout` and `default` may each appear once."""
        if isinstance(decl, n.ArbitrateDecl):
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

    def _declare_field(self, target: dict[str, t.Type], f: n.Field, owner: str) -> None:
        if f.name in target:
            self.error("duplicate-field", f"{owner} field '{f.name}' is declared twice", f.span)
            return
        if f.type.kind == "unknown":
            names = ["number", "int", "string", "bool", "time", "set<string>"]
            hint = did_you_mean(f.type.text, names)
            self.error("unknown-type", f"unknown type '{f.type.text}'", f.type.span, hint)
            target[f.name] = t.ANY  # reported once here, not again at every use
            return
        target[f.name] = t.from_decl(f.type)

    # ------------------------------------------------------------ segments, models

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

    # ------------------------------------------------------------ rules

    def rules(self) -> None:
        """Rule conditions are booleans; offered actions exist; unreachable rules are flagged."""
        self.out.rules = tuple(x for r in self.rs.of(n.Rule) for x in self._rules_of(r))
        self.walk_rules()

    def _rules_of(self, rule: n.Rule) -> tuple[n.Rule, ...]:
        """A rule, checked; `suppress [a, b]` and `suppress tag t` become one rule per action."""
        if isinstance(rule, n.SuppressRule) and (rule.targets or rule.tag is not None):
            if rule.tag is not None:
                names = tuple(a for a, d in self.out.actions.items() if rule.tag in d.tags)
                if not names:
                    tags = {t for d in self.out.actions.values() for t in d.tags}
                    hint = did_you_mean(rule.tag, tags)
                    message = f"no action has the tag '{rule.tag}'"
                    self.error("unknown-name", message, rule.action_span, hint)
            else:
                names = rule.targets
            where = self._locator(rule.span)
            return tuple(
                self._rule(
                    replace(
                        rule,
                        action=name,
                        action_span=rule.action_span if rule.tag else where.find(name),
                        targets=(),
                        tag=None,
                    )
                )
                for name in names
            )
        return (self._rule(rule),)

    def _rule(self, rule: n.Rule) -> n.Rule:
        if isinstance(rule, n.WhenRule):
            self._use_action(rule.action, rule.action_span)
            if rule.weight < 0:
                self.error("bad-weight", "a rule's weight must not be negative", rule.span)
            return replace(rule, condition=self.condition(rule.condition))
        if isinstance(rule, n.SuppressRule):
            self._use_action(rule.action, rule.action_span)
            return replace(rule, condition=self.condition(rule.condition))
        assert isinstance(rule, n.IfBlock)
        return replace(
            rule,
            condition=self.condition(rule.condition),
            then=tuple(x for r in rule.then for x in self._rules_of(r)),
            orelse=tuple(x for r in rule.orelse for x in self._rules_of(r)),
        )

    def _use_action(self, name: str, span: n.Span) -> None:
        self.used.add(f"action:{name}")
        if name not in self.out.actions:
            hint = did_you_mean(name, self.out.actions)
            self.error("unknown-action", f"no action named '{name}'", span, hint)

    # ------------------------------------------------------------ bandits, arbitration

    def bandits(self) -> None:
        """Bandit arms are actions; exploration kind and rate are valid; features typed."""
        for name, decl in list(self.out.bandits.items()):
            for arm in decl.arms:
                if arm not in self.out.actions:
                    hint = did_you_mean(arm, self.out.actions)
                    where = self._locator(decl.span).find("over", arm)
                    self.error("unknown-action", f"no action named '{arm}'", where, hint)
            if len(set(decl.arms)) < 2:
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
            if decl.reward is not None:
                self._check_reward(decl)
            self.where = "feature"
            features = tuple(self.expr(e)[0] for e in decl.features)
            self.where = "condition"
            self.out.bandits[name] = replace(decl, features=features)

    def _check_reward(self, decl: n.BanditDecl) -> None:
        assert decl.reward is not None
        self._check_outcome(decl.reward, decl.reward_within, decl.reward_value, decl.span)

    def _check_outcome(
        self, event: str, within: float | None, value: str | None, span: n.Span
    ) -> None:
        """A reward or goal: the event exists, its window is positive, its value a number."""
        self._check_event(event, span)
        if within is not None and within <= 0:
            self.error("bad-window", "the window must be longer than zero", span)
        fields = self.out.events.get(event)
        if value is None or fields is None:
            return
        if value not in fields:
            hint = did_you_mean(value, fields)
            self.error("unknown-field", f"event {event} has no field '{value}'", span, hint)
        elif not fields[value].is_numeric:
            message = f"the value needs a number property, not {fields[value]}"
            self.error("type-mismatch", message, span)

    def triggers(self) -> None:
        """A trigger's events exist, its delay is positive, its channel one context.channel takes."""
        channel = self.out.context.get("channel")
        for decl in self.out.triggers.values():
            self._check_event(decl.on, decl.span)
            if decl.unless is not None:
                self._check_event(decl.unless, decl.span)
            if decl.after_seconds <= 0:
                self.error("bad-window", "a trigger's delay must be longer than zero", decl.span)
            if (
                channel is not None
                and channel.kind == "enum"
                and decl.channel not in channel.members
            ):
                hint = did_you_mean(decl.channel, channel.members)
                message = f"channel '{decl.channel}' is not one of context.channel's values"
                self.error("unknown-channel", message, decl.span, hint)

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
        splits: list[n.HoldoutDecl | n.ExperimentDecl] = list(self.out.experiments.values())
        if self.out.holdout is not None:
            splits.append(self.out.holdout)
        for split in splits:
            if split.goal is not None:
                g = split.goal
                self._check_outcome(g.event, g.within, g.value, split.span)
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

    # ------------------------------------------------------------ actions

    def actions(self) -> None:
        """Channels, caps and fatigue are valid; warn on actions never or never really offered."""
        if self.out.default is not None:
            span = next(d.span for d in self.rs.of(n.DefaultDecl))
            self._use_action(self.out.default, span)
        channel = self.out.context.get("channel")
        # Computed once: per action, it made checking quadratic in the number of rules.
        offered = self._offered_names()
        for name, action in self.out.actions.items():
            if channel is not None and channel.kind == "enum":
                for ch in action.channels:
                    if ch not in channel.members:
                        hint = did_you_mean(ch, channel.members)
                        message = f"channel '{ch}' is not one of context.channel's values"
                        where = self._locator(action.span).find("channels", ch)
                        self.error("unknown-channel", message, where, hint)
            self._limits(action)
            self._attributes(action)
            if name == self.out.default:
                continue
            if name not in offered:
                in_bandit = [b for b, d in self.out.bandits.items() if name in d.arms]
                message = f"action '{name}' is never offered by any rule"
                if in_bandit:
                    message = (
                        f"action '{name}' is an arm of bandit '{in_bandit[0]}' but no rule "
                        "offers it; a bandit only chooses among offered actions"
                    )
                self.warn("unused-action", message, action.name_span)
                continue
            self._offerable(action)
        self._policies()
        self._fatigue_policies()

    def _offered_names(self) -> set[str]:
        return {r.action for r in _walk_rules(self.out.rules) if isinstance(r, n.WhenRule)}

    def _locator(self, span: n.Span) -> Locator:
        return Locator(self.out.sources.get(span.file, ""), span)

    def _limits(self, action: n.ActionDecl) -> None:
        # A Locator splits the whole source: build one only when there is an error to place.
        loc = self._locator
        if action.cap is not None and (action.cap.count < 1 or action.cap.window_seconds == 0):
            self.error(
                "bad-cap",
                f"'cap {action.cap.text}' lets no contact through",
                loc(action.span).find("cap"),
                hint="a cap needs at least 1 contact over a window longer than zero, "
                "e.g. cap 1 per 7d",
            )
        fatigue = action.fatigue
        if fatigue is not None and (
            fatigue.rejections < 1 or fatigue.window_seconds == 0 or fatigue.period_seconds == 0
        ):
            self.error(
                "bad-fatigue",
                "'suppress after' needs at least 1 rejection and windows longer than zero",
                loc(action.span).find("suppress"),
            )

    def _policies(self) -> None:
        """Each policy line names a channel context.channel can take or a tag some action has,
        once, with a limit that lets at least one contact through."""
        seen: dict[tuple[str, str], n.Span] = {}
        for limit in self.out.policies:
            key = (limit.scope, limit.name)
            if key in seen:
                message = f"the contact policy for {limit.scope} {limit.name} is given twice"
                self.error("duplicate-name", message, limit.span)
            seen.setdefault(key, limit.span)
            self.check_contact_target(limit.scope, limit.name, limit.span)
            if limit.count < 1 or limit.window_seconds == 0:
                self.error(
                    "bad-cap",
                    f"'{limit.scope} {limit.name}: {limit.text}' lets no contact through",
                    limit.span,
                    hint="a limit needs at least 1 contact over a window longer than zero",
                )

    def _fatigue_policies(self) -> None:
        seen: dict[tuple[str, str], n.Span] = {}
        for f in self.out.fatigue_policies:
            key = (f.scope, f.name)
            if key in seen:
                message = f"the fatigue policy for {f.scope} {f.name} is given twice"
                self.error("duplicate-name", message, f.span)
            seen.setdefault(key, f.span)
            self.check_contact_target(f.scope, f.name, f.span)
            if f.rejections < 1 or f.window_seconds == 0 or f.period_seconds == 0:
                self.error(
                    "bad-fatigue",
                    "'suppress after' needs at least 1 rejection and windows longer than zero",
                    f.span,
                )

    def _attributes(self, action: n.ActionDecl) -> None:
        """Every custom property is a declared attribute, with a value of its declared type."""
        declared = self.out.attributes
        for key, value in action.attributes.items():
            span = action.prop_spans.get(key, action.span)
            ty = declared.get(key)
            if ty is None:
                self._unknown_property(action, key, span)
            elif not _fits(value, ty):
                shown = json.dumps(value)
                self.error(
                    "literal-type",
                    f"action attribute '{key}' is declared {ty}, but {shown} is not",
                    span,
                )

    def _unknown_property(self, action: n.ActionDecl, key: str, span: n.Span) -> None:
        words = [*PROPERTY_WORDS, *self.out.attributes]
        hint = did_you_mean(key.replace("_", " "), words) or did_you_mean(key, words)
        message = f"'{key}' is not an action property"
        if key == "per":
            message = "a cap counts this action's contacts on every channel together"
            hint = (
                "write 'cap N per W' alone; to limit contacts per channel across all "
                "offers, declare a contact policy (see docs/language.md#contact-policies)"
            )
        elif hint is None:
            hint = f"declare custom attributes once: action attributes {{ {key}: number }}"
            if self.out.attributes:
                hint += f" (declared so far: {', '.join(self.out.attributes)})"
        self.error("unknown-property", message, span, hint)

    # ------------------------------------------------------------ unused, scenarios

    def unused(self) -> None:
        """Warn on declarations nothing reads."""
        for name, seg in self.out.segments.items():
            if f"segment:{name}" not in self.used:
                self.warn("unused-segment", f"segment '{name}' is never used", seg.span)
        for name, model in self.out.models.items():
            if f"model:{name}" not in self.used:
                self.warn("unused-model", f"model '{name}' is never used", model.span)
        for decl in self.rs.of(n.EventDecl):
            if f"event:{decl.name}" not in self.used and decl.name in self.out.events:
                message = f"event '{decl.name}' is declared but no rule reads it"
                self.warn("unused-event", message, decl.span)
        for name, exp in self.out.experiments.items():
            if f"experiment:{name}" not in self.used:
                message = f"experiment '{name}' is never used (no rule reads experiment.{name})"
                self.warn("unused-experiment", message, exp.span)
        implicit = set()
        if any(a.channels for a in self.out.actions.values()):
            implicit.add("context.channel")  # arbitration matches action channels against it
        if any(a.consent for a in self.out.actions.values()):
            implicit.add("profile.consents")  # `requires consent` reads it
        for decl in self.rs.of(n.SchemaDecl):
            for f in decl.fields:
                dotted = f"{decl.kind}.{f.name}"
                if f"field:{dotted}" not in self.used and dotted not in implicit:
                    self.warn("unused-field", f"{dotted} is declared but never used", f.span)

    def scenarios(self) -> None:
        """Scenario literals fit the declarations; expected actions exist."""
        check_scenarios(self.out, self._emit)

    # ------------------------------------------------------------ running

    def run(self) -> CheckedRuleset:
        for check in CHECKS:
            check(self)
        errors = [d for d in self.diags if d.severity == "error"]
        warnings = [d for d in self.diags if d.severity == "warning"]
        if errors:
            raise RulesError(_capped(errors), self.out.sources)
        self.out.warnings = sort_and_cap(_dedupe(warnings))
        return self.out

    # ------------------------------------------------------------ expressions: entry points

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
        if e.name == "max" and len(e.args) == 1 and isinstance(e.args[0], n.Aggregate):
            inner = e.args[0]
            if inner.by is not None:
                # The largest count of any one value: "the same category 3+ times".
                self._check_event(inner.event, inner.span)
                if inner.window_seconds == 0:
                    self.error("bad-window", "the window must be longer than zero", inner.span)
                self._grouped(inner)
                if inner.fn != "count":
                    return e, t.NUMBER
                top = replace(inner, span=e.span, fn="max_count", prop=inner.by, by=None)
                return top, t.NUMBER
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
        if e.window_seconds == 0:
            self.error("bad-window", "the window must be longer than zero", e.span)
        if e.fn == "count" and e.by is not None:
            shown = f"count({e.event} within {e.window_text} by {e.by})"
            self.error(
                "type-mismatch",
                f"{shown} is one count per {e.by}, not a number",
                e.span,
                f"compare the largest: max({shown}) >= 3",
            )
            return e, t.NUMBER
        if e.by is not None or e.fn == "distinct":
            self._grouped(e)
            return e, t.NUMBER
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
        return e, t.NUMBER

    def _grouped(self, e: n.Aggregate) -> None:
        """`count(e within W by p)` (a count per value of p) and `distinct(e.p within W)`."""
        prop = e.by if e.fn == "count" else e.prop
        if e.fn == "distinct" and e.by is not None:
            self.error(
                "type-mismatch",
                "distinct() counts the values of one property; drop the 'by'",
                e.span,
                f"write distinct({e.event}.{e.by} within {e.window_text})",
            )
            return
        if e.fn not in ("count", "distinct"):
            self.error(
                "type-mismatch",
                f"only count() can be grouped 'by' a property, not {e.fn}()",
                e.span,
                f"write max(count({e.event} within {e.window_text} by {e.by}))",
            )
            return
        if e.fn == "count" and e.prop is not None:
            self.error("type-mismatch", "count() counts events; drop the property", e.span)
        if prop is None:
            self.error(
                "missing-property",
                f"distinct() needs an event property, e.g. distinct({e.event}.category"
                f" within {e.window_text})",
                e.span,
            )
            return
        if e.event in self.out.events:
            fields = self.out.events[e.event]
            if prop not in fields:
                hint = did_you_mean(prop, fields)
                self.error("unknown-field", f"event {e.event} has no field '{prop}'", e.span, hint)
            elif fields[prop].kind not in ("string", "enum"):
                texts = [f for f, ty in fields.items() if ty.kind in ("string", "enum")]
                self.error(
                    "type-mismatch",
                    f"{e.event}.{prop} is a {fields[prop]}: events are grouped by a string"
                    " property",
                    e.span,
                    f"{e.event}'s string properties: {', '.join(texts)}"
                    if texts
                    else f"declare one in the event: event {e.event} {{ <name>: string }}",
                )
        elif not self.out.events:
            # Only a declared string property is grouped when events arrive.
            self.error(
                "unknown-field",
                f"grouping by '{prop}' needs it declared as a string property of {e.event}",
                e.span,
                f"declare it: event {e.event} {{ {prop}: string }}",
            )

    def visit_Contacts(self, e: n.Contacts) -> tuple[n.Expr, t.Type]:
        self.check_contact_target(e.scope, e.name, e.span)
        if e.window_seconds == 0:
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
            return self._month_shift(new, lt, rt), self._arith(e, lt, rt)
        if op in ("==", "!=", "<", "<=", ">", ">="):
            self._month_compared(left, right)
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

    def _month_shift(self, e: n.Binary, lt: t.Type, rt: t.Type) -> n.Binary:
        """A month literal moves a time by calendar months only in `t ± Nmo` and `Nmo + t`
        (the compiler's `f_add_months`); anywhere else in arithmetic it is 30 days, so
        its `months` is cleared and the compiler sees a plain length."""
        shifts = (e.op in ("+", "-") and lt.kind == "time" and rt.kind == "duration") or (
            e.op == "+" and lt.kind == "duration" and rt.kind == "time"
        )
        if shifts:
            return e
        sides = []
        for side in (e.left, e.right):
            if isinstance(side, n.Duration) and side.months:
                self.warn(
                    "month-as-days",
                    f"'{side.text}' in arithmetic on lengths is {side.months * 30} days,"
                    " not a calendar month",
                    side.span,
                    hint="add or take months from a time for calendar months: now() - 1mo",
                )
                side = replace(side, months=0)
            sides.append(side)
        return replace(e, left=sides[0], right=sides[1])

    def _month_compared(self, left: n.Expr, right: n.Expr) -> None:
        """`now() - t > 1mo` compares lengths: the month is 30 days there; say so."""
        for side in (left, right):
            if isinstance(side, n.Duration) and side.months:
                self.warn(
                    "month-as-days",
                    f"'{side.text}' compared with a length is {side.months * 30} days,"
                    " not a calendar month",
                    side.span,
                    hint="compare times for calendar months: profile.t < now() - 1mo",
                )

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

    # ------------------------------------------------------------ rule paths

    def walk_rules(self) -> None:
        """Warn on rules that can never fire or repeat others; note what each path offers."""
        self._reasoner = Reasoner({name: s.expr for name, s in self.out.segments.items()})
        self._reach(self.out.rules, [], {}, top=True)

    def _reach(
        self,
        rules: tuple[n.Rule, ...],
        path: list[_PathFact],
        seen: dict[tuple[Any, ...], n.WhenRule],
        top: bool,
    ) -> None:
        """Walk one block with the facts known on its path; warn on what can never happen."""
        seen = dict(seen)  # rules of an outer block shadow those of an inner one, not back
        for rule in rules:
            if isinstance(rule, n.IfBlock):
                if self._unreachable(rule, rule.condition, path, "this block"):
                    continue
                inner = [*path, _PathFact(Fact(rule.condition), rule.span)]
                self._reach(rule.then, inner, seen, top=False)
                if rule.orelse:
                    other = [*path, _PathFact(Fact(rule.condition, not_true=True), rule.span)]
                    if not self._reasoner.satisfiable([p.fact for p in other]):
                        first = rule.orelse[0]
                        self.warn("unreachable-rule", "this 'else' can never run", first.span)
                    else:
                        self._reach(rule.orelse, other, seen, top=False)
                continue
            what = "this rule" if isinstance(rule, n.WhenRule) else "this suppress rule"
            cond = rule.condition if isinstance(rule, n.WhenRule | n.SuppressRule) else None
            assert cond is not None
            if self._unreachable(rule, cond, path, what):
                continue
            if isinstance(rule, n.SuppressRule):
                if top and always_true(cond):
                    self._always_suppressed.setdefault(rule.action, rule.span)
                continue
            assert isinstance(rule, n.WhenRule)
            self._shadowed(rule, seen)
            facts = [p.fact for p in path] + [Fact(rule.condition)]
            self._offers.setdefault(rule.action, []).append(facts)

    def _unreachable(self, rule: n.Rule, cond: n.Expr, path: list[_PathFact], what: str) -> bool:
        own = Fact(cond)
        if self._reasoner.satisfiable([p.fact for p in path], [own]):
            return False  # the usual case: one test, whatever the depth
        if not path or not self._reasoner.satisfiable([], [own]):
            if always_true(n.Unary(cond.span, "not", cond)):
                why = "its condition is always false"
            else:
                why = "its conditions contradict each other"
            self.warn("unreachable-rule", f"{what} can never run: {why}", rule.span)
            return True
        # Name the innermost enclosing `if` that, with those inside it, rules the rule out.
        for j in range(len(path) - 1, -1, -1):
            if not self._reasoner.satisfiable([p.fact for p in path[j:]], [own]):
                kind = "the enclosing 'if'"
                if path[j].fact.not_true:
                    kind = "the 'if' whose 'else' it is in"
                message = (
                    f"{what} can never run: its condition contradicts {kind} at {path[j].span}"
                )
                self.warn("unreachable-rule", message, rule.span)
                return True
        return False  # pragma: no cover - the whole path contradicts, so some suffix does

    def _shadowed(self, rule: n.WhenRule, seen: dict[tuple[Any, ...], n.WhenRule]) -> None:
        """A `when` identical to an earlier one on its path adds nothing, unless it ranks higher."""
        key = (rule.condition, rule.action)
        earlier = seen.get(key)
        if earlier is None or (rule.priority, rule.weight) > (earlier.priority, earlier.weight):
            seen[key] = rule
            return
        self.warn(
            "shadowed-rule",
            f"same condition and action as the rule at {earlier.span}, which already fires",
            rule.span,
            hint="remove it, or give it a higher priority or weight",
        )

    def _offerable(self, action: n.ActionDecl) -> None:
        """Warn when every rule offering the action is blocked (suppressed, wrong channel, dead)."""
        name = action.name
        if name in self._always_suppressed:
            where = self._always_suppressed[name]
            self.warn(
                "unofferable-action",
                f"action '{name}' is always suppressed (by the rule at {where})",
                action.name_span,
            )
            return
        paths = self._offers.get(name, [])
        if not paths:
            message = f"no rule that offers action '{name}' can ever fire"
            self.warn("unofferable-action", message, action.name_span)
            return
        if action.channels and "channel" in self.out.context:
            channel = n.Ref(n.NO_SPAN, ("context", "channel"))
            items = tuple(n.String(n.NO_SPAN, c) for c in action.channels)
            wrong = n.Binary(n.NO_SPAN, "not in", channel, n.ListLit(n.NO_SPAN, items))
            # Arbitration drops an action whose channels exclude the request's channel.
            blocked = Fact(wrong, not_true=True)
            if not any(self._reasoner.satisfiable(p[:-1], [p[-1], blocked]) for p in paths):
                self.warn(
                    "unofferable-action",
                    f"action '{name}' is only for channels [{', '.join(action.channels)}], "
                    "but every rule that offers it requires another channel",
                    action.name_span,
                )


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


def _fits(value: object, ty: t.Type) -> bool:
    """Whether an attribute's literal value is of its declared type."""
    if ty.kind == "any":
        return True
    if ty.kind == "number":
        return isinstance(value, int | float) and not isinstance(value, bool)
    if ty.kind == "bool":
        return isinstance(value, bool)
    if ty.kind == "enum":
        return isinstance(value, str) and value in ty.members
    if ty.kind == "string":
        return isinstance(value, str)
    if ty.kind == "set":
        return isinstance(value, list) and all(isinstance(v, str) for v in value)
    return False


def _dedupe(diags: list[Diagnostic]) -> list[Diagnostic]:
    # A peeked-at expression may be visited twice; report each finding once.
    return list(dict.fromkeys(diags))


def _capped(errors: list[Diagnostic]) -> list[Diagnostic]:
    """Errors in order, at most `MAX_DIAGNOSTICS`, the last saying how many were left out."""
    ordered = sort_and_cap(_dedupe(errors))
    total = len(_dedupe(errors))
    if total <= MAX_DIAGNOSTICS:
        return ordered
    kept = ordered[: MAX_DIAGNOSTICS - 1]
    hidden = total - len(kept)
    last = kept[-1].span
    note = Diagnostic("too-many-errors", f"{hidden} more errors not shown", last)
    return [*kept, note]


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
    _Checker.triggers,
    _Checker.actions,
    _Checker.unused,
    _Checker.scenarios,
)


def check(ruleset: n.Ruleset, sources: dict[str, str] | None = None) -> CheckedRuleset:
    """Check a parsed ruleset. Raises `RulesError` with every error found; keeps warnings."""
    return _Checker(ruleset, sources or {ruleset.span.file: ruleset.source}).run()

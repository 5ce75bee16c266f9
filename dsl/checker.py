"""Parsed AST → checked ruleset: names, types, cycles, reachability, scenarios.

The checker runs an ordered list of named checks (`CHECKS`) over one
`Ruleset`, collecting every diagnostic instead of stopping at the first;
errors are sorted by place and capped (`dsl.errors.MAX_DIAGNOSTICS`).
Expression typing lives in `dsl.expressions`, the walk of the rule tree for
rules and actions that add nothing in `dsl.rule_paths` (its "can this ever
be true" reasoning in `dsl.reachability`), scenario checks in
`dsl.scenario_check`.
Every code it emits is listed in `dsl.codes.CODES`.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import replace

from arbiter.dsl import nodes as n
from arbiter.dsl import reserved
from arbiter.dsl import types as t
from arbiter.dsl.checked import CheckedRuleset
from arbiter.dsl.codes import CODES
from arbiter.dsl.errors import MAX_DIAGNOSTICS, Diagnostic, RulesError, did_you_mean, sort_and_cap
from arbiter.dsl.expressions import FORMULA_NAMES, ExprChecker
from arbiter.dsl.reachability import Fact, Reasoner
from arbiter.dsl.rule_paths import RulePaths
from arbiter.dsl.scenario_check import Locator, check_scenarios

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


class _Checker(ExprChecker, RulePaths):
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
        if action.cap is not None and (action.cap.count < 1 or action.cap.window_seconds <= 0):
            self.error(
                "bad-cap",
                f"'cap {action.cap.text}' lets no contact through",
                loc(action.span).find("cap"),
                hint="a cap needs at least 1 contact over a window longer than zero, "
                "e.g. cap 1 per 7d",
            )
        fatigue = action.fatigue
        if fatigue is not None and (
            fatigue.rejections < 1 or fatigue.window_seconds <= 0 or fatigue.period_seconds <= 0
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
            if limit.count < 1 or limit.window_seconds <= 0:
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
            if f.rejections < 1 or f.window_seconds <= 0 or f.period_seconds <= 0:
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

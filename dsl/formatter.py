"""AST → canonical `.rules` text, the `arbiter fmt` printer.

    text = format_ruleset(dsl.parse(source, "retail.rules"))

The canonical form: two-space indentation; declarations in source order;
blank lines between declarations kept where the source had them (several
collapse to one); expressions with single spaces and only the parentheses
precedence needs; action properties in a fixed order; lines wrapped at
`and` / `or` and at list commas past 100 characters.

Comments are kept. The parser drops them, so they are found again in the
source text by line (`dsl.comments`) and attached to the declaration, field,
rule or action property on that line; a comment on its own line stays with
what follows it. A comment inside a multi-line statement that has no such
anchor (the middle of a long condition) moves to the end of the statement.

Formatting never changes meaning: the formatted text parses to the same AST,
spans aside, and formatting twice gives the same text (both tested). Give it
a ruleset parsed from one file: `dsl.load` splices included files in, and
their declarations would be printed into the including file.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

from arbiter.dsl import nodes as n
from arbiter.dsl.comments import (
    Comments,
    comment_start,
    property_lines,
    source_lines,
    with_trailing,
)
from arbiter.dsl.printing import (
    INDENT,
    WIDTH,
    condition_lines,
    date,
    duration,
    expr,
    json_value,
    key,
    list_lines,
    moment,
    number,
    percent,
    string,
)

#: What `_block` lays out one per line: fields and contact-policy limits.
_Item = TypeVar("_Item", n.Field, n.PolicyLimit | n.PolicyFatigue)

__all__ = ["WIDTH", "duration", "expr", "format_ruleset", "number", "percent"]


class _Printer:
    def __init__(self, ruleset: n.Ruleset) -> None:
        self.rs = ruleset
        self.file = ruleset.span.file
        self.comments = Comments.scan(ruleset.source)
        self.enum_fields: dict[str, set[str]] = {"profile": set(), "context": set()}
        for decl in ruleset.of(n.SchemaDecl):
            for f in decl.fields:
                if f.type.kind == "enum":
                    self.enum_fields[decl.kind].add(f.name)

    def run(self) -> str:
        header_line = self.rs.span.line or 1
        out = self.comments.gap(1, header_line - 1, "", at_start=True)
        trailing = self.comments.take_trailing(header_line, header_line)
        out.append(with_trailing(f"ruleset {self.rs.name}", trailing))
        previous_end = self.rs.span.end_line or header_line
        for decl in self.rs.decls:
            if decl.span.file != self.file:
                continue
            out += self.comments.gap(previous_end + 1, decl.span.line - 1, "", at_start=False)
            out += self.decl(decl)
            previous_end = decl.span.end_line
        out += self.comments.gap(previous_end + 1, self.comments.last_line, "", at_start=False)
        # A comment no declaration claimed is kept rather than lost, at the end.
        leftovers = sorted({**self.comments.alone, **self.comments.trailing}.items())
        out += [comment for _, comment in leftovers]
        while out and out[-1] == "":
            out.pop()
        return "\n".join(out) + "\n"

    def _leaf(self, lines: list[str], span: n.Span, indent: str = "") -> list[str]:
        """A statement without inner anchors: own-line comments inside it go before it,
        trailing ones after its last line."""
        before = [indent + c for c in self.comments.take_alone(span.line + 1, span.end_line)]
        trailing = self.comments.take_trailing(span.line, span.end_line)
        lines = list(lines)
        lines[-1] = with_trailing(lines[-1], trailing)
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

    def d_AttributesDecl(self, d: n.AttributesDecl) -> list[str]:
        one = "action attributes { " + ", ".join(_field_text(f) for f in d.fields) + " }"
        if len(one) <= WIDTH and not self.comments.inside(d.span):
            return self._leaf([one], d.span)
        return self._block("action attributes {", d.span, d.fields, self._field, INDENT, "")

    def d_PolicyDecl(self, d: n.PolicyDecl) -> list[str]:
        lines: list[n.PolicyLimit | n.PolicyFatigue] = sorted(
            [*d.limits, *d.fatigue], key=lambda p: (p.span.line, p.span.column)
        )
        one = "contact policy { " + ", ".join(_policy_text(p) for p in lines) + " }"
        if len(one) <= WIDTH and not self.comments.inside(d.span):
            return self._leaf([one], d.span)
        return self._block("contact policy {", d.span, lines, self._policy_line, INDENT, "")

    def _policy_line(self, p: n.PolicyLimit | n.PolicyFatigue, indent: str) -> list[str]:
        return self._leaf([indent + _policy_text(p)], p.span, indent)

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
        lines = [head, *list_lines("inputs (", inputs, ")", INDENT)]
        if d.per_action:
            lines.append(INDENT + "per action")
        return self._leaf(lines, d.span)

    def d_SegmentDecl(self, d: n.SegmentDecl) -> list[str]:
        return self._leaf(condition_lines(f"segment {d.name} = ", d.expr, "", ""), d.span)

    def d_ActionDecl(self, d: n.ActionDecl) -> list[str]:
        props = _action_props(d)
        body = ", ".join(text for _, text in props)
        one = f"action {d.name} {{ {body} }}"
        if len(one) <= WIDTH and not self.comments.inside(d.span):
            return self._leaf([one], d.span)
        # One property per line, each with the comment from its source line; a comment
        # on a line of its own goes before the first property that followed it.
        where = property_lines(self.rs.source, d, [prop for prop, _ in props])
        alone = {i: self.comments.alone.pop(i) for i in range(d.span.line + 1, d.span.end_line)
                 if i in self.comments.alone}  # fmt: skip
        head = self.comments.take_trailing(d.span.line, d.span.line)
        out = [with_trailing(f"action {d.name} {{", head)]
        for prop, text in props:
            line = where.get(prop)
            trailing: list[str] = []
            if line is not None:
                for i in sorted(i for i in alone if i < line):
                    out.append(INDENT + alone.pop(i))
                trailing = self.comments.take_trailing(line, line)
            out.append(with_trailing(INDENT + text, trailing))
        out += [INDENT + alone[i] for i in sorted(alone)]
        rest = self.comments.take_trailing(d.span.line + 1, d.span.end_line)
        out.append(with_trailing("}", rest))
        return out

    def d_WhenRule(self, d: n.WhenRule, indent: str = "") -> list[str]:
        return self._leaf(condition_lines("when ", d.condition, _offer(d), indent), d.span, indent)

    def d_SuppressRule(self, d: n.SuppressRule, indent: str = "") -> list[str]:
        target = d.action
        if d.tag is not None:
            target = f"tag {d.tag}"
        elif d.targets:
            target = f"[{', '.join(d.targets)}]"
        head = f"suppress {target} when "
        return self._leaf(condition_lines(head, d.condition, "", indent), d.span, indent)

    def d_IfBlock(self, d: n.IfBlock, indent: str = "", keyword: str = "if") -> list[str]:
        then_start = _then_start(d)
        opening = condition_lines(f"{keyword} ", d.condition, " {", indent)
        opening[-1] = with_trailing(
            opening[-1], self.comments.take_trailing(d.span.line, then_start)
        )
        out = opening
        if not d.orelse:
            out += self._rules(d.then, then_start, d.span.end_line, indent + INDENT)
            return [*out, self._closing(indent, d.span.end_line, d.span.end_line)]
        first = d.orelse[0]
        else_line = self._else_line(d, then_start)
        out += self._rules(d.then, then_start, else_line, indent + INDENT)
        if len(d.orelse) == 1 and isinstance(first, n.IfBlock):
            # `else { if … }` and `else if …` parse alike; the canonical form is `else if`.
            # Comments between `else` and `if` end the then-block.
            out += [
                indent + INDENT + c
                for c in self.comments.take_alone(else_line, first.span.line - 1)
            ]
            trailing = self.comments.take_trailing(else_line, first.span.line - 1)
            nested = self.d_IfBlock(first, indent, keyword="} else if")
            nested[0] = with_trailing(nested[0], trailing)
            # With `else { if … }`, what follows the inner block inside the outer braces.
            after = self.comments.take_alone(first.span.end_line + 1, d.span.end_line)
            nested += [indent + c for c in after]
            nested[-1] = with_trailing(
                nested[-1], self.comments.take_trailing(first.span.end_line + 1, d.span.end_line)
            )
            return out + nested
        head = self.comments.take_trailing(else_line, else_line)
        out.append(with_trailing(indent + "} else {", head))
        out += self._rules(d.orelse, else_line + 1, d.span.end_line, indent + INDENT)
        return [*out, self._closing(indent, d.span.end_line, d.span.end_line)]

    def _closing(self, indent: str, first: int, last: int) -> str:
        return with_trailing(indent + "}", self.comments.take_trailing(first, last))

    def _else_line(self, d: n.IfBlock, then_start: int) -> int:
        """The line of the `else` keyword: after the then-block's rules, before the else's."""
        lines = source_lines(self.rs.source)
        start = d.then[-1].span.end_line if d.then else then_start
        for i in range(start, d.orelse[0].span.line + 1):
            text = lines[i - 1]
            cut = comment_start(text)
            if re.search(r"\belse\b", text if cut is None else text[:cut]):
                return i
        return d.orelse[0].span.line

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
            reward = f"reward {d.reward}"
            if d.reward_within is not None:
                reward += f" within {duration(d.reward_within)}"
            if d.reward_value is not None:
                reward += f" value {d.reward_value}"
            clauses.append(reward)
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
        return self._leaf([f"holdout {percent(d.fraction)} {d.name}{_goal(d.goal)}"], d.span)

    def d_ExperimentDecl(self, d: n.ExperimentDecl) -> list[str]:
        variants = ", ".join(f"{name}: {percent(share)}" for name, share in d.variants)
        return self._leaf([f"experiment {d.name} {{ {variants} }}{_goal(d.goal)}"], d.span)

    def d_TriggerDecl(self, d: n.TriggerDecl) -> list[str]:
        unless = f" unless {d.unless}" if d.unless is not None else ""
        line = (
            f"trigger {d.name} on {d.on} after {duration(d.after_seconds)}{unless}"
            f" decide for channel {d.channel}"
        )
        return self._leaf([line], d.span)

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
                    [f"{key(k)}: {json_value(v, bare=True)}" for k, v in d.scores.items()],
                )
            )
        if d.variants:
            parts.append(
                _entries(
                    "experiments",
                    [f"{key(k)}: {json_value(v, bare=True)}" for k, v in d.variants.items()],
                )
            )
        if d.in_holdout:
            parts.append(["in holdout"])
        if d.trigger is not None:
            parts.append([f"trigger {d.trigger}"])
        if d.now is not None:
            parts.append([f"now {moment(d.now)}"])
        if d.expect is not None:
            listed = f"[{', '.join(d.expect)}]"
            if d.expect_mode == "one of":
                parts.append([f"expect one of {listed}"])
            elif d.expect_mode == "not":
                parts.append([f"expect not {listed}"])
            else:
                parts.append(["expect " + (listed if d.expect else "nothing")])
        head = self.comments.take_trailing(d.span.line, d.span.line)
        inner = self.comments.take_alone(d.span.line + 1, d.span.end_line - 1)
        inner += self.comments.take_trailing(d.span.line + 1, d.span.end_line)
        out = [with_trailing(f"scenario {string(d.name)} {{", head)]
        out += [INDENT + c for c in inner]
        for part in parts:
            out += [INDENT + line for line in part]
        out.append("}")
        return out

    def _object(self, kind: str, values: Mapping[str, Any], enums: set[str]) -> list[str]:
        entries = [f"{key(k)}: {json_value(v, bare=k in enums)}" for k, v in values.items()]
        return _entries(kind, entries)

    def _block(
        self,
        head: str,
        span: n.Span,
        items: Sequence[_Item],
        show: Callable[[_Item, str], list[str]],
        indent: str,
        outer: str,
    ) -> list[str]:
        out = [with_trailing(outer + head, self.comments.take_trailing(span.line, span.line))]
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
            with_trailing(outer + "}", self.comments.take_trailing(span.end_line, span.end_line))
        )
        return out


# ------------------------------------------------------------------ pieces


def _policy_text(p: n.PolicyLimit | n.PolicyFatigue) -> str:
    if isinstance(p, n.PolicyLimit):
        return f"{p.scope} {p.name}: {p.count} per {duration(p.window_seconds)}"
    return (
        f"{p.scope} {p.name}: suppress after {p.rejections} rejections within "
        f"{duration(p.window_seconds)} for {duration(p.period_seconds)}"
    )


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
    if e.label is not None:
        return f"{target}: {string(e.label)}{ago}"
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
    for name, value in d.attributes.items():
        props.append((name, f"{name} {json_value(value)}"))
    if d.payload:
        props.append(("payload", f"payload {json_value(d.payload)}"))
    return props


def format_ruleset(ruleset: n.Ruleset) -> str:
    """The canonical text of a ruleset parsed from one file, its comments kept."""
    return _Printer(ruleset).run()


def _goal(goal: n.Goal | None) -> str:
    if goal is None:
        return ""
    out = f" goal {goal.event}"
    if goal.within is not None:
        out += f" within {duration(goal.within)}"
    if goal.value is not None:
        out += f" value {goal.value}"
    return out

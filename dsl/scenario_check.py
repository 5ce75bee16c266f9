"""Checks of `scenario` blocks: every literal a scenario gives fits what the ruleset declares.

Scenario parts are JSON-like values without spans of their own, so errors are
placed by finding the key in the scenario's source text (`Locator`); when it
cannot be found they point at the scenario's first line.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from arbiter.dsl import nodes as n
from arbiter.dsl import types as t
from arbiter.dsl.checked import CheckedRuleset
from arbiter.dsl.errors import did_you_mean

Emit = Callable[[str, str, n.Span, str | None], None]


def parse_time(value: str) -> float | None:
    """Epoch seconds of an ISO date or date-time string (UTC unless it says otherwise)."""
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.timestamp()


def value_problem(ty: t.Type, value: Any) -> str | None:
    """Why a scenario literal does not fit a declared type, or None if it fits.

    The same shapes the server accepts for profiles and contexts: times as ISO
    strings or epoch seconds, sets as lists of strings.
    """
    if value is None:
        return None  # null: the value is missing, which is always allowed
    kind = ty.kind
    if kind == "number":
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        return None if ok else f"expected a number, got {_describe(value)}"
    if kind == "string":
        return None if isinstance(value, str) else f"expected a string, got {_describe(value)}"
    if kind == "bool":
        return (
            None if isinstance(value, bool) else f"expected true or false, got {_describe(value)}"
        )
    if kind == "enum":
        if value in ty.members:
            return None
        return f"expected one of {', '.join(ty.members)}, got {_describe(value)}"
    if kind == "time":
        if isinstance(value, int | float) and not isinstance(value, bool):
            return None
        if isinstance(value, str) and parse_time(value) is not None:
            return None
        return f'expected a date like "2026-01-31" or epoch seconds, got {_describe(value)}'
    if kind == "set":
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            return None
        return f"expected a list of strings, got {_describe(value)}"
    return None


def _describe(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return repr(value)


class Locator:
    """Finds a word inside a declaration's source text, for error positions.

    Some nodes (scenario values, action properties) have no spans of their own;
    the word is searched for within the declaration's span instead.
    """

    def __init__(self, source: str, span: n.Span) -> None:
        self.span = span
        self.lines = source.splitlines()

    def find(self, *words: str) -> n.Span:
        """The span of the last word, searched in order after each previous word."""
        line, col = self.span.line, self.span.column
        end_line = self.span.end_line or line
        for word in words:
            found = self._search(word, line, col, end_line)
            if found is None:
                return self.span
            line, col = found
            col += len(word)
        return n.Span(self.span.file, line, col - len(words[-1]), line, col)

    def _search(self, word: str, line: int, col: int, end_line: int) -> tuple[int, int] | None:
        pattern = re.compile(rf"(?<![A-Za-z0-9_.]){re.escape(word)}(?![A-Za-z0-9_])")
        for ln in range(line, min(end_line, len(self.lines)) + 1):
            text = self.lines[ln - 1]
            start = col - 1 if ln == line else 0
            m = pattern.search(text, start)
            if m:
                return ln, m.start() + 1
        return None


def check_scenarios(out: CheckedRuleset, emit: Emit) -> None:
    """Check every scenario of a checked ruleset, reporting through `emit`."""
    seen: dict[str, n.Span] = {}
    for sc in out.scenarios:
        loc = Locator(out.sources.get(sc.span.file, ""), sc.span)
        if sc.name in seen:
            emit(
                "duplicate-name",
                f"scenario '{sc.name}' is already defined at {seen[sc.name]}",
                sc.span,
                None,
            )
        seen.setdefault(sc.name, sc.span)
        if sc.expect is None:
            emit(
                "missing-expect",
                f"scenario '{sc.name}' has no 'expect'",
                sc.span,
                "add: expect [action, …] or expect nothing",
            )
        for action in sc.expect or ():
            if action not in out.actions:
                hint = did_you_mean(action, out.actions)
                emit(
                    "unknown-action",
                    f"no action named '{action}'",
                    loc.find("expect", action),
                    hint,
                )
        _values(emit, loc, "profile", sc.profile, out.profile)
        _values(emit, loc, "context", sc.context, out.context)
        _events(emit, loc, sc, out)
        _scores(emit, loc, sc, out)
        _splits(emit, loc, sc, out)
        if sc.trigger is not None and sc.trigger not in out.triggers:
            hint = did_you_mean(sc.trigger, out.triggers)
            where = loc.find("trigger", sc.trigger)
            emit("unknown-name", f"no trigger named '{sc.trigger}'", where, hint)


def _values(
    emit: Emit, loc: Locator, kind: str, values: Mapping[str, Any], schema: Mapping[str, t.Type]
) -> None:
    for key, value in values.items():
        span = loc.find(kind, key)
        if key not in schema:
            emit("unknown-field", f"{kind} has no field '{key}'", span, did_you_mean(key, schema))
            continue
        problem = value_problem(schema[key], value)
        if problem is not None:
            hint = None
            if schema[key].kind == "enum" and isinstance(value, str):
                hint = did_you_mean(value, schema[key].members)
            emit("scenario-value", f"{kind}.{key}: {problem}", span, hint)


def _events(emit: Emit, loc: Locator, sc: n.ScenarioDecl, out: CheckedRuleset) -> None:
    for ev in sc.events:
        span = loc.find("events", ev.event)
        if ev.event in out.actions and ev.event not in out.events:
            # An action's name records contacts (counted against its cap); `.rejected`
            # records rejections (counted for `suppress after`).
            if ev.prop not in (None, "rejected") or ev.label is not None:
                message = f"'{ev.event}' is an action: give contacts, or '{ev.event}.rejected'"
                emit("unknown-field", message, span, None)
            elif ev.amount < 0 or ev.amount != int(ev.amount):
                message = f"{ev.event}: a number of contacts must be a whole number"
                emit("scenario-value", message, span, None)
            continue
        if out.events and ev.event not in out.events:
            hint = did_you_mean(ev.event, out.events)
            emit("unknown-event", f"no event named '{ev.event}'", span, hint)
            continue
        if ev.prop is None:
            if ev.label is not None:
                message = (
                    f"{ev.event}: a text value belongs to a property, e.g. {ev.event}.category"
                )
                emit("scenario-value", message, span, None)
            elif ev.amount < 0 or ev.amount != int(ev.amount):
                emit(
                    "scenario-value",
                    f"{ev.event}: a number of events must be a whole number",
                    span,
                    None,
                )
            continue
        fields = out.events.get(ev.event, {})
        if out.events and ev.prop not in fields:
            hint = did_you_mean(ev.prop, fields)
            emit("unknown-field", f"event {ev.event} has no field '{ev.prop}'", span, hint)
        elif ev.prop in fields and (ev.label is not None) != fields[ev.prop].is_text:
            # `product_view.category: "shoes"` for text, `purchase.amount: 120` for numbers.
            want = "a text value in quotes" if fields[ev.prop].is_text else "a number"
            emit("scenario-value", f"{ev.event}.{ev.prop} takes {want}", span, None)


def _scores(emit: Emit, loc: Locator, sc: n.ScenarioDecl, out: CheckedRuleset) -> None:
    for key, value in sc.scores.items():
        span = loc.find("scores", key)
        if key in out.models:
            model = out.models[key]
            if model.per_action and isinstance(value, dict):
                for action, score in value.items():
                    if action not in out.actions:
                        hint = did_you_mean(action, out.actions)
                        emit("unknown-action", f"no action named '{action}'", span, hint)
                    elif not _probability(score):
                        emit(
                            "scenario-value",
                            f"{key}.{action}: a score is a number from 0 to 1",
                            span,
                            None,
                        )
            elif not _probability(value):
                shape = " (or one per action: { action: score })" if model.per_action else ""
                emit("scenario-value", f"{key}: a score is a number from 0 to 1{shape}", span, None)
        elif key in out.bandits:
            arms = out.bandits[key].arms
            if not isinstance(value, dict) or not value:
                emit(
                    "scenario-value",
                    f"{key}: give the bandit's probabilities as {{ arm: p }}",
                    span,
                    None,
                )
                continue
            for arm, p in value.items():
                if arm not in arms:
                    emit(
                        "unknown-action",
                        f"'{arm}' is not an arm of bandit '{key}'",
                        span,
                        did_you_mean(arm, arms),
                    )
                elif not _probability(p):
                    emit(
                        "scenario-value",
                        f"{key}.{arm}: a probability is a number from 0 to 1",
                        span,
                        None,
                    )
        else:
            hint = did_you_mean(key, [*out.models, *out.bandits])
            emit("unknown-model", f"no model or bandit named '{key}'", span, hint)


def _probability(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and 0 <= value <= 1


def _splits(emit: Emit, loc: Locator, sc: n.ScenarioDecl, out: CheckedRuleset) -> None:
    if sc.in_holdout and out.holdout is None:
        emit(
            "no-holdout",
            "this scenario is 'in holdout', but the ruleset has no holdout",
            loc.find("holdout"),
            "declare one, e.g. holdout 5% control",
        )
    for name, variant in sc.variants.items():
        span = loc.find("experiments", name)
        exp = out.experiments.get(name)
        if exp is None:
            hint = did_you_mean(name, out.experiments)
            emit("unknown-name", f"no experiment named '{name}'", span, hint)
            continue
        members = [v for v, _ in exp.variants]
        if variant not in members:
            hint = did_you_mean(str(variant), members)
            emit(
                "unknown-member", f"'{variant}' is not a variant of experiment '{name}'", span, hint
            )

"""Lark tree → `dsl.nodes`: the Transformer that gives every node its shape and span.

Only `dsl.parser` drives it. It checks nothing but literals (dates, numbers,
duplicate action properties); those problems are collected in `errors` rather
than raised, so one parse reports them all.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from lark import Token, Transformer, v_args
from lark.tree import Meta

from arbiter.dsl import nodes as n
from arbiter.dsl.errors import Diagnostic

#: How action properties read in the source, where that differs from the field name.
_PROP_WORDS = {"fatigue": "suppress after", "consent": "requires consent"}

#: Duration units. In a window (`within 1 month`, `cap 1 per 1mo`, policies, fatigue,
#: `contacts(…)`) a month is a calendar month (`_window`), and so is `now() - 1mo`
#: (`Duration.months`); the 30 days here serve where a month is a plain length:
#: `reward … within`, a trigger's `after`, a scenario's `ago`, and a difference of
#: times compared with a duration. `m` alone is refused, since marketers read it as a
#: month as often as a minute.
_UNIT_SECONDS = {
    "ms": 0.001,
    "s": 1, "second": 1, "seconds": 1,
    "min": 60, "minute": 60, "minutes": 60,
    "h": 3600, "hour": 3600, "hours": 3600,
    "d": 86400, "day": 86400, "days": 86400,
    "w": 604800, "week": 604800, "weeks": 604800,
    "mo": 30 * 86400, "month": 30 * 86400, "months": 30 * 86400,
}  # fmt: skip
_MONTH_UNITS = frozenset({"mo", "month", "months"})


def node_span(filename: str, meta: Meta | Token) -> n.Span:
    """The source span of a tree node (its meta) or a token; 0 where Lark has no position."""
    return n.Span(
        filename,
        getattr(meta, "line", 0) or 0,
        getattr(meta, "column", 0) or 0,
        getattr(meta, "end_line", 0) or 0,
        getattr(meta, "end_column", 0) or 0,
    )


def _unquote(token: Token) -> str:
    value = json.loads(str(token))
    assert isinstance(value, str)
    return value


@v_args(meta=True)
class Builder(Transformer[Token, Any]):
    """Shapes the Lark tree into nodes. Checks nothing but literals (dates, numbers)."""

    def __init__(self, filename: str) -> None:
        super().__init__()
        self.filename = filename
        self.errors: list[Diagnostic] = []

    def _s(self, meta: Meta | Token) -> n.Span:
        return node_span(self.filename, meta)

    # -- top level
    def start(self, meta: Meta, children: list[Any]) -> n.Ruleset:
        header, *decls = children
        return n.Ruleset(header[0], header[1], tuple(decls))

    def ruleset_header(self, meta: Meta, children: list[Token]) -> tuple[str, n.Span]:
        return str(children[0]), self._s(meta)

    def include(self, meta: Meta, children: list[Token]) -> n.Include:
        return n.Include(self._s(meta), _unquote(children[0]))

    # -- schema
    def profile_decl(self, meta: Meta, children: list[Any]) -> n.SchemaDecl:
        return n.SchemaDecl(self._s(meta), "profile", children[0])

    def context_decl(self, meta: Meta, children: list[Any]) -> n.SchemaDecl:
        return n.SchemaDecl(self._s(meta), "context", children[0])

    def event_decl(self, meta: Meta, children: list[Any]) -> n.EventDecl:
        fields = children[1] if len(children) > 1 else ()
        return n.EventDecl(self._s(meta), str(children[0]), fields)

    def field_list(self, meta: Meta, children: list[n.Field]) -> tuple[n.Field, ...]:
        return tuple(children)

    def field(self, meta: Meta, children: list[Any]) -> n.Field:
        return n.Field(self._s(meta), str(children[0]), children[1])

    def simple_type(self, meta: Meta, children: list[Token]) -> n.TypeRef:
        name = str(children[0])
        kind = name if name in ("number", "int", "string", "bool", "time") else "unknown"
        return n.TypeRef(self._s(meta), kind, (), name)  # type: ignore[arg-type]

    def set_type(self, meta: Meta, children: list[Token]) -> n.TypeRef:
        inner = str(children[0])
        kind = "set" if inner == "string" else "unknown"
        return n.TypeRef(self._s(meta), kind, (), f"set<{inner}>")  # type: ignore[arg-type]

    def enum_type(self, meta: Meta, children: list[Any]) -> n.TypeRef:
        members = children[0]
        return n.TypeRef(self._s(meta), "enum", members, f"one of [{', '.join(members)}]")

    def name_list(self, meta: Meta, children: list[Token]) -> tuple[str, ...]:
        return tuple(str(c) for c in children)

    # -- models, segments
    def model_decl(self, meta: Meta, children: list[Any]) -> n.ModelDecl:
        name, path, inputs = children[0], children[1], children[2]
        per_action = len(children) > 3
        return n.ModelDecl(self._s(meta), str(name), _unquote(path), inputs, per_action)

    def per_action(self, meta: Meta, children: list[Any]) -> bool:
        # A named rule: the anonymous "per" "action" tokens alone would leave no trace.
        return True

    def expr_list(self, meta: Meta, children: list[n.Expr]) -> tuple[n.Expr, ...]:
        return tuple(children)

    def attributes_decl(self, meta: Meta, children: list[Any]) -> n.AttributesDecl:
        return n.AttributesDecl(self._s(meta), children[0])

    def segment_decl(self, meta: Meta, children: list[Any]) -> n.SegmentDecl:
        return n.SegmentDecl(self._s(meta), str(children[0]), children[1])

    # -- actions
    def action_decl(self, meta: Meta, children: list[Any]) -> n.ActionDecl:
        name_tok, *props = children
        fields: dict[str, Any] = {"payload": {}, "attributes": {}, "prop_spans": {}}
        given: set[str] = set()
        for key, value, span in props:
            shown = value[0] if key == "attribute" else _PROP_WORDS.get(key, key)
            if shown in given:
                # A second `value` would silently win; say so instead.
                message = f"action '{name_tok}' gives '{shown}' twice"
                self.errors.append(Diagnostic("duplicate-property", message, span))
            given.add(shown)
            fields["prop_spans"].setdefault(shown, span)
            if key == "attribute":
                fields["attributes"][value[0]] = value[1]
            elif key == "valid":
                fields["valid_from"], fields["valid_until"] = value
            else:
                fields[key] = value
        return n.ActionDecl(self._s(meta), str(name_tok), self._s(name_tok), **fields)

    def prop_value(self, meta: Meta, c: list[Any]) -> tuple[str, Any, n.Span]:
        return "value", float(c[0]), self._s(meta)

    def prop_channels(self, meta: Meta, c: list[Any]) -> tuple[str, Any, n.Span]:
        return "channels", c[0], self._s(meta)

    def prop_cap(self, meta: Meta, c: list[Token]) -> tuple[str, Any, n.Span]:
        text = f"{c[0]} per {c[1]}"
        return "cap", n.Cap(int(c[0]), self._window(c[1]), text), self._s(meta)

    def prop_consent(self, meta: Meta, c: list[Token]) -> tuple[str, Any, n.Span]:
        return "consent", _unquote(c[0]), self._s(meta)

    def prop_valid(self, meta: Meta, c: list[Token]) -> tuple[str, Any, n.Span]:
        before = len(self.errors)
        start = self._time(c[0])
        # `valid A .. B` includes the whole of day B.
        end = self._time(c[1]) + 86400
        # A date that does not exist is reported once, not again as a backwards range.
        if end <= start and len(self.errors) == before:
            self.errors.append(
                Diagnostic(
                    "invalid-date-range",
                    f"validity ends ({c[1]}) before it starts ({c[0]})",
                    self._s(meta),
                )
            )
        return "valid", (start, end), self._s(meta)

    def prop_tags(self, meta: Meta, c: list[Any]) -> tuple[str, Any, n.Span]:
        return "tags", c[0], self._s(meta)

    def prop_fatigue(self, meta: Meta, c: list[Token]) -> tuple[str, Any, n.Span]:
        fatigue = n.Fatigue(int(c[0]), self._window(c[1]), self._window(c[2]))
        return "fatigue", fatigue, self._s(meta)

    def prop_payload(self, meta: Meta, c: list[Any]) -> tuple[str, Any, n.Span]:
        return "payload", c[0], self._s(meta)

    def prop_attribute(self, meta: Meta, c: list[Any]) -> tuple[str, Any, n.Span]:
        return "attribute", (str(c[0]), c[1]), self._s(c[0])

    # -- rules
    def when_rule(self, meta: Meta, c: list[Any]) -> n.WhenRule:
        cond, action, *opts = c
        extra: dict[str, Any] = dict(opts)
        return n.WhenRule(self._s(meta), cond, str(action), self._s(action), **extra)

    def opt_weight(self, meta: Meta, c: list[Any]) -> tuple[str, Any]:
        return "weight", float(c[0])

    def opt_priority(self, meta: Meta, c: list[Token]) -> tuple[str, Any]:
        return "priority", int(c[0])

    def suppress_rule(self, meta: Meta, c: list[Any]) -> n.SuppressRule:
        (kind, value, span), cond = c
        if kind == "action":
            return n.SuppressRule(self._s(meta), value, span, cond)
        if kind == "tag":
            return n.SuppressRule(self._s(meta), "", span, cond, tag=value)
        return n.SuppressRule(self._s(meta), "", span, cond, targets=value)

    def target_action(self, meta: Meta, c: list[Token]) -> tuple[str, Any, n.Span]:
        return "action", str(c[0]), self._s(c[0])

    def target_list(self, meta: Meta, c: list[Any]) -> tuple[str, Any, n.Span]:
        return "list", c[0], self._s(meta)

    def target_tag(self, meta: Meta, c: list[Token]) -> tuple[str, Any, n.Span]:
        return "tag", str(c[0]), self._s(c[0])

    def policy_decl(self, meta: Meta, c: list[Any]) -> n.PolicyDecl:
        limits = tuple(x for x in c if isinstance(x, n.PolicyLimit))
        fatigue = tuple(x for x in c if isinstance(x, n.PolicyFatigue))
        return n.PolicyDecl(self._s(meta), limits, fatigue)

    def policy_fatigue(self, meta: Meta, c: list[Any]) -> n.PolicyFatigue:
        scope, name, rejections, window, period = c
        return n.PolicyFatigue(
            self._s(meta),
            scope,
            str(name),
            int(rejections),
            self._window(window),
            self._window(period),
        )

    def policy_limit(self, meta: Meta, c: list[Any]) -> n.PolicyLimit:
        scope, name, count, window = c
        text = f"{count} per {window}"
        seconds = self._window(window)
        return n.PolicyLimit(self._s(meta), scope, str(name), int(count), seconds, text)

    def scope_channel(self, meta: Meta, c: list[Any]) -> str:
        return "channel"

    def scope_tag(self, meta: Meta, c: list[Any]) -> str:
        return "tag"

    def scope_action(self, meta: Meta, c: list[Any]) -> str:
        return "action"

    def contacts(self, meta: Meta, c: list[Any]) -> n.Expr:
        scope, name, window = c
        return n.Contacts(self._s(meta), scope, str(name), self._window(window), str(window))

    def if_block(self, meta: Meta, c: list[Any]) -> n.IfBlock:
        cond, *body = c
        orelse: tuple[n.Rule, ...] = ()
        if body and isinstance(body[-1], tuple):
            orelse = body.pop()
        return n.IfBlock(self._s(meta), cond, tuple(body), orelse)

    def else_if(self, meta: Meta, c: list[Any]) -> tuple[n.Rule, ...]:
        return (c[0],)

    def else_block(self, meta: Meta, c: list[Any]) -> tuple[n.Rule, ...]:
        return tuple(c)

    # -- bandits, arbitration, splits, default
    def bandit_decl(self, meta: Meta, c: list[Any]) -> n.BanditDecl:
        name, arms, features, *rest = c
        extra: dict[str, Any] = {}
        for key, value in rest:
            extra.update(value) if key in ("explore", "reward") else extra.__setitem__(key, value)
        return n.BanditDecl(self._s(meta), str(name), arms, features, **extra)

    def explore(self, meta: Meta, c: list[Any]) -> tuple[str, Any]:
        rate = c[1]
        # `explore epsilon 10%` reads as 0.1, as percentages do everywhere.
        value = self._percent(rate) if isinstance(rate, Token) else float(rate)
        return "explore", {"exploration": str(c[0]), "rate": value}

    def reward(self, meta: Meta, c: list[Any]) -> tuple[str, Any]:
        name, *opts = c
        return "reward", {"reward": str(name), **dict(opts)}

    def reward_within(self, meta: Meta, c: list[Token]) -> tuple[str, Any]:
        return "reward_within", self._length(c[0], "a reward's attribution window")

    def reward_value(self, meta: Meta, c: list[Token]) -> tuple[str, Any]:
        return "reward_value", str(c[0])

    def arbitrate_decl(self, meta: Meta, c: list[Any]) -> n.ArbitrateDecl:
        formula, *opts = c
        return n.ArbitrateDecl(self._s(meta), formula, **dict(opts))

    def opt_top(self, meta: Meta, c: list[Token]) -> tuple[str, Any]:
        return "top", int(c[0])

    def opt_diversity(self, meta: Meta, c: list[Token]) -> tuple[str, Any]:
        return "max_per_tag", int(c[0])

    def holdout_decl(self, meta: Meta, c: list[Any]) -> n.HoldoutDecl:
        goal = c[2] if len(c) > 2 else None
        return n.HoldoutDecl(self._s(meta), self._percent(c[0]), str(c[1]), goal)

    def experiment_decl(self, meta: Meta, c: list[Any]) -> n.ExperimentDecl:
        name, *variants = c
        goal = variants.pop() if variants and isinstance(variants[-1], n.Goal) else None
        return n.ExperimentDecl(self._s(meta), str(name), tuple(variants), goal)

    def goal(self, meta: Meta, c: list[Any]) -> n.Goal:
        name, *opts = c
        extra = {"reward_within": None, "reward_value": None, **dict(opts)}
        return n.Goal(str(name), extra["reward_within"], extra["reward_value"])

    def variant(self, meta: Meta, c: list[Token]) -> tuple[str, float]:
        return str(c[0]), self._percent(c[1])

    def trigger_decl(self, meta: Meta, c: list[Token]) -> n.TriggerDecl:
        name, on, after, *rest = c
        unless = str(rest[0]) if len(rest) == 2 else None
        return n.TriggerDecl(
            self._s(meta),
            str(name),
            str(on),
            self._length(after, "a trigger's delay"),
            unless,
            str(rest[-1]),
        )

    def default_decl(self, meta: Meta, c: list[Token]) -> n.DefaultDecl:
        return n.DefaultDecl(self._s(meta), str(c[0]))

    # -- scenarios
    def scenario_decl(self, meta: Meta, c: list[Any]) -> n.ScenarioDecl:
        name, *parts = c
        fields: dict[str, Any] = {}
        for key, value in parts:
            if key == "expect":
                fields["expect_mode"], fields["expect"] = value
            else:
                fields[key] = value
        return n.ScenarioDecl(self._s(meta), _unquote(name), **fields)

    def scen_profile(self, meta: Meta, c: list[Any]) -> tuple[str, Any]:
        return "profile", c[0]

    def scen_context(self, meta: Meta, c: list[Any]) -> tuple[str, Any]:
        return "context", c[0]

    def scen_scores(self, meta: Meta, c: list[Any]) -> tuple[str, Any]:
        return "scores", c[0]

    def scen_now(self, meta: Meta, c: list[Token]) -> tuple[str, Any]:
        return "now", self._time(c[0])

    scen_now_dt = scen_now

    def scen_expect(self, meta: Meta, c: list[Any]) -> tuple[str, Any]:
        return "expect", ("exactly", c[0])

    def scen_expect_nothing(self, meta: Meta, c: list[Any]) -> tuple[str, Any]:
        return "expect", ("exactly", ())

    def scen_expect_one_of(self, meta: Meta, c: list[Any]) -> tuple[str, Any]:
        return "expect", ("one of", c[0])

    def scen_expect_not(self, meta: Meta, c: list[Any]) -> tuple[str, Any]:
        return "expect", ("not", c[0])

    def scen_customer(self, meta: Meta, c: list[Token]) -> tuple[str, Any]:
        return "customer", _unquote(c[0])

    def scen_trigger(self, meta: Meta, c: list[Token]) -> tuple[str, Any]:
        return "trigger", str(c[0])

    def scen_in_holdout(self, meta: Meta, c: list[Any]) -> tuple[str, Any]:
        return "in_holdout", True

    def scen_variants(self, meta: Meta, c: list[Any]) -> tuple[str, Any]:
        return "variants", c[0]

    def scen_events(self, meta: Meta, c: list[n.ScenarioEvent]) -> tuple[str, Any]:
        return "events", tuple(c)

    def scen_event(self, meta: Meta, c: list[Any]) -> n.ScenarioEvent:
        event = str(c[0])
        rest = c[1:]
        prop = None
        if isinstance(rest[0], Token) and rest[0].type == "NAME":
            prop = str(rest.pop(0))
        ago = self._length(rest[1], "a scenario event's age") if len(rest) > 1 else 0.0
        if isinstance(rest[0], Token) and rest[0].type == "STRING":
            return n.ScenarioEvent(event, prop, 1.0, ago, _unquote(rest[0]))
        return n.ScenarioEvent(event, prop, float(rest[0]), ago)

    # -- expressions
    def or_(self, meta: Meta, c: list[n.Expr]) -> n.Expr:
        return c[0] if len(c) == 1 else n.BoolOp(self._s(meta), "or", tuple(c))

    def and_(self, meta: Meta, c: list[n.Expr]) -> n.Expr:
        return c[0] if len(c) == 1 else n.BoolOp(self._s(meta), "and", tuple(c))

    def not_(self, meta: Meta, c: list[n.Expr]) -> n.Expr:
        return n.Unary(self._s(meta), "not", c[0])

    def neg(self, meta: Meta, c: list[Any]) -> n.Expr:
        operand = c[-1]
        if isinstance(operand, n.Number):
            return n.Number(self._s(meta), -operand.value)
        return n.Unary(self._s(meta), "neg", operand)

    def compare(self, meta: Meta, c: list[Any]) -> n.Expr:
        return n.Binary(self._s(meta), str(c[1]), c[0], c[2])  # type: ignore[arg-type]

    def arith(self, meta: Meta, c: list[Any]) -> n.Expr:
        return n.Binary(self._s(meta), str(c[1]), c[0], c[2])  # type: ignore[arg-type]

    def _binary(op: str) -> Any:  # type: ignore[misc]
        def build(self: Builder, meta: Meta, c: list[n.Expr]) -> n.Expr:
            return n.Binary(self._s(meta), op, c[0], c[1])  # type: ignore[arg-type]

        return build

    in_ = _binary("in")
    not_in = _binary("not in")
    starts_with = _binary("starts with")
    ends_with = _binary("ends with")
    contains = _binary("contains")
    matches = _binary("matches")

    def between(self, meta: Meta, c: list[n.Expr]) -> n.Expr:
        return n.Between(self._s(meta), c[0], c[1], c[2])

    def is_missing(self, meta: Meta, c: list[n.Expr]) -> n.Expr:
        return n.Presence(self._s(meta), c[0], False)

    def is_present(self, meta: Meta, c: list[n.Expr]) -> n.Expr:
        return n.Presence(self._s(meta), c[0], True)

    def number(self, meta: Meta, c: list[Token]) -> n.Expr:
        text = str(c[0])
        value: float | int = float(text) if c[0].type == "NUMBER" else int(text)
        return n.Number(self._s(meta), value)

    def percent(self, meta: Meta, c: list[Token]) -> n.Expr:
        return n.Percent(self._s(meta), self._percent(c[0]), str(c[0]))

    def string(self, meta: Meta, c: list[Token]) -> n.Expr:
        return n.String(self._s(meta), _unquote(c[0]))

    def duration(self, meta: Meta, c: list[Token]) -> n.Expr:
        text = str(c[0])
        months = -self._window(c[0]) if text.lstrip("0123456789").strip() in _MONTH_UNITS else 0
        return n.Duration(self._s(meta), self._duration(c[0]), text, months)

    def date(self, meta: Meta, c: list[Token]) -> n.Expr:
        return n.TimeLit(self._s(meta), self._time(c[0]), str(c[0]))

    datetime = date

    def true(self, meta: Meta, c: list[Any]) -> n.Expr:
        return n.Bool(self._s(meta), True)

    def false(self, meta: Meta, c: list[Any]) -> n.Expr:
        return n.Bool(self._s(meta), False)

    def list_lit(self, meta: Meta, c: list[n.Expr]) -> n.Expr:
        return n.ListLit(self._s(meta), tuple(c))

    def call(self, meta: Meta, c: list[Any]) -> n.Expr:
        return n.Call(self._s(meta), str(c[0]), c[1])

    def aggregate(self, meta: Meta, c: list[Token]) -> n.Expr:
        fn, event, *rest = c
        at = next(i for i, tok in enumerate(rest) if tok.type == "DURATION")
        prop = str(rest[0]) if at == 1 else None
        window = rest[at]
        by = str(rest[at + 1]) if len(rest) > at + 1 else None
        return n.Aggregate(
            self._s(meta),
            str(fn),  # type: ignore[arg-type]
            str(event),
            prop,
            self._window(window),
            str(window),
            by,
        )

    def last_seen(self, meta: Meta, c: list[Token]) -> n.Expr:
        return n.LastSeen(self._s(meta), str(c[0]))

    def ref(self, meta: Meta, c: list[Token]) -> n.Expr:
        return n.Ref(self._s(meta), tuple(str(t) for t in c))

    def signed_number(self, meta: Meta, c: list[Token]) -> float:
        text = str(c[-1])
        value = float(text) if c[-1].type == "NUMBER" else int(text)
        return -value if len(c) == 2 else value

    # -- JSON-ish values
    def json_object(self, meta: Meta, c: list[tuple[str, Any]]) -> dict[str, Any]:
        return dict(c)

    def json_pair(self, meta: Meta, c: list[Any]) -> tuple[str, Any]:
        key = c[0]
        return (_unquote(key) if key.type == "STRING" else str(key)), c[1]

    def json_array(self, meta: Meta, c: list[Any]) -> list[Any]:
        return list(c)

    def jstring(self, meta: Meta, c: list[Token]) -> str:
        return _unquote(c[0])

    def jname(self, meta: Meta, c: list[Token]) -> str:
        return str(c[0])

    def jnumber(self, meta: Meta, c: list[float]) -> float:
        return c[0]

    def jtrue(self, meta: Meta, c: list[Any]) -> bool:
        return True

    def jfalse(self, meta: Meta, c: list[Any]) -> bool:
        return False

    def jnull(self, meta: Meta, c: list[Any]) -> None:
        return None

    # -- literal helpers
    def _duration(self, tok: Token) -> float:
        text = str(tok)
        unit = text.lstrip("0123456789")
        amount = int(text[: len(text) - len(unit)])
        unit = unit.strip()
        if unit == "m":
            self.errors.append(
                Diagnostic(
                    "ambiguous-unit",
                    f"'{text}' could mean {amount} minute{'s' * (amount != 1)}"
                    f" or {amount} month{'s' * (amount != 1)}",
                    self._s(tok),
                    hint=f"write {amount}min for minutes or {amount}mo for months",
                )
            )
            return amount * 60.0
        return amount * _UNIT_SECONDS[unit]

    def _length(self, tok: Token, what: str) -> float:
        """A fixed length of time, where a calendar month has no meaning (`month-not-fixed`).

        A trigger's delay, a reward's attribution window and a scenario event's age are
        measured from an event, not counted back from the decision's clock; a month there
        would be a silent 30 days, so it is refused with the days to write instead.
        """
        text = str(tok)
        unit = text.lstrip("0123456789").strip()
        if unit in _MONTH_UNITS:
            amount = int(text[: len(text) - len(text.lstrip("0123456789"))])
            self.errors.append(
                Diagnostic(
                    "month-not-fixed",
                    f"'{text}': {what} is a fixed length, and months are not",
                    self._s(tok),
                    hint=f"write it in days: {amount * 30}d or {amount * 31}d",
                )
            )
        return self._duration(tok)

    def _window(self, tok: Token) -> int:
        """A window (events, caps, policies, fatigue, contacts): seconds, or `-N` for N
        calendar months (`engine.decision.window_span`)."""
        text = str(tok)
        unit = text.lstrip("0123456789").strip()
        if unit in _MONTH_UNITS:
            return -int(text[: len(text) - len(text.lstrip("0123456789"))])
        return int(self._duration(tok))

    def _percent(self, tok: Token) -> float:
        return float(str(tok).rstrip("%")) / 100.0

    def _time(self, tok: Token) -> float:
        text = str(tok)
        try:
            parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            self.errors.append(
                Diagnostic("invalid-date", f"{text} is not a real date", self._s(tok))
            )
            return 0.0
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=UTC)
        return parsed.timestamp()

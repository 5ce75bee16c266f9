"""AST node classes for `.rules` files.

Every node carries the `Span` of the source text it was built from, so that
the checker, the compiler and run-time errors can point back at a line and
column. Nodes are frozen: later stages build new values instead of mutating.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

JsonValue = Any  # str | float | int | bool | None | list[JsonValue] | dict[str, JsonValue]


@dataclass(frozen=True, slots=True)
class Span:
    """A region of a source file, 1-based lines and columns."""

    file: str
    line: int
    column: int
    end_line: int
    end_column: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.column}"


NO_SPAN = Span("<generated>", 0, 0, 0, 0)


# ---------------------------------------------------------------- expressions


@dataclass(frozen=True, slots=True)
class Expr:
    span: Span = field(compare=False)


@dataclass(frozen=True, slots=True)
class Number(Expr):
    value: float | int


@dataclass(frozen=True, slots=True)
class String(Expr):
    value: str


@dataclass(frozen=True, slots=True)
class Bool(Expr):
    value: bool


@dataclass(frozen=True, slots=True)
class Duration(Expr):
    """A duration literal such as `24h`; `seconds` is exact.

    `months` is N for `N mo`/`N months` (then `seconds` is 30 days times N): added to or
    taken from a time (`now() - 1mo`) it moves by calendar months
    (`engine.decision.window_span.add_months`); anywhere else it is the 30 days.
    """

    seconds: float
    text: str
    months: int = 0


@dataclass(frozen=True, slots=True)
class TimeLit(Expr):
    """A date (`2026-12-01`) or date-time literal, as UTC epoch seconds."""

    epoch: float
    text: str


@dataclass(frozen=True, slots=True)
class Percent(Expr):
    """`5%` is the fraction 0.05."""

    fraction: float
    text: str


#: The literal node classes: each stands for one Python value (`literal_value`).
LITERALS = (Number, String, Bool, Duration, TimeLit, Percent)


def literal_value(e: Expr) -> tuple[bool, Any]:
    """(True, the Python value evaluation compares) for a literal; (False, None) otherwise.

    Numbers, strings and booleans are themselves; a percent is its fraction, a
    duration its seconds, a date its UTC epoch seconds. The checker's reasoning,
    the compiler's indexes and the generated code all agree through this one map.
    """
    if isinstance(e, Number | String | Bool):
        return True, e.value
    if isinstance(e, Percent):
        return True, e.fraction
    if isinstance(e, Duration):
        return True, e.seconds
    if isinstance(e, TimeLit):
        return True, e.epoch
    return False, None


@dataclass(frozen=True, slots=True)
class ListLit(Expr):
    items: tuple[Expr, ...]


@dataclass(frozen=True, slots=True)
class Ref(Expr):
    """A name: `vip`, `profile.visits`, `context.channel`, `action.value`."""

    parts: tuple[str, ...]

    @property
    def dotted(self) -> str:
        return ".".join(self.parts)


@dataclass(frozen=True, slots=True)
class Call(Expr):
    """A built-in function call such as `days_since(profile.last_purchase_at)`."""

    name: str
    args: tuple[Expr, ...]


@dataclass(frozen=True, slots=True)
class Aggregate(Expr):
    """An event-window aggregate: `count(add_to_cart within 24h)`, `sum(purchase.amount within 30d)`.

    `window_seconds` is negative for calendar months: `within 2 months` is -2
    (`engine.decision.window_span`). `count(e within W by p)` has `by` set: one
    count per value of the string property `p`, usable only as `max(count(…))`,
    which the checker turns into `fn == "max_count"` with `prop == p`.
    `distinct(e.p within W)` counts the distinct values of `p`.
    """

    fn: Literal["count", "sum", "min", "max", "avg", "distinct", "max_count"]
    event: str
    prop: str | None
    window_seconds: int
    window_text: str
    by: str | None = None


@dataclass(frozen=True, slots=True)
class LastSeen(Expr):
    """The time of the customer's most recent event of a type (missing if never)."""

    event: str


@dataclass(frozen=True, slots=True)
class Contacts(Expr):
    """The customer's own contact history: `contacts(channel sms within 7d)`.

    How many times Arbiter returned an action of that channel, tag or name in the window.
    `window_seconds` is negative for calendar months, as in `Aggregate`.
    """

    scope: Literal["channel", "tag", "action"]
    name: str
    window_seconds: int
    window_text: str


@dataclass(frozen=True, slots=True)
class Unary(Expr):
    op: Literal["not", "neg"]
    operand: Expr


BinaryOp = Literal[
    "+", "-", "*", "/",
    "==", "!=", "<", "<=", ">", ">=",
    "in", "not in", "starts with", "ends with", "contains", "matches",
]  # fmt: skip


@dataclass(frozen=True, slots=True)
class Binary(Expr):
    op: BinaryOp
    left: Expr
    right: Expr


@dataclass(frozen=True, slots=True)
class BoolOp(Expr):
    op: Literal["and", "or"]
    operands: tuple[Expr, ...]


@dataclass(frozen=True, slots=True)
class Between(Expr):
    """`x between lo and hi`, inclusive at both ends."""

    operand: Expr
    low: Expr
    high: Expr


@dataclass(frozen=True, slots=True)
class Presence(Expr):
    """`x is missing` / `x is present`: the only tests that are true of a missing value."""

    operand: Expr
    present: bool


# --------------------------------------------------------------- declarations


@dataclass(frozen=True, slots=True)
class TypeRef:
    span: Span = field(compare=False)
    kind: Literal["number", "int", "string", "bool", "time", "set", "enum", "unknown"] = "unknown"
    members: tuple[str, ...] = ()
    text: str = ""


@dataclass(frozen=True, slots=True)
class Field:
    span: Span = field(compare=False)
    name: str = ""
    type: TypeRef = field(default_factory=lambda: TypeRef(NO_SPAN))


@dataclass(frozen=True, slots=True)
class Decl:
    span: Span = field(compare=False)


@dataclass(frozen=True, slots=True)
class Include(Decl):
    path: str


@dataclass(frozen=True, slots=True)
class SchemaDecl(Decl):
    """A `profile { … }` or `context { … }` block."""

    kind: Literal["profile", "context"]
    fields: tuple[Field, ...]


@dataclass(frozen=True, slots=True)
class EventDecl(Decl):
    name: str
    fields: tuple[Field, ...]


@dataclass(frozen=True, slots=True)
class AttributesDecl(Decl):
    """`action attributes { discount_pct: number, lever: number }`: custom action attributes."""

    fields: tuple[Field, ...]


@dataclass(frozen=True, slots=True)
class ModelDecl(Decl):
    name: str
    path: str
    inputs: tuple[Expr, ...]
    per_action: bool


@dataclass(frozen=True, slots=True)
class SegmentDecl(Decl):
    name: str
    expr: Expr


@dataclass(frozen=True, slots=True)
class Cap:
    """`cap N per W`; `window_seconds` is negative for calendar months (`-1` is `1mo`)."""

    count: int
    window_seconds: int
    text: str


@dataclass(frozen=True, slots=True)
class Fatigue:
    """Suppress an action after `rejections` negative outcomes within `window` for `period`.

    Either length is negative for calendar months, as in `Cap`.
    """

    rejections: int
    window_seconds: int
    period_seconds: int


@dataclass(frozen=True, slots=True)
class ActionDecl(Decl):
    name: str
    name_span: Span = field(compare=False)
    value: float = 0.0
    channels: tuple[str, ...] = ()
    cap: Cap | None = None
    consent: str | None = None
    valid_from: float | None = None
    valid_until: float | None = None
    tags: tuple[str, ...] = ()
    fatigue: Fatigue | None = None
    payload: dict[str, JsonValue] = field(default_factory=dict)
    attributes: dict[str, JsonValue] = field(default_factory=dict)
    #: Where each property was written (the first word of it), for errors about one property.
    prop_spans: dict[str, Span] = field(default_factory=dict, compare=False)


@dataclass(frozen=True, slots=True)
class PolicyLimit:
    """One line of a contact policy: at most `count` contacts per `window` on a channel or tag."""

    span: Span = field(compare=False)
    scope: Literal["channel", "tag", "action"] = "channel"
    name: str = ""
    count: int = 0
    window_seconds: int = 0
    text: str = ""


@dataclass(frozen=True, slots=True)
class PolicyFatigue:
    """Fatigue across offers: `tag promo: suppress after 3 rejections within 30d for 14d`."""

    span: Span = field(compare=False)
    scope: Literal["channel", "tag", "action"] = "tag"
    name: str = ""
    rejections: int = 0
    window_seconds: int = 0
    period_seconds: int = 0


@dataclass(frozen=True, slots=True)
class PolicyDecl(Decl):
    """`contact policy { channel sms: 1 per 7d, tag promo: suppress after 3 rejections … }`."""

    limits: tuple[PolicyLimit, ...]
    fatigue: tuple[PolicyFatigue, ...] = ()


@dataclass(frozen=True, slots=True)
class Rule(Decl):
    pass


@dataclass(frozen=True, slots=True)
class WhenRule(Rule):
    condition: Expr
    action: str
    action_span: Span = field(compare=False)
    weight: float = 1.0
    priority: int = 0


@dataclass(frozen=True, slots=True)
class SuppressRule(Rule):
    action: str
    action_span: Span = field(compare=False)
    condition: Expr = field(default_factory=lambda: Bool(NO_SPAN, True))
    #: As written: `suppress [a, b] when …` or `suppress tag promo when …`; the checker
    #: expands it into one rule per action (`action` set, `targets` empty).
    targets: tuple[str, ...] = ()
    tag: str | None = None


@dataclass(frozen=True, slots=True)
class IfBlock(Rule):
    condition: Expr
    then: tuple[Rule, ...]
    orelse: tuple[Rule, ...]  # an `else if` is a single nested IfBlock here


@dataclass(frozen=True, slots=True)
class BanditDecl(Decl):
    name: str
    arms: tuple[str, ...]
    features: tuple[Expr, ...]
    exploration: str = "epsilon"
    rate: float = 0.05
    reward: str | None = None
    #: Attribution window of the reward event, seconds (None: the default, see engine.learning.attribution).
    reward_within: float | None = None
    #: Event property whose number is the reward (None: every rewarding event is worth 1).
    reward_value: str | None = None


@dataclass(frozen=True, slots=True)
class ArbitrateDecl(Decl):
    formula: Expr
    top: int | None = None
    max_per_tag: int | None = None


@dataclass(frozen=True, slots=True)
class Goal:
    """`goal EVENT [within DURATION] [value PROPERTY]`: what a split is measured on."""

    event: str
    within: float | None = None
    value: str | None = None


@dataclass(frozen=True, slots=True)
class HoldoutDecl(Decl):
    fraction: float
    name: str
    goal: Goal | None = None


@dataclass(frozen=True, slots=True)
class ExperimentDecl(Decl):
    name: str
    variants: tuple[tuple[str, float], ...]
    goal: Goal | None = None


@dataclass(frozen=True, slots=True)
class TriggerDecl(Decl):
    """`trigger NAME on EVENT after DURATION [unless EVENT] decide for channel CHANNEL`."""

    name: str
    on: str
    after_seconds: float
    unless: str | None
    channel: str


@dataclass(frozen=True, slots=True)
class DefaultDecl(Decl):
    action: str


@dataclass(frozen=True, slots=True)
class ScenarioEvent:
    event: str
    prop: str | None
    amount: float
    ago_seconds: float
    #: `product_view.category: "shoes"`: one event whose string property `prop` is `label`.
    label: str | None = None


@dataclass(frozen=True, slots=True)
class ScenarioDecl(Decl):
    name: str
    profile: dict[str, JsonValue] = field(default_factory=dict)
    context: dict[str, JsonValue] = field(default_factory=dict)
    events: tuple[ScenarioEvent, ...] = ()
    scores: dict[str, JsonValue] = field(default_factory=dict)
    now: float | None = None
    expect: tuple[str, ...] | None = None
    #: How `expect` is matched: these actions in this order, the first returned one of
    #: them (`expect one of […]`, for bandits), or none of them returned (`expect not […]`).
    expect_mode: Literal["exactly", "one of", "not"] = "exactly"
    customer: str | None = None  # None: the runner picks an id (outside the holdout)
    in_holdout: bool = False
    variants: dict[str, JsonValue] = field(default_factory=dict)  # experiment -> variant
    #: Decide as this trigger would when it fires (engine.decision.scenarios), not as a page view.
    trigger: str | None = None


@dataclass(frozen=True, slots=True)
class Ruleset:
    """One parsed `.rules` file (includes not yet resolved)."""

    name: str
    span: Span = field(compare=False)
    decls: tuple[Decl, ...] = ()
    source: str = ""

    def of(self, kind: type[Any]) -> list[Any]:
        """All top-level declarations of one node class, in source order."""
        return [d for d in self.decls if isinstance(d, kind)]

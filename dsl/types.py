"""The value types of the language and the built-in functions' signatures."""

from __future__ import annotations

from dataclasses import dataclass

from arbiter.dsl import nodes as n


@dataclass(frozen=True, slots=True)
class Type:
    """A value type. `enum` values are strings restricted to `members`."""

    kind: str  # number, string, bool, time, duration, set, enum, list, any
    members: tuple[str, ...] = ()

    def __str__(self) -> str:
        if self.kind == "enum":
            return f"one of [{', '.join(self.members)}]"
        return {"set": "set<string>", "list": "list"}.get(self.kind, self.kind)

    @property
    def is_numeric(self) -> bool:
        return self.kind in ("number", "any")

    @property
    def is_text(self) -> bool:
        return self.kind in ("string", "enum", "any")


NUMBER = Type("number")
STRING = Type("string")
BOOL = Type("bool")
TIME = Type("time")
DURATION = Type("duration")
SET = Type("set")
LIST = Type("list")
ANY = Type("any")
#: What `day_of_week()` returns: compared with bare names, `day_of_week() in [saturday, sunday]`.
WEEKDAY = Type(
    "enum", ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
)


def from_decl(ref: n.TypeRef) -> Type:
    """The type a `profile`/`context` field declares."""
    if ref.kind == "int":
        return NUMBER
    if ref.kind == "enum":
        return Type("enum", ref.members)
    return Type(ref.kind)


def comparable(a: Type, b: Type) -> bool:
    """Whether `a == b` / `a < b` make sense."""
    if "any" in (a.kind, b.kind):
        return True
    if a.is_text and b.is_text:
        return True
    return a.kind == b.kind


#: name -> (argument types, result type). `any` accepts every type.
BUILTINS: dict[str, tuple[tuple[Type, ...], Type]] = {
    "days_since": ((TIME,), NUMBER),
    "hours_since": ((TIME,), NUMBER),
    "minutes_since": ((TIME,), NUMBER),
    "now": ((), TIME),
    "lower": ((STRING,), STRING),
    "upper": ((STRING,), STRING),
    "length": ((ANY,), NUMBER),
    "abs": ((NUMBER,), NUMBER),
    "round": ((NUMBER,), NUMBER),
    "min": ((NUMBER, NUMBER), NUMBER),
    "max": ((NUMBER, NUMBER), NUMBER),
    "coalesce": ((ANY, ANY), ANY),
    # Calendar time, from the decision's clock; the optional argument is an IANA zone name.
    "hour_of_day": ((STRING,), NUMBER),
    "day_of_week": ((STRING,), WEEKDAY),
    "days_until": ((TIME,), NUMBER),
}

#: Functions whose last arguments may be left out: name -> the fewest arguments it takes.
#: `hour_of_day()` and `day_of_week()` without a zone use the customer's (see the checker).
OPTIONAL_ARGS: dict[str, int] = {"hour_of_day": 0, "day_of_week": 0}

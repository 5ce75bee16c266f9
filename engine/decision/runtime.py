"""The only names generated evaluator code may call (`EXPORTED`).

Every helper treats `None` as "missing" and propagates it, so that a missing
profile value never raises and never matches (see docs/language.md, "Missing
values").
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from arbiter.engine.decision.debug import rewrite_traceback
from arbiter.engine.decision.oracle import Oracle
from arbiter.engine.decision.window_span import add_months
from arbiter.engine.plan import Plan, RuleInfo

_rules_log = logging.getLogger("arbiter.rules")


class _Unset:
    __slots__ = ()

    def __repr__(self) -> str:
        return "UNSET"


#: Marks a lazily computed local (a model score) that has not been computed yet.
UNSET: Any = _Unset()


def f_lower(x: Any) -> Any:
    return None if x is None else str(x).lower()


def f_upper(x: Any) -> Any:
    return None if x is None else str(x).upper()


def f_length(x: Any) -> Any:
    return None if x is None else len(x)


def f_abs(x: Any) -> Any:
    return None if x is None else abs(x)


def f_round(x: Any) -> Any:
    return None if x is None else round(x)


def f_min(a: Any, b: Any) -> Any:
    return None if a is None or b is None else min(a, b)


def f_max(a: Any, b: Any) -> Any:
    return None if a is None or b is None else max(a, b)


def f_coalesce(a: Any, b: Any) -> Any:
    return b if a is None else a


_WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")


@lru_cache(maxsize=512)
def _zone(name: str) -> ZoneInfo:
    """An IANA time zone; an unknown name fails the rule that asked (reported with its line)."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(
            f"unknown time zone {name!r} (use an IANA name like Europe/Paris)"
        ) from None


def _local(now: float, zone: Any) -> datetime:
    # A missing zone (the customer has none) is UTC, as documented.
    return datetime.fromtimestamp(now, UTC if zone is None else _zone(str(zone)))


def f_hour_of_day(now: float, zone: Any) -> int:
    """The hour (0-23) of the decision time in `zone`."""
    return _local(now, zone).hour


def f_day_of_week(now: float, zone: Any) -> str:
    """The weekday (monday … sunday) of the decision time in `zone`."""
    return _WEEKDAYS[_local(now, zone).weekday()]


def f_days_until(now: float, t: Any) -> Any:
    """Days from the decision time to `t` (negative once it has passed), fractional."""
    return None if t is None else (t - now) / 86400.0


def f_add_months(t: float, months: int) -> float:
    """`t ± N mo`: `t` moved by calendar months, as event windows count them (UTC, the day
    clamped to the month's end; `window_span.add_months`). `t` is never None here: the
    generated code guards it."""
    return add_months(t, months)


#: Helpers that read the decision's clock: generated code passes `NOW` as first argument.
CLOCK_HELPERS = frozenset({"hour_of_day", "day_of_week", "days_until"})


@lru_cache(maxsize=1024)
def _regex(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern)


def f_matches(text: Any, pattern: Any) -> bool:
    """`text matches pattern` with a pattern computed at run time (literals are precompiled)."""
    return _regex(pattern).search(text) is not None


class Failed:
    """A part of a condition that raised when probed (`engine.probes`), as its rule would."""

    __slots__ = ("error",)

    def __init__(self, exc: BaseException | str) -> None:
        self.error = exc if isinstance(exc, str) else f"{type(exc).__name__}: {exc}"

    def __repr__(self) -> str:
        return f"Failed({self.error!r})"


EXPORTED: dict[str, Any] = {
    "UNSET": UNSET,
    "Failed": Failed,
    "f_lower": f_lower,
    "f_upper": f_upper,
    "f_length": f_length,
    "f_abs": f_abs,
    "f_round": f_round,
    "f_min": f_min,
    "f_max": f_max,
    "f_coalesce": f_coalesce,
    "f_matches": f_matches,
    "f_hour_of_day": f_hour_of_day,
    "f_day_of_week": f_day_of_week,
    "f_days_until": f_days_until,
    "f_add_months": f_add_months,
}


@dataclass(slots=True)
class EvalRuntime:
    """The `rt` object generated code sees: time, variants, lazy model scores, errors."""

    plan: Plan
    now: float
    variants: tuple[str, ...]
    oracle: Oracle
    P: dict[str, Any]
    C: dict[str, Any]
    A: tuple[Any, ...]
    errors: list[str] = field(default_factory=list)
    _scores: dict[int, float | None] = field(default_factory=dict)
    _unscorable: set[int] | None = None  # made on the first failure: none on the hot path
    #: Contact counters the store read (`Inputs.caps`); unknown when the store was down.
    caps: Mapping[str, int] = field(default_factory=dict)
    degraded: bool = False

    def contacts(self, key: str) -> int | None:
        """`contacts(channel sms within 7d)`: the count, or missing when the store was down."""
        return None if self.degraded else self.caps.get(key, 0)

    def model(self, i: int) -> float | None:
        """A customer-level model's score, computed on first use and cached."""
        if i in self._scores:
            return self._scores[i]
        name = self.plan.model_names[i]
        score: float | None = None
        try:
            row = self.plan.model_inputs[i](self.P, self.C, self.A, self)
        except Exception:
            # The rule that asked fails (and is reported); explanations say so too.
            if self._unscorable is None:
                self._unscorable = set()
            self._unscorable.add(i)
            raise
        if row is not None:
            try:
                score = self.oracle.score(name, [row])[0]
            except Exception as exc:
                self.errors.append(f"model {name}: {exc}")
        self._scores[i] = score
        return score

    def computed_scores(self) -> dict[int, float | None]:
        """The customer-level scores computed so far, by model index (for explanations)."""
        return dict(self._scores)

    def unscorable(self) -> frozenset[int]:
        """Customer-level models whose input row raised when a rule asked (for explanations)."""
        return frozenset(self._unscorable or ())

    def error(self, rule_id: int, exc: BaseException) -> None:
        """A rule failed at run time: it alone is skipped; the decision records where and why.

        The exception's traceback is rewritten to the `.rules` lines and logged at
        DEBUG on `arbiter.rules` (a failing rule fails on every request, so not louder).
        """
        info: RuleInfo = self.plan.rules[rule_id]
        self.errors.append(f"{info.span}: {type(exc).__name__}: {exc} in `{info.text}`")
        if _rules_log.isEnabledFor(logging.DEBUG):
            rewrite_traceback(exc, self.plan)
            _rules_log.debug("rule at %s failed", info.span, exc_info=exc)

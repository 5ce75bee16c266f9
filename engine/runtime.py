"""The only names generated evaluator code may call (`EXPORTED`).

Every helper treats `None` as "missing" and propagates it, so that a missing
profile value never raises and never matches (see docs/language.md, "Missing
values").
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Any


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


@lru_cache(maxsize=1024)
def _regex(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern)


def f_matches(text: Any, pattern: Any) -> bool:
    """`text matches pattern` with a pattern computed at run time (literals are precompiled)."""
    return _regex(pattern).search(text) is not None


EXPORTED: dict[str, Any] = {
    "UNSET": UNSET,
    "f_lower": f_lower,
    "f_upper": f_upper,
    "f_length": f_length,
    "f_abs": f_abs,
    "f_round": f_round,
    "f_min": f_min,
    "f_max": f_max,
    "f_coalesce": f_coalesce,
    "f_matches": f_matches,
}

"""Features → Vowpal Wabbit text-format lines, escaped so no input can add structure.

One ``shared |s ...`` line carries the request context and one ``|a ...`` line
each candidate action. Numbers become ``name:value`` features, strings and
bools ``name=value`` indicator features; everything VW's text parser treats
specially is percent-encoded. Used by :class:`engine.learning.bandit.BanditModel`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Final

__all__ = [
    "ACTION_NAMESPACE",
    "SHARED_NAMESPACE",
    "FeatureValue",
    "Features",
    "action_line",
    "format_example",
    "shared_line",
]

FeatureValue = float | int | str | bool | None
Features = Mapping[str, FeatureValue]

SHARED_NAMESPACE: Final = "s"
ACTION_NAMESPACE: Final = "a"

# Largest finite float32: VW stores feature values as float32, so a larger
# finite double would arrive as inf and turn the weights into NaN.
_FLOAT32_MAX: Final = 3.4028234663852886e38


# VW's text parser splits on ' ', '\t', '|', ':' and '\r' (read_name in
# parse_example_text.cc) and string values also end at '\n'. Everything it
# could read as structure is percent-encoded, and so is '%' itself, which keeps
# the encoding injective: two different names never become the same feature.
# Control characters are escaped too, and lone surrogates, which a JSON body
# may carry but which cannot be encoded as UTF-8 on the way into VW.
#
# This matters beyond correctness of one example: with vowpal-wabbit-next 0.7
# (VW 9.9.0) a line VW rejects leaves that namespace letter broken for every
# later example in the process, even on other workspaces (they parse with no
# features). So no input may ever produce a line VW rejects.
_VALUE_ESCAPES: Final[dict[int, str]] = {
    **{c: f"%{c:02X}" for c in range(0x21)},
    0x7F: "%7F",
    ord("|"): "%7C",
    ord(":"): "%3A",
    ord("%"): "%25",
    **{c: f"%u{c:04X}" for c in range(0xD800, 0xE000)},
}
# Names also escape '=', the separator of "name=value" indicator features, so
# that {"a=b": "c"} and {"a": "b=c"} stay two different features.
_NAME_ESCAPES: Final[dict[int, str]] = {**_VALUE_ESCAPES, ord("="): "%3D"}
# VW hashes an empty name oddly (":1.5" lands outside the weight table), so an
# empty name becomes "%", which the escaping above never produces on its own.
_EMPTY_NAME: Final = "%"


def _unsafe_search(escapes: dict[int, str]) -> Callable[[str], re.Match[str] | None]:
    """A search for any character ``escapes`` rewrites, derived from it so the two agree."""
    return re.compile("[" + "".join(re.escape(chr(c)) for c in sorted(escapes)) + "]").search


# Most names and values need no escaping; finding that out with one regex
# search is ~4x cheaper than running str.translate over them.
_VALUE_NEEDS_ESCAPE: Final = _unsafe_search(_VALUE_ESCAPES)
_NAME_NEEDS_ESCAPE: Final = _unsafe_search(_NAME_ESCAPES)


def _escape_name(name: str) -> str:
    if not name:
        return _EMPTY_NAME
    return name.translate(_NAME_ESCAPES) if _NAME_NEEDS_ESCAPE(name) else name


def _escape_value(value: str) -> str:
    return value.translate(_VALUE_ESCAPES) if _VALUE_NEEDS_ESCAPE(value) else value


def _format_features(features: Features) -> str:
    """``name:value name=value ...`` for one namespace; keys sorted for a canonical line."""
    parts: list[str] = []
    for key in sorted(features):
        value = features[key]
        if value is None:
            continue  # missing: VW's own meaning of an absent feature
        if not isinstance(key, str):
            raise TypeError(f"feature names must be strings, got {key!r}")
        name = _escape_name(key)
        if isinstance(value, str):
            parts.append(f"{name}={_escape_value(value)}")
        elif isinstance(value, bool):  # before int: bool is an int subclass
            parts.append(f"{name}={'true' if value else 'false'}")
        elif isinstance(value, int | float):
            try:
                number = float(value)
            except OverflowError:  # an int too large for a double
                continue
            # NaN, inf and values beyond float32 are treated as missing: VW
            # would reject NaN (see above) or poison the weights with inf.
            if not math.isfinite(number) or abs(number) > _FLOAT32_MAX:
                continue
            # repr() of a finite float is always a literal VW's parse_float reads.
            parts.append(f"{name}:{number!r}")
        else:
            raise TypeError(
                f"feature {key!r} has unsupported type {type(value).__name__}; "
                "expected float, int, str, bool or None"
            )
    return " ".join(parts)


def format_example(shared: Features, actions: Sequence[Features]) -> list[str]:
    """The VW text-format lines for one decision: the shared line, then one line per action.

    Numbers become ``name:value`` features, strings and bools ``name=value``
    indicator features; ``None``, NaN and infinite numbers are skipped.
    Everything VW treats specially is percent-encoded, so no value can add a
    feature, a namespace or a line. Exposed for tests and explanations.
    """
    lines = [shared_line(shared)]
    lines.extend(action_line(action) for action in actions)
    return lines


def shared_line(shared: Features) -> str:
    """The ``shared |s ...`` line of the request context."""
    return f"shared |{SHARED_NAMESPACE} {_format_features(shared)}"


def action_line(action: Features) -> str:
    """The ``|a ...`` line of one candidate action."""
    return f"|{ACTION_NAMESPACE} {_format_features(action)}"

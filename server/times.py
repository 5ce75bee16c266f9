"""Instants typed by people: the `--since`/`--until` of the CLI and the query
parameters of the HTTP reports read them the same way."""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime

__all__ = ["parse_instant"]

# A duration before now: `7d`, `-24h`, `1.5h` (the sign is optional and means the same).
_BEFORE_NOW = re.compile(r"^-?(\d+(?:\.\d+)?)([smhdw])$")
_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_instant(text: str, now: float) -> float:
    """Epoch seconds from epoch seconds (``1764547200``), an ISO 8601 date or time
    (``2026-11-01``, ``2026-11-01T12:00+01:00``; UTC without an offset) or a duration
    meaning that long before ``now`` (``7d``, ``-24h``; s, m, h, d, w).

    Raises ValueError saying what is accepted.
    """
    text = text.strip()
    m = _BEFORE_NOW.match(text)
    if m is not None:
        return now - float(m.group(1)) * _UNIT[m.group(2)]
    try:
        seconds = float(text)
    except ValueError:
        pass  # not epoch seconds: an ISO time is tried next
    else:
        if math.isfinite(seconds):
            return seconds
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(
            f"'{text}' is not a time: give epoch seconds, an ISO date or time "
            "(2026-11-01, 2026-11-01T12:00Z; UTC without an offset) or a duration "
            "before now (7d, -24h)"
        ) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.timestamp()

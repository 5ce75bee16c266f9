"""The first field where a replayed decision record differs from the logged one.

Replay under the same ruleset must reproduce a record exactly: actions,
scores to the bit, probabilities, the bandits' pmfs and draws, the trace. This
module names the first field that does not, as a path a person can read
(``actions[0].score: 12.5 logged, 12.75 replayed``). Floats are compared by
their bits (``float.hex``), so ``0.1 + 0.2`` is not ``0.3`` and ``-0.0`` is not
``0.0``. Fields added in later record versions are compared only when the
logged record has them (a v1 record has no ``candidates``).
"""

from __future__ import annotations

from typing import Any

import msgspec

from arbiter.engine.records import ENCODER, DecisionRecord

__all__ = ["COMPARED", "first_difference"]

#: The computed fields of a record, in the order they are compared, with the record
#: version that introduced each. Inputs and the request are what replay is given,
#: and timings are measurements: none of those is compared.
COMPARED: tuple[tuple[str, int], ...] = (
    ("actions", 1),
    ("probabilities", 2),
    ("candidates", 2),
    ("bandits", 1),
    ("scores", 1),
    ("holdout", 1),
    ("variants", 1),
    ("trace", 1),
    ("segments", 2),
    ("errors", 1),
)


def _compared(record: DecisionRecord, version: int) -> list[Any]:
    return [getattr(record, name) for name, since in COMPARED if since <= version]


def first_difference(logged: DecisionRecord, replayed: DecisionRecord) -> str | None:
    """``None`` when ``replayed`` reproduces ``logged``; else the first differing field."""
    version = logged.v
    a = _compared(logged, version)
    b = _compared(replayed, version)
    # Fast path: almost every record is identical, and one encode is cheaper than a walk.
    if ENCODER.encode(a) == ENCODER.encode(b):
        return None
    for (name, since), x, y in zip((c for c in COMPARED if c[1] <= version), a, b, strict=True):
        del since
        found = _walk(name, msgspec.to_builtins(x), msgspec.to_builtins(y))
        if found is not None:
            return found
    return None  # pragma: no cover - the encodings differed, so a field must


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _walk(path: str, a: Any, b: Any) -> str | None:
    if isinstance(a, bool) or isinstance(b, bool):
        return None if a is b else f"{path}: {_show(a)} logged, {_show(b)} replayed"
    if isinstance(a, int | float) and isinstance(b, int | float):
        if float(a).hex() == float(b).hex():
            return None
        return f"{path}: {a!r} logged, {b!r} replayed"
    if isinstance(a, dict) and isinstance(b, dict):
        for key in a:
            if key not in b:
                return f"{path}.{key}: {_show(a[key])} logged, missing in replay"
            found = _walk(f"{path}.{key}", a[key], b[key])
            if found is not None:
                return found
        for key in b:
            if key not in a:
                return f"{path}.{key}: missing in the log, {_show(b[key])} replayed"
        return None
    if isinstance(a, list) and isinstance(b, list):
        for i, (x, y) in enumerate(zip(a, b, strict=False)):
            found = _walk(f"{path}[{i}]", x, y)
            if found is not None:
                return found
        if len(a) != len(b):
            return f"{path}: {len(a)} logged, {len(b)} replayed"
        return None
    if a == b:
        return None
    return f"{path}: {_show(a)} logged, {_show(b)} replayed"

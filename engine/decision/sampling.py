"""Deterministic draws: an action index from a pmf, seeded by the decision id.

The same decision id always gives the same seed and the same seed the same
draw, on every Python version and in every process, which is what makes a
logged decision replayable. Nothing here knows about VW or the models.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from typing import Final

__all__ = ["sample", "seed_from_decision_id"]

_MASK64: Final = (1 << 64) - 1


def _splitmix64(seed: int) -> int:
    """One output of SplitMix64 (Steele, Lea & Flood 2014) for ``seed``.

    Written out rather than taken from ``random`` so the draw is specified
    here, identical on every Python version and easy to reproduce elsewhere.
    """
    z = (seed + 0x9E3779B97F4A7C15) & _MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
    return z ^ (z >> 31)


def sample(pmf: Sequence[float], seed: int) -> int:
    """Draw an index from ``pmf``, deterministically for a given ``seed``.

    ``u`` is the top 53 bits of SplitMix64(seed mod 2**64) scaled to [0, 1);
    the result is the first index whose cumulative probability exceeds
    ``u * sum(pmf)``. Scaling by the sum and falling back to the last index
    with positive probability absorb float round-off at the end of the
    cumulative sum; an index with probability 0 is never returned.
    """
    if not pmf:
        raise ValueError("cannot sample from an empty pmf")
    for p in pmf:
        if not (math.isfinite(p) and p >= 0.0):
            raise ValueError(f"pmf entries must be finite and >= 0, got {p!r}")
    total = math.fsum(pmf)
    if total <= 0.0:
        raise ValueError("pmf sums to 0")
    target = (_splitmix64(seed & _MASK64) >> 11) * 2.0**-53 * total
    cumulative = 0.0
    last_positive = 0
    for index, p in enumerate(pmf):
        if p > 0.0:
            last_positive = index
            cumulative += p
            if target < cumulative:
                return index
    return last_positive


def seed_from_decision_id(decision_id: str) -> int:
    """A 64-bit seed from ``decision_id``: BLAKE2b with an 8-byte digest, big-endian.

    A stable hash, unlike ``hash()``, which Python randomises per process.
    """
    digest = hashlib.blake2b(decision_id.encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return int.from_bytes(digest, "big")

"""Keeping the garbage collector's full collections from stalling a serving worker.

A worker holds ~110,000 objects that live as long as it does: the compiled
plans, the models and bandits, FastAPI's routes, the libraries' modules. A
full (generation 2) collection of Python's cyclic garbage collector walks
every one of them: 55 ms with the reference ruleset, while every request in
flight waits (the p99.9 of ~55 ms in some of `benchmarks.http`'s paced runs).
`gc.freeze()` moves the objects alive at that moment to a generation the
collector never walks, so a full collection then walks only what was made
since: the requests' short-lived objects.

Frozen objects are still freed by reference counting; only cycles among them
are never collected. So the server freezes once it has started (after one
full collection, so that start-up's own garbage goes first), and again after
a new ruleset version goes live, with the freeze lifted for one full
collection first: the old version's cycles are garbage then.

`arbiter serve` turns this on (`ARBITER_GC_FREEZE`); apps built in another
process (tests, scripts) leave that process's collector as it is.
"""

from __future__ import annotations

import gc
import logging
import time
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)


def freeze() -> float:
    """Collect, then freeze every object alive; returns the seconds it took."""
    started = time.perf_counter()
    gc.collect()
    gc.freeze()
    took = time.perf_counter() - started
    log.info("gc: %d objects frozen in %.0f ms", gc.get_freeze_count(), took * 1000)
    return took


def frozen() -> bool:
    """Whether this process has objects frozen (by `freeze`)."""
    return gc.get_freeze_count() > 0


def refreeze() -> float:
    """Unfreeze, collect what became garbage meanwhile (an old plan's cycles), freeze
    again; returns the seconds it took (one full collection's pause)."""
    gc.unfreeze()
    return freeze()


class PauseWatch:
    """Every collection's pause, by generation, handed to `observe` while installed.

    `observe` runs inside the collector's callback: it must not take locks or
    schedule anything (see `telemetry.metrics.Metrics.gc_pause_of`).
    """

    def __init__(self, observe: Callable[[int, float], None]) -> None:
        self._observe = observe
        self._started = 0.0

    def _callback(self, phase: str, info: dict[str, Any]) -> None:
        # The collector runs one collection at a time, whatever the thread.
        if phase == "start":
            self._started = time.perf_counter()
        else:
            self._observe(info["generation"], time.perf_counter() - self._started)

    def install(self) -> None:
        """Start timing the collections of this process."""
        gc.callbacks.append(self._callback)

    def remove(self) -> None:
        """Stop timing them."""
        if self._callback in gc.callbacks:
            gc.callbacks.remove(self._callback)

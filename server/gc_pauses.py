"""Keeping Python's garbage collector from stalling and slowing a serving worker.

Two settings of the cyclic garbage collector, both measured on the
reference workload (`python -m benchmarks.gc_pauses`):

- **Freeze what start-up made.** A worker holds ~110,000 objects that live
  as long as it does: the compiled plans, the models and bandits, FastAPI's
  routes, the libraries' modules. A full (generation 2) collection walks
  every one of them: ~65 ms, about every 1.5 s at saturation, while every
  request in flight waits. `gc.freeze()` moves the objects alive at that
  moment to a generation the collector never walks, so a full collection
  walks only what was made since (~2 ms). Frozen objects are still freed by
  reference counting; only cycles among them are not collected. So the
  server freezes once it has started (after one full collection, so that
  start-up's garbage goes first), and again after a new ruleset version
  goes live, with the freeze lifted for one full collection first: the old
  version's cycles are garbage then.
- **Collect the young generation less often.** Python collects generation
  0 each time 700 more container objects were made than freed: ~100 times a
  second at saturation, 230 µs each, 2 to 3% of the worker's time, mostly
  walking a request's objects that reference counting frees moments later.
  At `YOUNG_THRESHOLD` (7,000) those are gone before a collection comes; the
  cost is at most that many objects' worth of cyclic garbage waiting longer.

`arbiter serve` does both (`ARBITER_GC_TUNING`); apps built in another
process (tests, scripts) leave that process's collector as it is.
"""

from __future__ import annotations

import gc
import logging
import time
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)

#: Net container allocations between young-generation collections (Python's default: 700).
YOUNG_THRESHOLD = 7_000


def tune() -> float:
    """A serving worker's collector: the young threshold raised, start-up frozen (`freeze`);
    returns the seconds it took."""
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(YOUNG_THRESHOLD, older, oldest)
    return freeze()


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

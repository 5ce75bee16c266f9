"""`/metrics` summed over the workers of `arbiter serve --workers N`.

With several workers each process has its own counters, and a scrape reaches
whichever worker takes the connection. `arbiter serve --workers N` (N > 1)
therefore runs prometheus_client's multiprocess mode: it sets
`PROMETHEUS_MULTIPROC_DIR` to a fresh directory before the workers start,
every worker's counters, histograms and gauges are memory-mapped files there,
and a scrape on any worker adds them up (`MultiProcessCollector`).

Values that are state rather than events (the decision log's counts, the
limiter's, ruleset reloads) live in each worker's objects; `StateMirror`
copies them into multiprocess counters and gauges every reload interval and
at each scrape. Gauges say how they combine (`multiprocess_mode`): the log
queue depth and the worker count are summed over live workers; values read
from Redis at scrape time (learner lag, intake lag) are the most recent.

Dead workers: their counters stay in the sums (a total does not go down
because a worker died; uvicorn starts a new one), their live gauges are
removed at the next scrape (`mark_dead_workers`).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import tempfile
from collections.abc import Callable
from pathlib import Path

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest, multiprocess

ENV = "PROMETHEUS_MULTIPROC_DIR"
_PID = re.compile(r"_(\d+)\.db$")


def multiprocess_dir() -> str | None:
    """The multiprocess directory when this process is one of several workers, else None."""
    return os.environ.get(ENV) or None


def prepare(workers: int) -> str | None:
    """Before the workers start: a fresh directory in PROMETHEUS_MULTIPROC_DIR when N > 1.

    Returns the directory to remove on exit (None when one worker, or when the
    operator set PROMETHEUS_MULTIPROC_DIR: theirs to empty between runs).
    """
    if workers <= 1 or os.environ.get(ENV):
        return None
    path = tempfile.mkdtemp(prefix="arbiter-metrics-")
    os.environ[ENV] = path
    return path


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def mark_dead_workers(path: str) -> list[int]:
    """Drop the live gauges of workers that are gone (killed ones never say so); their pids."""
    pids = {int(m.group(1)) for f in Path(path).glob("*.db") if (m := _PID.search(f.name))}
    dead = sorted(pid for pid in pids if not _alive(pid))
    for pid in dead:
        multiprocess.mark_process_dead(pid, path)  # type: ignore[no-untyped-call]
    return dead


def render(path: str) -> bytes:
    """The Prometheus text of every worker's metrics, summed."""
    mark_dead_workers(path)
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=path)  # type: ignore[no-untyped-call]
    return generate_latest(registry)


class StateMirror:
    """Copies state-valued metrics into multiprocess counters and gauges of this worker."""

    def __init__(
        self,
        read: Callable[[], dict[str, float]],
        learner_lag: dict[str, tuple[int, float]],
        state_metrics: dict[str, tuple[str, str]],
        registry: CollectorRegistry,
        before: Callable[[], None] | None = None,
    ) -> None:
        self.read = read
        # Run first at every sync: tallies kept off the event loop (`Metrics.flush_state`).
        self.before = before
        self.learner_lag = learner_lag
        self.counters: dict[str, Counter] = {}
        self.gauges: dict[str, Gauge] = {}
        self.seen: dict[str, float] = {}
        for name, (kind, help_text) in state_metrics.items():
            if kind == "gauge":
                self.gauges[name] = Gauge(
                    name, help_text, multiprocess_mode="livesum", registry=registry
                )
            else:
                self.counters[name] = Counter(name, help_text, registry=registry)
        self.lag_rewards = Gauge(
            "arbiter_learner_lag_rewards",
            "Rewards on the stream a learner group has not read yet",
            ["group"],
            multiprocess_mode="mostrecent",
            registry=registry,
        )
        self.lag_seconds = Gauge(
            "arbiter_learner_lag_seconds",
            "Age of the oldest reward a learner group has not read yet",
            ["group"],
            multiprocess_mode="mostrecent",
            registry=registry,
        )

    def sync(self) -> None:
        """Bring this worker's files up to date with its objects."""
        if self.before is not None:
            self.before()
        values = self.read()
        for name, gauge in self.gauges.items():
            gauge.set(float(values.get(name, 0.0)))
        for name, counter in self.counters.items():
            now = float(values.get(name, 0.0))
            delta = now - self.seen.get(name, 0.0)
            if delta > 0:
                counter.inc(delta)
            self.seen[name] = max(now, self.seen.get(name, 0.0))
        for group, (count, age) in self.learner_lag.items():
            self.lag_rewards.labels(group).set(count)
            self.lag_seconds.labels(group).set(age)

    async def run(self, interval_s: float, stop: asyncio.Event) -> None:
        """Sync every `interval_s` until `stop`, so a scrape on another worker sees this one."""
        while not stop.is_set():
            self.sync()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), interval_s)
        self.sync()

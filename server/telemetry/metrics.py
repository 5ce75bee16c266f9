"""Prometheus metrics, one registry per app (tests build many apps in one process).

Counters and histograms are updated where things happen; values that are
state rather than events (log queue depth, drops, learner lag, reloads) are
read from the live objects when `/metrics` is scraped (`StateCollector`).
Every metric is documented in docs/operations.md, with the dashboard and
alerts built on them.
"""

from __future__ import annotations

import asyncio
from bisect import bisect_left
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from arbiter.server.telemetry import multiprocess

STAGES = ("redis_read", "rules", "models", "bandit", "arbitration", "log", "encode")
_FAST = (0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25)


class Flusher:
    """Moves the hot path's tallies into their metrics once per event-loop iteration.

    Updating a prometheus_client series takes a lock (and, in `serve --workers
    N`, writes a memory-mapped file: 0.9 µs a counter increment, 1.9 µs a
    histogram observation; 0.3 and 0.7 µs in one process), and a decision
    updates twelve. Under load the decisions answered from one Redis round
    trip finish in the same iteration of the event loop; their updates are
    added up in tallies (0.1 to 0.25 µs each) and written once, by a callback
    queued behind them (`loop.call_soon`). A scrape, or another worker's, sees
    them as soon as that iteration ends, as it saw direct updates.
    """

    def __init__(self, *, on_loop: bool = True) -> None:
        """`on_loop=False`: never queue a flush; the owner calls `flush` (for tallies
        updated where nothing may be scheduled, as inside a garbage collector callback)."""
        self.dirty: list[Tally | HistogramTally] = []
        self.on_loop = on_loop

    def mark(self, tally: Tally | HistogramTally) -> None:
        """`tally` changed since the last flush: queue one (the first mark of an iteration)."""
        self.dirty.append(tally)
        if len(self.dirty) == 1 and self.on_loop:
            try:
                asyncio.get_running_loop().call_soon(self.flush)
            except RuntimeError:  # no event loop here (a script, a test): write now
                self.flush()

    def flush(self) -> None:
        """Write every tally changed since the last flush into its metric."""
        dirty, self.dirty = self.dirty, []
        for tally in dirty:
            tally.flush()


class Tally:
    """A counter's increments since the last `Flusher.flush`, then moved into it."""

    __slots__ = ("child", "flusher", "pending")

    def __init__(self, child: Any, flusher: Flusher) -> None:
        self.child = child
        self.flusher = flusher
        self.pending = 0.0

    def inc(self, amount: float = 1.0) -> None:
        """Count `amount` more (written to the counter at the end of this loop iteration)."""
        first = not self.pending
        self.pending += amount
        if first:
            self.flusher.mark(self)

    def flush(self) -> None:
        """Move what was counted since the last flush into the counter."""
        pending, self.pending = self.pending, 0.0
        if pending:
            self.child.inc(pending)


class HistogramTally:
    """A histogram's observations since the last `Flusher.flush`, as bucket counts.

    An observation is a `bisect` and two additions. The flush adds the counts
    to the histogram's own buckets and sum: prometheus_client has no public
    call that adds n observations at once, so this uses `_upper_bounds`,
    `_buckets` and `_sum`, which `Histogram.observe` itself updates (pinned by
    tests/server/test_metrics.py against `observe`).
    """

    __slots__ = ("bounds", "child", "counts", "flusher", "observed", "total")

    def __init__(self, child: Any, flusher: Flusher) -> None:
        self.child = child
        self.flusher = flusher
        self.bounds: list[float] = list(child._upper_bounds)  # ends with +Inf
        self.counts = [0] * len(self.bounds)
        self.total = 0.0
        self.observed = False

    def observe(self, amount: float) -> None:
        """Observe `amount` (written to the histogram at the end of this loop iteration)."""
        # The first bucket whose upper bound is >= amount, as `Histogram.observe` picks.
        self.counts[bisect_left(self.bounds, amount)] += 1
        self.total += amount
        if not self.observed:
            self.observed = True
            self.flusher.mark(self)

    def flush(self) -> None:
        """Move the observations since the last flush into the histogram."""
        if not self.observed:
            return
        counts, self.counts = self.counts, [0] * len(self.bounds)
        total, self.total = self.total, 0.0
        self.observed = False
        child = self.child
        child._sum.inc(total)
        for bucket, n in zip(child._buckets, counts, strict=True):
            if n:
                bucket.inc(n)


class Children(dict[Any, Any]):
    """One labelled metric's hot-path series by label values, each made once.

    `metric.labels(...)` costs ~1.5 µs a call (label values turned to str under
    a lock); the decide path labels a dozen series per decision, which was
    half of its ~34 µs of metrics. A dict hit costs ~50 ns. Keys are a label
    value, or a tuple of them for a metric with several labels. Values are
    the series' `Tally` (counters) or `HistogramTally` (histograms), which
    the `Flusher` empties into the metric after each event-loop iteration.
    """

    def __init__(self, metric: Any, flusher: Flusher) -> None:
        super().__init__()
        self._metric = metric
        self._flusher = flusher

    def __missing__(self, key: Any) -> Any:
        child = self._metric.labels(*key) if isinstance(key, tuple) else self._metric.labels(key)
        kind = HistogramTally if isinstance(self._metric, Histogram) else Tally
        tally = self[key] = kind(child, self._flusher)
        return tally


class Metrics:
    """The counters and histograms the server exports on `/metrics`."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        # `arbiter serve --workers N`: every worker's values in files, summed at each scrape.
        self.multiprocess_dir = multiprocess.multiprocess_dir()
        self.mirror: multiprocess.StateMirror | None = None
        self.workers = Gauge(
            "arbiter_workers",
            "Worker processes serving (summed over the live workers of `serve --workers N`)",
            multiprocess_mode="livesum",
            registry=r,
        )
        self.workers.set(1)
        self.decisions = Counter(
            "arbiter_decisions", "Decisions answered", ["ruleset", "degraded"], registry=r
        )
        self.actions = Counter(
            "arbiter_decision_actions",
            "Actions returned, per ruleset, version and action (`none` for an empty answer)",
            ["ruleset", "version", "action"],
            registry=r,
        )
        self.degraded = Counter(
            "arbiter_degraded_decisions",
            "Decisions answered degraded, by cause",
            ["cause"],
            registry=r,
        )
        # What the hot path updates goes through tallies (see `Flusher`).
        self.flusher = Flusher()
        self.decide_seconds = Histogram(
            "arbiter_decide_seconds",
            "Time inside the decide handler",
            buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25),
            registry=r,
        )
        self.stage = Histogram(
            "arbiter_decide_stage_seconds",
            "Time per stage of a decision",
            ["stage"],
            buckets=_FAST,
            registry=r,
        )
        self.requests = Counter(
            "arbiter_http_requests",
            "HTTP requests answered, by route template, method and status",
            ["route", "method", "status"],
            registry=r,
        )
        self.request_seconds = Histogram(
            "arbiter_http_request_seconds",
            "HTTP request duration at the edge, by route template",
            ["route"],
            buckets=_FAST,
            registry=r,
        )
        self.redis_errors = Counter(
            "arbiter_redis_errors",
            "Redis calls that failed, by use and kind (timeout or error)",
            ["use", "kind"],
            registry=r,
        )
        self.feedback = Counter("arbiter_feedback", "Feedback received", ["outcome"], registry=r)
        self.events = Counter("arbiter_events", "Events ingested", registry=r)
        self.rule_errors = Counter(
            "arbiter_rule_errors", "Run-time errors inside rules", ["ruleset"], registry=r
        )
        self.learner_lag: dict[str, tuple[int, float]] = {}  # group -> (rewards, seconds)
        # The hot path's series, by label values (see `Children`).
        self.gc_pause = Histogram(
            "arbiter_gc_pause_seconds",
            "Pauses of Python's garbage collector, by generation (2: a full collection)",
            ["generation"],
            buckets=(0.0001, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25),
            registry=r,
        )
        # Observed inside the collector's callback, where taking prometheus_client's locks
        # could deadlock and scheduling a callback is unsafe: tallied, written at each
        # scrape and state sync (`flush_state`). Children made here, not in the callback.
        self.gc_flusher = Flusher(on_loop=False)
        self.gc_pause_of = Children(self.gc_pause, self.gc_flusher)
        for generation in range(3):
            _ = self.gc_pause_of[generation]  # made now, not in the callback
        self.latency = HistogramTally(self.decide_seconds, self.flusher)
        self.stage_of = Children(self.stage, self.flusher)
        self.decisions_of = Children(self.decisions, self.flusher)
        self.actions_of = Children(self.actions, self.flusher)
        self.requests_of = Children(self.requests, self.flusher)
        self.request_seconds_of = Children(self.request_seconds, self.flusher)

    def watch(self, read: Callable[[], dict[str, float]]) -> None:
        """Export the state gauges and counters `read()` returns at each scrape."""
        if self.multiprocess_dir is None:
            self.registry.register(StateCollector(read, self))
        else:
            self.mirror = multiprocess.StateMirror(
                read, self.learner_lag, STATE_METRICS, self.registry, before=self.flush_state
            )

        self.identifies = Counter(
            "arbiter_identifies", "POST /v1/identify answered", ["outcome"], registry=self.registry
        )

        self.intake = Counter(
            "arbiter_intake_messages",
            "Intake stream messages processed by this process's consumer",
            ["outcome"],  # counted, duplicate, identify, dead_letter
            registry=self.registry,
        )
        self.intake_lag = Gauge(
            "arbiter_intake_lag_seconds",
            "Age of the oldest intake message not yet delivered, per shard",
            ["stream"],
            # Read from Redis at each scrape: any worker's latest reading is the value.
            multiprocess_mode="mostrecent",
            registry=self.registry,
        )
        self.intake_pending = Gauge(
            "arbiter_intake_pending",
            "Intake messages delivered but not yet acknowledged, per shard",
            ["stream"],
            # Read from Redis at each scrape: any worker's latest reading is the value.
            multiprocess_mode="mostrecent",
            registry=self.registry,
        )
        self.intake_length = Gauge(
            "arbiter_intake_stream_length",
            "Intake messages held in the stream (unread, pending, not yet trimmed), per shard",
            ["stream"],
            # Read from Redis at each scrape: any worker's latest reading is the value.
            multiprocess_mode="mostrecent",
            registry=self.registry,
        )

    def flush_state(self) -> None:
        """Write the tallies nothing flushes by itself (the collector's pauses)."""
        self.gc_flusher.flush()

    def render(self) -> bytes:
        """The Prometheus text: this process's registry, or every worker's values summed."""
        self.flusher.flush()
        self.flush_state()
        if self.multiprocess_dir is None:
            return generate_latest(self.registry)
        if self.mirror is not None:
            self.mirror.sync()
        return multiprocess.render(self.multiprocess_dir)


# name -> (kind, help). Counters end in _total when exported.
STATE_METRICS: dict[str, tuple[str, str]] = {
    "arbiter_decision_log_queue_depth": ("gauge", "Decision records waiting to be written"),
    "arbiter_decision_log_dropped": (
        "counter",
        "Decision records dropped from the full queue, oldest first, while the sink stalled",
    ),
    "arbiter_decision_log_file_failures": (
        "counter",
        "Batches the JSONL file sink could not append (disk full); they are on the stream",
    ),
    "arbiter_decision_log_written": ("counter", "Decision records written"),
    "arbiter_decision_log_failures": ("counter", "Decision-log batch writes that failed"),
    "arbiter_ratelimit_unavailable": (
        "counter",
        "Requests the rate limiter could not count (Redis down); see ON_REDIS_DOWN",
    ),
    "arbiter_ruleset_reloads": ("counter", "Ruleset versions made live in this worker"),
    "arbiter_ruleset_load_failures": ("counter", "Ruleset versions that did not load here"),
    "arbiter_model_load_failures": ("counter", "Model files that did not load"),
    "arbiter_gc_frozen_objects": (
        "gauge",
        "Objects kept out of the garbage collector's full collections (server.gc_pauses)",
    ),
}


class StateCollector(Collector):
    """Reads state at scrape time, so nothing on the hot path keeps it up to date."""

    def __init__(self, read: Callable[[], dict[str, float]], metrics: Metrics) -> None:
        self.read = read
        self.metrics = metrics

    def collect(self) -> Iterator[Metric]:
        values = self.read()
        for name, (kind, help_text) in STATE_METRICS.items():
            value = float(values.get(name, 0.0))
            family: Any
            if kind == "gauge":
                family = GaugeMetricFamily(name, help_text, value=value)
            else:
                family = CounterMetricFamily(name, help_text, value=value)
            yield family
        rewards = GaugeMetricFamily(
            "arbiter_learner_lag_rewards",
            "Rewards on the stream a learner group has not read yet",
            labels=["group"],
        )
        seconds = GaugeMetricFamily(
            "arbiter_learner_lag_seconds",
            "Age of the oldest reward a learner group has not read yet",
            labels=["group"],
        )
        for group, (count, age) in sorted(self.metrics.learner_lag.items()):
            rewards.add_metric([group], count)
            seconds.add_metric([group], age)
        yield rewards
        yield seconds

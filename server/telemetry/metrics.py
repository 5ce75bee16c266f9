"""Prometheus metrics, one registry per app (tests build many apps in one process).

Counters and histograms are updated where things happen; values that are
state rather than events (log queue depth, drops, learner lag, reloads) are
read from the live objects when `/metrics` is scraped (`StateCollector`).
Every metric is documented in docs/operations.md, with the dashboard and
alerts built on them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from arbiter.server.telemetry import multiprocess

STAGES = ("redis_read", "rules", "models", "bandit", "arbitration", "log", "encode")
_FAST = (0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25)


class Children(dict[Any, Any]):
    """One labelled metric's children by label values, each made once.

    `metric.labels(...)` costs ~1.5 µs a call (label values turned to str under
    a lock); the decide path labels a dozen series per decision, which was
    half of its ~34 µs of metrics. A dict hit costs ~50 ns. Keys are a label
    value, or a tuple of them for a metric with several labels.
    """

    def __init__(self, metric: Any) -> None:
        super().__init__()
        self._metric = metric

    def __missing__(self, key: Any) -> Any:
        child = self._metric.labels(*key) if isinstance(key, tuple) else self._metric.labels(key)
        self[key] = child
        return child


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
        self.latency = Histogram(
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
        self.stage_of = Children(self.stage)
        self.decisions_of = Children(self.decisions)
        self.actions_of = Children(self.actions)
        self.requests_of = Children(self.requests)
        self.request_seconds_of = Children(self.request_seconds)

    def watch(self, read: Callable[[], dict[str, float]]) -> None:
        """Export the state gauges and counters `read()` returns at each scrape."""
        if self.multiprocess_dir is None:
            self.registry.register(StateCollector(read, self))
        else:
            self.mirror = multiprocess.StateMirror(
                read, self.learner_lag, STATE_METRICS, self.registry
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

    def render(self) -> bytes:
        """The Prometheus text: this process's registry, or every worker's values summed."""
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

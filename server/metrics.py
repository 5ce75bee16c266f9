"""Prometheus metrics, one registry per app (tests build many apps in one process)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest


class Metrics:
    """The counters and histograms the server exports on `/metrics`."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.decisions = Counter(
            "arbiter_decisions",
            "Decisions answered",
            ["ruleset", "degraded"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "arbiter_decide_seconds",
            "Time inside the decide handler",
            buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25),
            registry=self.registry,
        )
        self.feedback = Counter(
            "arbiter_feedback", "Feedback received", ["outcome"], registry=self.registry
        )
        self.events = Counter("arbiter_events", "Events ingested", registry=self.registry)
        self.log_dropped = Counter(
            "arbiter_decision_log_dropped",
            "Decision records dropped (queue full)",
            registry=self.registry,
        )
        self.rule_errors = Counter(
            "arbiter_rule_errors",
            "Run-time errors inside rules",
            ["ruleset"],
            registry=self.registry,
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
            registry=self.registry,
        )
        self.intake_pending = Gauge(
            "arbiter_intake_pending",
            "Intake messages delivered but not yet acknowledged, per shard",
            ["stream"],
            registry=self.registry,
        )
        self.intake_length = Gauge(
            "arbiter_intake_stream_length",
            "Intake messages held in the stream (unread, pending, not yet trimmed), per shard",
            ["stream"],
            registry=self.registry,
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)

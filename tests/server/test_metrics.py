"""`/metrics`: per stage, per action, per dependency, read from a real app on real Redis."""

from __future__ import annotations

import asyncio
import shutil
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from support.paths import ROOT_DIR
from support.server import ADMIN, settings

from arbiter.engine.store import keys
from arbiter.engine.store.client import connect, connect_sync
from arbiter.engine.store.profiles import ProfileStore
from arbiter.server.app import create_app
from arbiter.server.telemetry.metrics import STAGES


def samples(client: TestClient) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = client.get("/metrics").text
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(
    found: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str
) -> float:
    return found.get((name, tuple(sorted(labels.items()))), 0.0)


@pytest.fixture
def retail(redis_url: str, tmp_path: Path) -> Iterator[TestClient]:
    # The reference ruleset, with real ONNX models and a VW bandit, in a folder of its own
    # (its models are at ../models, and one of them is broken later on).
    (tmp_path / "rules").mkdir()
    shutil.copy(ROOT_DIR / "rulesets" / "retail.rules", tmp_path / "rules")
    shutil.copytree(ROOT_DIR / "models", tmp_path / "models")
    app = create_app(settings(redis_url, tmp_path, rules_path=str(tmp_path / "rules")))
    with TestClient(app) as c:
        yield c


def test_stages_actions_and_routes(retail: TestClient) -> None:
    retail.put(
        "/v1/profiles/c1",
        json={"visits_30d": 5, "orders_90d": 2, "lifetime_value": 300},
        headers=ADMIN,
    )
    context = {"channel": "web", "page": "/", "device": "mobile", "cart_value": 0}
    answers = [
        retail.post("/v1/decide", json={"customer_id": "c1", "context": context}).json()
        for _ in range(5)
    ]
    first = answers[0]["actions"][0]["action"] if answers[0]["actions"] else "none"
    feedback = {"decision_id": answers[0]["decision_id"], "action": first, "reward": 1}
    assert retail.post("/v1/feedback", json=feedback).status_code in (202, 404)
    found = samples(retail)
    for stage in STAGES:
        assert value(found, "arbiter_decide_stage_seconds_count", stage=stage) == 5, stage
    assert value(found, "arbiter_decide_stage_seconds_sum", stage="models") > 0
    assert value(found, "arbiter_decide_stage_seconds_sum", stage="bandit") > 0
    version = answers[0]["ruleset"]["version"]
    returned: dict[str, int] = {}
    for a in answers:
        for action in a["actions"]:
            returned[action["action"]] = returned.get(action["action"], 0) + 1
    for action, n in returned.items():
        labels = {"ruleset": "retail_web", "version": version, "action": action}
        assert value(found, "arbiter_decision_actions_total", **labels) == n
    route = {"route": "/v1/profiles/{customer_id}", "method": "PUT", "status": "200"}
    assert value(found, "arbiter_http_requests_total", **route) == 1
    decide = {"route": "/v1/decide", "method": "POST", "status": "200"}
    assert value(found, "arbiter_http_requests_total", **decide) == 5
    # The feedback route is a plain Starlette route: still named by its template.
    fed = [
        k
        for k in found
        if k[0] == "arbiter_http_requests_total" and ("route", "/v1/feedback") in k[1]
    ]
    assert len(fed) == 1 and not any(("route", "unmatched") in k[1] for k in found)
    assert "c1" not in retail.get("/metrics").text  # route templates, never customer ids
    assert value(found, "arbiter_ruleset_reloads_total") == 1


def test_model_load_failure_and_ruleset_reloads(retail: TestClient, tmp_path: Path) -> None:
    text = retail.get("/v1/rulesets/retail_web", headers=ADMIN).json()["text"]
    (tmp_path / "models" / "churn.onnx").write_bytes(b"not a model at all")
    r = retail.put("/v1/rulesets/retail_web", content=text.encode(), headers=ADMIN)
    assert r.status_code == 422  # the live version keeps serving
    found = samples(retail)
    assert value(found, "arbiter_model_load_failures_total") == 1
    assert value(found, "arbiter_ruleset_load_failures_total") == 1
    shutil.copy(ROOT_DIR / "models" / "churn.onnx", tmp_path / "models" / "churn.onnx")
    assert (
        retail.put("/v1/rulesets/retail_web", content=text.encode(), headers=ADMIN).status_code
        == 200
    )
    assert value(samples(retail), "arbiter_ruleset_reloads_total") == 2


def test_degraded_by_cause_and_redis_errors(redis_url: str, tmp_path: Path) -> None:
    with TestClient(create_app(settings(redis_url, tmp_path))) as c:
        state = c.app.state.arbiter  # type: ignore[attr-defined]
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            dead_port = s.getsockname()[1]
        dead = connect(f"redis://127.0.0.1:{dead_port}", socket_timeout=0.05)
        real, state.store = state.store, ProfileStore(dead)
        try:
            for _ in range(3):
                r = c.post("/v1/decide", json={"customer_id": "a", "context": {"channel": "app"}})
                assert r.json()["degraded"] is True
        finally:
            state.store = real
            c.portal.call(dead.aclose)  # type: ignore[union-attr]
        found = samples(c)
    assert value(found, "arbiter_degraded_decisions_total", cause="redis_error") == 3
    assert value(found, "arbiter_redis_errors_total", use="decide_read", kind="error") == 3
    assert value(found, "arbiter_decisions_total", ruleset="shop", degraded="true") == 3


def test_log_queue_and_learner_lag(redis_url: str, tmp_path: Path) -> None:
    with TestClient(create_app(settings(redis_url, tmp_path))) as c:
        raw = connect_sync(redis_url)
        try:
            raw.xadd(keys.REWARD_STREAM, {"decision_id": "x", "action": "a", "reward": "1"})
            raw.xgroup_create(keys.REWARD_STREAM, "learner:test", id="0")
            for _ in range(3):
                raw.xadd(keys.REWARD_STREAM, {"decision_id": "x", "action": "a", "reward": "1"})
        finally:
            raw.close()
        c.post("/v1/decide", json={"customer_id": "a"})
        found = samples(c)
    assert value(found, "arbiter_learner_lag_rewards", group="learner:test") == 4
    assert value(found, "arbiter_learner_lag_seconds", group="learner:test") >= 0
    assert ("arbiter_decision_log_queue_depth", ()) in found
    assert value(found, "arbiter_decision_log_dropped_total") == 0


def test_dashboard_uses_only_exported_metrics(redis_url: str, tmp_path: Path) -> None:
    import json
    import re

    dashboard = json.loads((ROOT_DIR / "docs" / "grafana" / "arbiter.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    used = {
        re.sub(r"_(bucket|count|sum)$", "", m) for e in exprs for m in re.findall(r"arbiter_\w+", e)
    }
    with TestClient(create_app(settings(redis_url, tmp_path))) as c:
        c.post("/v1/decide", json={"customer_id": "a", "context": {"channel": "web"}})
        text = c.get("/metrics").text
    exported = {f.name for f in text_string_to_metric_families(text)}
    exported |= {f"{n}_total" for n in exported}
    assert used and used <= exported, used - exported


def test_redis_errors_off_the_hot_path_are_counted(redis_url: str, tmp_path: Path) -> None:
    with TestClient(create_app(settings(redis_url, tmp_path))) as c:
        state = c.app.state.arbiter  # type: ignore[attr-defined]
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            dead_port = s.getsockname()[1]
        dead = connect(f"redis://127.0.0.1:{dead_port}", socket_timeout=0.05)
        real, state.admin_store = state.admin_store, ProfileStore(dead)
        try:
            r = c.get("/v1/profiles/a", headers=ADMIN)
            assert r.status_code == 503 and r.json()["error"]["code"] == "unavailable"
        finally:
            state.admin_store = real
            c.portal.call(dead.aclose)  # type: ignore[union-attr]
        found = samples(c)
    assert value(found, "arbiter_redis_errors_total", use="admin", kind="error") == 1


def test_children_are_made_once_and_count_in_their_metric() -> None:
    from arbiter.server.telemetry.metrics import Metrics

    m = Metrics()
    first = m.actions_of["retail", "v1", "welcome"]
    assert m.actions_of["retail", "v1", "welcome"] is first
    assert first.child is m.actions.labels("retail", "v1", "welcome")
    for _ in range(3):
        m.actions_of["retail", "v1", "welcome"].inc()
        m.stage_of["rules"].observe(0.0001)
    # Without an event loop to flush behind, every update is written at once.
    assert m.actions.labels("retail", "v1", "welcome")._value.get() == 3
    text = m.render().decode()
    assert (
        'arbiter_decision_actions_total{action="welcome",ruleset="retail",version="v1"} 3.0' in text
    )
    assert 'arbiter_decide_stage_seconds_count{stage="rules"} 3.0' in text
    # Flushed once: a second scrape counts nothing twice.
    assert 'arbiter_decide_stage_seconds_count{stage="rules"} 3.0' in m.render().decode()


@pytest.mark.parametrize(
    "amounts",
    [
        [0.0, 0.00005, 0.00006, 0.0001, 0.002, 0.0049, 0.25, 0.26, 7.0],
        [1e-9, 0.1, 0.1, 0.3],
        [],
    ],
)
def test_a_histogram_tally_lands_in_the_buckets_observe_would_pick(amounts: list[float]) -> None:
    """Bounds are inclusive (`le`), +Inf takes the rest, sums and counts agree."""
    from prometheus_client import CollectorRegistry, Histogram

    from arbiter.server.telemetry.metrics import Flusher, HistogramTally

    buckets = (0.00005, 0.0001, 0.00025, 0.002, 0.005, 0.1, 0.25)
    direct = Histogram("direct", "d", ["stage"], buckets=buckets, registry=CollectorRegistry())
    tallied = Histogram("tallied", "t", ["stage"], buckets=buckets, registry=CollectorRegistry())
    tally = HistogramTally(tallied.labels("x"), Flusher())
    child = direct.labels("x")

    async def in_one_iteration() -> None:
        for amount in amounts:
            child.observe(amount)
            tally.observe(amount)
        # Nothing written until the loop runs the flush queued behind these.
        assert tallied.labels("x")._sum.get() == 0
        await asyncio.sleep(0)
        tally.flush()  # nothing new: nothing added

    asyncio.run(in_one_iteration())

    def samples(h: Histogram) -> list[tuple[str, dict[str, str], float]]:
        return [
            (s.name.split("_", 1)[1], s.labels, s.value)
            for s in next(iter(h.collect())).samples
            if not s.name.endswith("_created")
        ]

    assert samples(tallied) == samples(direct)

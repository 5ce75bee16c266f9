"""`POST /v1/decide` on a ruleset with real ONNX models, loaded at start-up and on PUT.

The app is built on `support.scored`'s ruleset (a customer-level churn model
and a per-offer click model, copied into the test's directory). Scores are
checked against onnxruntime called directly; the logged record names the
versions of the model files that scored it, before and after a PUT that
switches the click model to a retrained file.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from support.scored import (
    LAPSED,
    OFFERS,
    SCORED_RULES,
    expected_churn,
    expected_clicks,
    file_version,
    write_scored,
)
from support.server import ADMIN, settings

from arbiter.engine.log.replay import read_stream, replay
from arbiter.engine.records import DecisionRecord
from arbiter.engine.store import keys
from arbiter.engine.store.client import connect_sync
from arbiter.server.app import create_app
from models.synthetic import make_customers
from models.train import MODELS, export, train


@pytest.fixture
def rules_dir(tmp_path: Path) -> Path:
    write_scored(tmp_path / "rules")
    return tmp_path / "rules"


@pytest.fixture
def client(redis_url: str, rules_dir: Path, tmp_path: Path) -> Iterator[TestClient]:
    # support.server's deadline fits a loaded machine: a degraded decision (no profile,
    # so no model runs) would have no scores.
    app = create_app(settings(redis_url, tmp_path, rules_path=str(rules_dir / "scored.rules")))
    with TestClient(app) as c:
        yield c


def decide(client: TestClient, customer: str) -> dict[str, Any]:
    body = {"customer_id": customer, "context": {"channel": "web"}, "limit": 3}
    r = client.post("/v1/decide", json=body)
    assert r.status_code == 200, r.text
    assert r.json()["degraded"] is False
    out: dict[str, Any] = r.json()
    return out


def logged(client: TestClient, redis_url: str) -> dict[str, DecisionRecord]:
    client.portal.call(client.app.state.arbiter.log.flush)  # type: ignore[attr-defined,union-attr]
    redis = connect_sync(redis_url)
    try:
        return {r.decision_id: r for r in read_stream(redis, keys.DECISION_STREAM)}
    finally:
        redis.close()


def test_decisions_over_http_are_scored_by_the_models(
    client: TestClient, redis_url: str, rules_dir: Path
) -> None:
    assert client.put("/v1/profiles/lapsed", json=LAPSED, headers=ADMIN).status_code == 200
    d = decide(client, "lapsed")
    clicks = expected_clicks(rules_dir, LAPSED, list(OFFERS))
    want = sorted(
        ((n, c * OFFERS[n][0]) for n, c in zip(OFFERS, clicks, strict=True)), key=lambda x: -x[1]
    )
    assert [(a["action"], a["score"]) for a in d["actions"]] == [
        (n, pytest.approx(s, rel=1e-6)) for n, s in want
    ]
    assert d["degraded"] is False

    record = logged(client, redis_url)[d["decision_id"]]
    assert record.scores["churn"] == pytest.approx([expected_churn(rules_dir, LAPSED)], rel=1e-6)
    assert record.scores["offer_click"] == pytest.approx(clicks, rel=1e-6)
    assert record.model_versions == {
        "churn": file_version(rules_dir / "churn.onnx"),
        "offer_click": file_version(rules_dir / "offer_click.onnx"),
    }
    plan = client.app.state.arbiter.rulesets.get("scored").plan  # type: ignore[attr-defined]
    assert replay(plan, record).identical


def test_a_put_loads_its_models_and_the_record_names_the_new_version(
    client: TestClient, redis_url: str, rules_dir: Path
) -> None:
    assert client.put("/v1/profiles/lapsed", json=LAPSED, headers=ADMIN).status_code == 200
    before = decide(client, "lapsed")
    # A retrained click model (other rows, other seed), in a file of its own.
    spec = next(s for s in MODELS if s.name == "offer_click")
    retrained = export(train(spec, make_customers(2_000, seed=3), seed=3), rules_dir / "v2")
    assert file_version(retrained) != file_version(rules_dir / "offer_click.onnx")
    text = SCORED_RULES.replace('onnx "offer_click.onnx"', 'onnx "v2/offer_click.onnx"')
    r = client.put("/v1/rulesets/scored", content=text.encode(), headers=ADMIN)
    assert r.status_code == 200, r.text

    after = decide(client, "lapsed")
    clicks = expected_clicks(rules_dir / "v2", LAPSED, list(OFFERS))
    scores = {a["action"]: a["score"] for a in after["actions"]}
    assert scores == {
        n: pytest.approx(c * OFFERS[n][0], rel=1e-6) for n, c in zip(OFFERS, clicks, strict=True)
    }
    records = logged(client, redis_url)
    assert records[before["decision_id"]].model_versions["offer_click"] == file_version(
        rules_dir / "offer_click.onnx"
    )
    assert records[after["decision_id"]].model_versions == {
        "churn": file_version(rules_dir / "churn.onnx"),
        "offer_click": file_version(retrained),
    }
    assert records[after["decision_id"]].scores["offer_click"] == pytest.approx(clicks, rel=1e-6)
    assert after["ruleset"]["version"] != before["ruleset"]["version"]

"""Decisions scored by real ONNX models, in-process: real Redis, real onnxruntime, no fakes.

`support.scored`'s ruleset has a customer-level churn model (used in a
condition) and a per-offer click model (one batched run per decision, used in
the arbitration formula). Every score is checked against onnxruntime called
directly on the same rows, and the record names both models' versions.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from support.redis import run_with_client
from support.scored import (
    LAPSED,
    LOYAL,
    OFFERS,
    expected_churn,
    expected_clicks,
    file_version,
    write_scored,
)

from arbiter import dsl
from arbiter.engine.codegen.compiler import compile_plan
from arbiter.engine.decision.decide import decide
from arbiter.engine.decision.oracle import LiveOracle
from arbiter.engine.log.replay import replay
from arbiter.engine.records import DecideRequest, Decision, DecisionRecord
from arbiter.engine.scoring.loading import load_models
from arbiter.engine.scoring.onnx import OnnxModel
from arbiter.engine.store.client import AsyncRedisClient
from arbiter.engine.store.profiles import ProfileStore


def decide_live(
    redis_url: str, directory: Path, profile: dict[str, Any]
) -> tuple[Decision, DecisionRecord]:
    path = write_scored(directory)
    plan = compile_plan(dsl.load_checked(path))
    models = load_models(plan, directory)
    assert all(isinstance(m, OnnxModel) for m in models.values())
    now = time.time()

    async def body(client: AsyncRedisClient) -> tuple[Decision, DecisionRecord]:
        store = ProfileStore(client)
        await store.put_profile("c", profile)
        inputs = await store.fetch("c", plan.needs, now)
        request = DecideRequest("c", {"channel": "web"}, limit=3)
        oracle = LiveOracle(models, {})
        return decide(plan, request, inputs, decision_id="d1", now=now, oracle=oracle)

    decision, record = run_with_client(redis_url, body)
    result = replay(plan, record)  # from the record alone: no model is run again
    assert result.identical and result.same_plan
    return decision, record


def test_an_at_risk_customer_is_scored_by_both_models(redis_url: str, tmp_path: Path) -> None:
    decision, record = decide_live(redis_url, tmp_path, LAPSED)
    churn = expected_churn(tmp_path, LAPSED)
    assert churn > 0.5  # so the at_risk rule fires
    offers = list(OFFERS)  # all three are candidates, in declaration order
    clicks = expected_clicks(tmp_path, LAPSED, offers)

    assert record.scores["churn"] == pytest.approx([churn], rel=1e-6)
    # One batched run over the three candidates.
    assert record.scores["offer_click"] == pytest.approx(clicks, rel=1e-6)
    expected = sorted(
        ((name, click * OFFERS[name][0]) for name, click in zip(offers, clicks, strict=True)),
        key=lambda pair: -pair[1],
    )
    assert [(a.action, a.score) for a in decision.actions] == [
        (name, pytest.approx(score, rel=1e-6)) for name, score in expected
    ]
    assert decision.actions[0].action == "retention_voucher"
    assert decision.actions[0].payload == {"code": "STAY20"}
    assert record.model_versions == {
        "churn": file_version(tmp_path / "churn.onnx"),
        "offer_click": file_version(tmp_path / "offer_click.onnx"),
    }
    assert record.errors == [] and decision.degraded is False


def test_a_loyal_customer_skips_the_voucher(redis_url: str, tmp_path: Path) -> None:
    decision, record = decide_live(redis_url, tmp_path, LOYAL)
    assert expected_churn(tmp_path, LOYAL) < 0.5
    offers = ["new_arrivals", "bestsellers"]
    clicks = expected_clicks(tmp_path, LOYAL, offers)
    assert record.scores["churn"] == pytest.approx([expected_churn(tmp_path, LOYAL)], rel=1e-6)
    assert record.scores["offer_click"] == pytest.approx(clicks, rel=1e-6)
    assert [(a.action, a.score) for a in decision.actions] == [
        (name, pytest.approx(click * OFFERS[name][0], rel=1e-6))
        for name, click in zip(offers, clicks, strict=True)
    ]
    assert set(record.model_versions) == {"churn", "offer_click"}


def test_a_missing_model_input_leaves_the_model_unrun(redis_url: str, tmp_path: Path) -> None:
    # No lifetime_value: neither model can be scored, so churn's condition is not true
    # and every offer scores 0, yet stays eligible (docs/models-and-bandits.md).
    partial = {k: v for k, v in LAPSED.items() if k != "lifetime_value"}
    decision, record = decide_live(redis_url, tmp_path, partial)
    assert [(a.action, a.score) for a in decision.actions] == [
        ("new_arrivals", 0.0),
        ("bestsellers", 0.0),
    ]
    assert record.scores == {} and record.model_versions == {}

"""`GET /v1/experiments/{name}` and `arbiter report` over decisions made through the server."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from support.server import ADMIN, settings

from arbiter import dsl
from arbiter.engine.codegen.compiler import compile_plan
from arbiter.engine.decision.decide import assign_variant, in_holdout
from arbiter.engine.log.experiment_stats import GroupCounts, rate_uplift
from arbiter.server.app import create_app
from arbiter.server.cli.main import main

RULES = """ruleset promo
context { page: string }
event purchase { amount: number }
action banner_a { value 1 }
action banner_b { value 1 }
action fallback { value 0 }
if experiment.hero == a { when true offer banner_a } else { when true offer banner_b }
experiment hero { a: 50%, b: 50% } goal purchase within 1d value amount
holdout 20% control goal purchase
default fallback
"""
CUSTOMERS = 100


def buys(i: int, group: str) -> bool:
    """A deterministic purchase pattern: b buys more often than a."""
    return i % (3 if group == "b" else 5) == 0


@pytest.fixture
def setup(redis_url: str, tmp_path: Path) -> Any:
    rules = tmp_path / "promo.rules"
    rules.write_text(RULES)
    plan = compile_plan(dsl.check(dsl.parse(RULES, str(rules))))
    with TestClient(create_app(settings(redis_url, tmp_path, rules_path=str(rules)))) as client:
        events = []
        for i in range(CUSTOMERS):
            for _ in range(1 + i % 2):  # some customers decide twice
                r = client.post(
                    "/v1/decide", json={"customer_id": f"c{i}", "context": {"page": "h"}}
                )
                assert r.status_code == 200, r.text
            group = assign_variant(plan, "hero", f"c{i}")
            if buys(i, group):
                events.append(
                    {
                        "customer_id": f"c{i}",
                        "type": "purchase",
                        "properties": {"amount": 10 + i % 7},
                    }
                )
        assert client.post("/v1/events", json={"events": events}, headers=ADMIN).status_code == 202
        client.portal.call(client.app.state.arbiter.log.flush)  # type: ignore[attr-defined,union-attr]
        yield client, plan, rules


def test_experiment_report_counts_customers_conversions_and_uplift(setup: Any) -> None:
    client, plan, _ = setup
    r = client.get("/v1/experiments/hero?min_customers=10&min_conversions=5", headers=ADMIN)
    assert r.status_code == 200, r.text
    body = r.json()
    groups = {g["name"]: g for g in body["groups"]}
    expected: dict[str, list[int]] = {"a": [0, 0, 0], "b": [0, 0, 0]}
    revenue: dict[str, float] = {"a": 0.0, "b": 0.0}
    for i in range(CUSTOMERS):
        g = assign_variant(plan, "hero", f"c{i}")
        expected[g][0] += 1
        expected[g][1] += 1 + i % 2
        expected[g][2] += buys(i, g)
        revenue[g] += (10 + i % 7) if buys(i, g) else 0
    for g in ("a", "b"):
        got = groups[g]
        assert [got["customers"], got["decisions"], got["conversions"]] == expected[g]
        assert got["mean_reward"] == pytest.approx(revenue[g] / expected[g][0])
    assert body["control"] == "a" and groups["a"]["uplift"] is None
    ref = rate_uplift(
        GroupCounts(expected["a"][0], expected["a"][2]),
        GroupCounts(expected["b"][0], expected["b"][2]),
    )
    assert groups["b"]["uplift"]["p_value"] == pytest.approx(ref.p_value)
    assert body["goal"] == "event purchase within 1d of first exposure, value amount"
    assert 0 < body["sample_ratio_p"] <= 1 and body["sample_ratio_ok"] is True
    # With the default minimum sample (1,000 customers a group), no winner is called.
    body = client.get("/v1/experiments/hero", headers=ADMIN).json()
    assert body["winner"] is None and body["verdict"].startswith("Too early to call")


def test_holdout_report_and_formats(setup: Any) -> None:
    client, plan, _ = setup
    body = client.get("/v1/experiments/holdout?min_customers=1", headers=ADMIN).json()
    groups = {g["name"]: g for g in body["groups"]}
    held = sum(in_holdout(plan, f"c{i}") for i in range(CUSTOMERS))
    assert (groups["control"]["customers"], groups["treated"]["customers"]) == (
        held,
        CUSTOMERS - held,
    )
    assert body["kind"] == "holdout" and body["control"] == "control"
    text = client.get("/v1/experiments/hero?format=text", headers=ADMIN)
    assert text.status_code == 200 and "sample ratio: chi-squared" in text.text
    assert "a (control)" in text.text
    page = client.get("/v1/experiments/hero?format=html", headers=ADMIN)
    assert page.headers["content-type"].startswith("text/html") and "<svg" in page.text


def test_report_errors_name_the_field(setup: Any) -> None:
    client, _, _ = setup
    r = client.get("/v1/experiments/nope", headers=ADMIN)
    assert r.status_code == 404 and r.json()["error"]["code"] == "unknown_experiment"
    r = client.get("/v1/experiments/hero?goal=purchase&within=soon", headers=ADMIN)
    assert r.status_code == 422 and r.json()["error"]["field"] == "within"
    r = client.get("/v1/experiments/hero?goal=refund", headers=ADMIN)
    assert r.status_code == 422 and r.json()["error"]["field"] == "goal"
    r = client.get("/v1/experiments/hero?alpha=2", headers=ADMIN)
    assert r.status_code == 422
    assert client.get("/v1/experiments/hero").status_code == 401


def test_arbiter_report_prints_the_same_figures(
    setup: Any, redis_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    client, _, rules = setup
    api = client.get("/v1/experiments/hero?min_customers=10", headers=ADMIN).json()
    monkeypatch.setenv("ARBITER_REDIS_URL", redis_url)
    assert (
        main(["report", "hero", "--rules", str(rules), "--format", "json", "--min-customers", "10"])
        == 0
    )
    cli = json.loads(capsys.readouterr().out)
    assert cli["groups"] == api["groups"]
    assert main(["report", "hero", "--rules", str(rules)]) == 0
    out = capsys.readouterr().out
    assert "experiment hero of ruleset promo" in out and "verdict: Too early to call" in out
    assert main(["report", "nope", "--rules", str(rules)]) == 1
    assert not math.isnan(api["groups"][1]["uplift"]["absolute"])


def test_a_time_range_in_the_query_and_on_the_command_line(
    setup: Any, redis_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    client, _, rules = setup
    everyone = client.get("/v1/experiments/hero?min_customers=1", headers=ADMIN).json()
    assert everyone["since"] is None and everyone["until"] is None
    # The decisions were made just now: an hour back to now holds them all ...
    now = time.time()
    recent = client.get(
        f"/v1/experiments/hero?min_customers=1&since=1h&until={now + 1}", headers=ADMIN
    ).json()
    assert recent["groups"] == everyone["groups"]
    assert recent["since"] == pytest.approx(now - 3600, abs=60)
    # ... and yesterday none (ISO dates and epoch seconds are both times).
    yesterday = time.strftime("%Y-%m-%d", time.gmtime(now - 86400))
    old = client.get(
        f"/v1/experiments/hero?min_customers=1&since={yesterday}&until={now - 3600:.0f}",
        headers=ADMIN,
    ).json()
    assert old["decisions_read"] == 0 and [g["customers"] for g in old["groups"]] == [0, 0]
    text = client.get("/v1/experiments/hero?format=text&since=2h", headers=ADMIN).text
    assert "decisions read, made from " in text and "to now" in text
    for query, field in (
        ("since=yesterday", "since"),
        ("until=2026-13-01", "until"),
        ("since=1h&until=2h", "until"),  # until before since
    ):
        r = client.get(f"/v1/experiments/hero?{query}", headers=ADMIN)
        assert r.status_code == 422 and r.json()["error"]["field"] == field, (query, r.text)

    monkeypatch.setenv("ARBITER_REDIS_URL", redis_url)
    argv = ["report", "hero", "--rules", str(rules), "--format", "json", "--min-customers", "1"]
    assert main([*argv, "--since", "1h", "--progress"]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["groups"] == everyone["groups"]
    # The bar for each stream read, on stderr, to the end.
    assert "reading decisions: 100%" in captured.err and "reading events: 100%" in captured.err
    assert main([*argv, "--until", "1h", "-q"]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["decisions_read"] == 0 and captured.err == ""
    assert main([*argv, "--since", "soon"]) == 2
    assert "since: 'soon' is not a time" in capsys.readouterr().err

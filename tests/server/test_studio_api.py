"""The studio's endpoints: check, format, try, scenarios, simulate, diff, versions.

On the retail example (its real ONNX models) and real Redis; nothing here
may change what is live except the publish step, which uses the ordinary PUT.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from support.paths import ROOT_DIR
from support.server import ADMIN, settings

from arbiter.server.app import create_app

RETAIL = ROOT_DIR / "rulesets" / "retail.rules"
TEXT = RETAIL.read_text(encoding="utf-8")


@pytest.fixture
def client(redis_url: str, tmp_path: Path) -> Any:
    s = settings(redis_url, tmp_path, rules_path=str(RETAIL))
    with TestClient(create_app(s)) as c:
        yield c


def post(client: TestClient, path: str, **body: Any) -> Any:
    r = client.post(path, json=body, headers=ADMIN)
    return r


def test_check_points_at_the_misspelled_action_with_its_fix(client: TestClient) -> None:
    bad = TEXT.replace("offer welcome_offer priority 1", "offer welcom_offer priority 1")
    line = bad.splitlines().index("when new_visitor offer welcom_offer priority 1") + 1
    r = post(client, "/v1/check", text=bad, ruleset="retail_web")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["ok"] is False
    [d] = [d for d in body["diagnostics"] if d["severity"] == "error"]
    assert (d["code"], d["line"], d["column"]) == ("unknown-action", line, 24)
    assert d["end_column"] == 24 + len("welcom_offer")
    assert d["fix"] == "welcome_offer"
    names = {(s["kind"], s["name"]) for s in body["symbols"]}
    assert {("segment", "vip"), ("action", "welcome_offer"), ("profile", "orders_90d")} <= names
    assert {("context", "channel"), ("event", "add_to_cart"), ("model", "churn")} <= names


def test_check_a_syntax_error_gives_no_symbols_and_activates_nothing(client: TestClient) -> None:
    before = client.get("/v1/rulesets/retail_web", headers=ADMIN).json()
    r = post(client, "/v1/check", text=TEXT.replace("segment browsing =", "segment browsing"))
    body = r.json()
    assert body["ok"] is False and body["symbols"] is None
    assert body["diagnostics"][0]["code"] == "syntax"
    assert client.get("/v1/rulesets/retail_web", headers=ADMIN).json() == before


def test_check_refuses_an_oversized_or_missing_text(client: TestClient) -> None:
    r = post(client, "/v1/check")
    assert r.status_code == 422 and r.json()["error"]["field"] == "text"


def test_format_is_the_cli_formatter(client: TestClient) -> None:
    messy = TEXT.replace(
        "segment vip = profile.lifetime_value > 1000", "segment   vip=profile.lifetime_value>1000"
    )
    r = post(client, "/v1/format", text=messy)
    assert r.status_code == 200
    assert r.json()["text"] == TEXT
    r = post(client, "/v1/format", text="ruleset x\nsegment = 1")
    assert r.status_code == 422 and r.json()["error"]["diagnostics"][0]["line"] == 2


def test_try_a_sample_decides_with_the_engine_and_explains(client: TestClient) -> None:
    r = post(
        client,
        "/v1/studio/try",
        text=TEXT,
        profile={"visits_30d": 6, "orders_90d": 1, "consents": ["email"]},
        context={"channel": "email"},
        events="add_to_cart: 2 3h ago, page_view: 1 2h ago",
    )
    assert r.status_code == 200, r.text
    body = r.json()
    decision = body["decision"]
    assert [a["action"] for a in decision["actions"]] == ["cart_recovery_email"]
    explain = decision["explanation"]
    assert explain["segments"]["cart_abandoner"] is True
    assert any(f["offers"] == "cart_recovery_email" for f in explain["fired"])
    block = body["scenario"]
    assert block.startswith('scenario "this sample gets cart_recovery_email" {')
    assert "expect [cart_recovery_email]" in block and "channel: email" in block
    # the saved block is a scenario that passes
    r = post(client, "/v1/studio/scenarios", text=TEXT + "\n" + block)
    result = r.json()["results"][-1]
    assert result["name"] == "this sample gets cart_recovery_email" and result["passed"]


def test_try_a_bad_sample_names_the_sample(client: TestClient) -> None:
    r = post(client, "/v1/studio/try", text=TEXT, profile={"visits_30d": "many"}, context={})
    assert r.status_code == 422
    err = r.json()["error"]
    assert err["field"] == "sample" and err["diagnostics"][0]["code"] == "scenario-value"


def test_try_a_stored_customer(client: TestClient) -> None:
    r = client.put("/v1/profiles/c1", json={"visits_30d": 1, "orders_90d": 0}, headers=ADMIN)
    assert r.status_code == 200
    r = post(
        client,
        "/v1/studio/try",
        text=TEXT,
        customer_id="c1",
        context={"channel": "web", "page": "/account", "device": "mobile"},
    )
    assert r.status_code == 200, r.text
    assert r.json()["decision"]["actions"][0]["action"] in {"welcome_offer", "personal_recs"}
    assert 'customer "c1"' in r.json()["scenario"]
    r = post(client, "/v1/studio/try", text=TEXT, customer_id="nobody", context={})
    assert r.status_code == 404 and r.json()["error"]["field"] == "customer_id"
    r = client.post("/v1/studio/try", json={"text": TEXT, "customer_id": "c1"})
    assert r.status_code == 401


def test_scenarios_pass_and_fail_with_why(client: TestClient) -> None:
    broken = TEXT.replace('cap 1 per 7d\n  requires consent "email"', "cap 1 per 7d")
    r = post(client, "/v1/studio/scenarios", text=broken)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["failed"] == 1 and body["passed"] == len(body["results"]) - 1
    [bad] = [x for x in body["results"] if not x["passed"]]
    assert bad["name"] == "without email consent no cart email is sent"
    assert bad["expected"] == ["personal_recs"] and bad["got"] == ["cart_recovery_email"]
    [why] = bad["expected_not_returned"]
    assert (
        why["action"] == "personal_recs"
        and why["why"] == "the default: returned only when no other action is left"
    )


def test_simulate_compares_the_draft_with_live(client: TestClient) -> None:
    for i in range(6):
        profile = {"visits_30d": 1 if i % 2 else 9, "orders_90d": i, "lifetime_value": 300 * i}
        client.put(f"/v1/profiles/s{i}", json=profile, headers=ADMIN)
    draft = TEXT.replace(
        "when new_visitor offer welcome_offer priority 1",
        "when new_visitor offer free_shipping priority 1",
    )
    r = post(
        client,
        "/v1/studio/simulate",
        text=draft,
        context={"page": "/account", "device": "mobile"},
        sample=50,
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["customers"] == 6 and len(body["contexts"]) == 3  # web, app, email
    assert body["draft"]["decisions"] == 18 == sum(body["draft"]["overall"].values())
    assert set(body["draft"]["by_channel"]) == {"web", "app", "email"}
    assert body["compared"]["overall"].get("welcome_offer", 0) > 0
    assert "welcome_offer" not in body["draft"]["overall"]
    moves = {(m["from"], m["to"]) for m in body["changes"]["moves"]}
    assert ("welcome_offer", "free_shipping") in moves
    assert body["changes"]["examples"][0]["customer_id"].startswith("s")


def test_diff_publish_versions_rollback(client: TestClient) -> None:
    draft = TEXT.replace("value 5\n", "value 6\n", 1)
    r = post(client, "/v1/studio/diff", text=draft, ruleset="retail_web")
    assert "-  value 5\n+  value 6\n" in r.json()["diff"]
    r = client.put(
        "/v1/rulesets/retail_web", content=draft, headers={**ADMIN, "X-Arbiter-Author": "maria"}
    )
    assert r.status_code == 200, r.text
    r = client.get("/v1/studio/rulesets/retail_web/versions", headers=ADMIN)
    newest, older = r.json()["versions"][:2]
    assert newest["live"] and newest["author"] == "maria" and newest["published_at"] > 0
    assert not older["live"]
    assert client.post("/v1/rulesets/retail_web/rollback", headers=ADMIN).status_code == 200
    r = client.get("/v1/studio/rulesets/retail_web/versions", headers=ADMIN)
    assert [v["live"] for v in r.json()["versions"][:2]] == [False, True]


def test_studio_page_and_assets_are_served(client: TestClient) -> None:
    r = client.get("/studio")
    assert r.status_code == 200 and "text/html" in r.headers["content-type"]
    assert "Rule studio" in r.text
    r = client.get("/studio/static/vendor/codemirror.js")
    assert r.status_code == 200 and "EditorView" in r.text


def test_openapi_documents_the_studio_routes(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    assert {"200", "401", "403", "422"} <= set(paths["/v1/check"]["post"]["responses"])
    assert "409" in paths["/v1/studio/simulate"]["post"]["responses"]
    assert "/studio" not in paths  # the page is not an API


def test_simulate_a_generated_population_against_another_text(client: TestClient) -> None:
    other = TEXT.replace(
        "when new_visitor offer welcome_offer", "when new_visitor offer free_shipping"
    )
    body = {"text": TEXT, "context": {"page": "/account", "device": "mobile"}, "sample": 40}
    r = post(client, "/v1/studio/simulate", **body, population="generated", compare_text=other)
    assert r.status_code == 200, r.text
    answer = r.json()
    assert answer["customers"] == 40 and answer["population"] == "generated"
    assert answer["compared"]["label"] == "the other version"
    assert answer["draft"]["overall"].get("welcome_offer", 0) > 0  # some generated new visitors
    moves = {(m["from"], m["to"]) for m in answer["changes"]["moves"]}
    assert ("free_shipping", "welcome_offer") in moves
    # the same seed: the same population and the same mix every time
    again = post(client, "/v1/studio/simulate", **body, population="generated", compare_text=other)
    assert again.json()["draft"] == answer["draft"]
    r = post(client, "/v1/studio/simulate", **body, compare_text="ruleset retail_web\nsegment")
    assert r.status_code == 422 and r.json()["error"]["field"] == "compare_text"
    r = post(client, "/v1/studio/simulate", **body)  # nothing stored yet
    assert r.status_code == 409 and r.json()["error"]["field"] == "population"

"""`explain` over HTTP and `arbiter decide --explain` give the same object, on real Redis.

One customer with a stored profile, a reached contact cap and two recent rejections;
the same request over `POST /v1/decide` and on the command line. Only what depends on
the clock or on the decision id (the validity message's "now", the bandit's draw) is
set aside before comparing; every other fate must be identical, field for field.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
import redis
from fastapi.testclient import TestClient
from support.paths import CASES_DIR
from support.server import ADMIN, settings

from arbiter.engine.decision.policies import contact_key
from arbiter.engine.store import contact_history, keys
from arbiter.server.app import create_app
from arbiter.server.cli.main import main

FATES = str(CASES_DIR / "explain" / "fates.rules")
CONTEXT = {"channel": "web", "page": "/checkout"}
#: A customer outside the 10% holdout of `fates` (c0 is inside it: a test below uses that).
CUSTOMER = "c1"
HELD = "c0"


def comparable(explanation: dict[str, Any]) -> dict[str, Any]:
    """The explanation without what depends on the clock or on the decision id."""
    out = dict(explanation)
    out.pop("bandits")
    actions = []
    for fate in explanation["actions"]:
        if fate["action"] in ("arm_a", "arm_b"):
            continue  # which arm the bandit draws depends on the decision id
        fate = dict(fate)
        if fate["reason"] == "dates":
            fate.pop("message")
            fate["details"] = {k: v for k, v in fate["details"].items() if k != "now"}
        actions.append(fate)
    out["actions"] = actions
    return out


def test_http_and_cli_explain_alike(
    redis_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    now = time.time()
    client = redis.Redis.from_url(redis_url)
    # A contact, two rejections and the policy's counter, as the after-decision script and
    # feedback keep them (engine/store/contact_history.py, engine/decision/policies.py).
    policy = contact_key("tag", "limited", 7 * 86400)
    history = {
        contact_history.cap_field("capped"): [(now - 3600, "a")],
        contact_history.rejection_field("tired"): [(now - 7200, "0"), (now - 3600, "1")],
        contact_history.cap_field(policy): [(now - 3600, "b")],
    }
    client.hset(
        keys.contact_history(CUSTOMER),
        mapping={f: contact_history.encode(r) for f, r in history.items()},
    )
    client.close()

    app = create_app(settings(redis_url, tmp_path, rules_path=FATES))
    with TestClient(app) as c:
        assert (
            c.put(f"/v1/profiles/{CUSTOMER}", json={"visits": 5}, headers=ADMIN).status_code == 200
        )
        body = {"customer_id": CUSTOMER, "context": CONTEXT, "limit": 2, "explain": True}
        over_http = c.post("/v1/decide", json=body).json()["explanation"]

    monkeypatch.setenv("ARBITER_REDIS_URL", redis_url)
    args = ["decide", "--rules", FATES, "--customer", CUSTOMER, "--context", json.dumps(CONTEXT)]
    assert main([*args, "--limit", "2", "--explain"]) == 0
    on_cli = json.loads(capsys.readouterr().out)["explanation"]

    reasons = {f["action"]: f["reason"] for f in over_http["actions"]}
    assert reasons == {
        "winner": "offered",
        "runner_up": "offered",
        "same_tag": "diversity",
        "email_only": "channel",
        "old_news": "dates",
        "needs_consent": "consent",
        "capped": "cap",
        "tired": "fatigue",
        "hidden": "suppressed",
        "loyal_only": "no-rule",
        "arm_a": reasons["arm_a"],
        "arm_b": reasons["arm_b"],
        "fallback": "standby",
        "over_policy": "policy",
    }
    assert {reasons["arm_a"], reasons["arm_b"]} == {"bandit", "top-n"}
    assert comparable(on_cli) == comparable(over_http)


def test_holdout_over_http_and_cli(
    redis_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    app = create_app(settings(redis_url, tmp_path, rules_path=FATES))
    with TestClient(app) as c:
        body = {"customer_id": HELD, "context": CONTEXT, "explain": True}
        over_http = c.post("/v1/decide", json=body).json()["explanation"]
    monkeypatch.setenv("ARBITER_REDIS_URL", redis_url)
    args = ["decide", "--rules", FATES, "--customer", HELD, "--context", json.dumps(CONTEXT)]
    assert main([*args, "--explain"]) == 0
    on_cli = json.loads(capsys.readouterr().out)["explanation"]
    reasons = {f["action"]: f["reason"] for f in over_http["actions"]}
    assert reasons["winner"] == reasons["hidden"] == "holdout"
    assert reasons["fallback"] == "default"
    assert over_http["holdout"] == "control"
    assert comparable(on_cli) == comparable(over_http)

"""The pytest plugin, used as an outside project uses it: installed, found through `pytest11`.

A temporary project (its own folder and pytest.ini, outside this repository,
no conftest, no import of Arbiter in its tests) holds a ruleset, a decision
log written through the HTTP API, and a changed ruleset; its tests use only
the fixtures. It runs in a fresh `python -m pytest` of the environment where
Arbiter is installed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

from fastapi.testclient import TestClient
from support.server import ADMIN, CASES, settings

from arbiter.server.app import create_app

SHOP = CASES / "shop.rules"

PROJECT_TESTS = """
import pytest

def test_new_visitor_gets_the_welcome_offer(arbiter_ruleset):
    shop = arbiter_ruleset("rules/shop.rules")
    shop.assert_decides(["welcome_offer"], shop.profile(visits=1), {"channel": "web"})

def test_cart_abandoner_by_email(arbiter_ruleset):
    shop = arbiter_ruleset("rules/shop.rules")
    profile = shop.profile(visits=4, consents=["email"])
    events = [shop.event("add_to_cart", "2h")]
    assert shop.actions(profile, {"channel": "email"}, events=events) == ["cart_reminder"]

def test_yesterday_reproduces(arbiter_replay):
    arbiter_replay("logs", rules="rules").assert_reproduces()

def test_the_change_only_moves_new_visitors(arbiter_replay):
    replayed = arbiter_replay("logs", rules="candidate/shop.rules", baseline="rules")
    replayed.assert_no_decision_changes(allow=["bestsellers->welcome_offer"])

def test_value_not_worse(arbiter_evaluate):
    result = arbiter_evaluate("logs", rules="candidate", rewards="rewards.jsonl", resamples=200)
    result.assert_value_not_worse(margin=0.5)
"""

FAILING_TESTS = """
def test_wrong_expectation(arbiter_ruleset):
    shop = arbiter_ruleset("rules/shop.rules")
    shop.assert_decides(["vip_lounge"], shop.profile(visits=1), {"channel": "web"})

def test_unexpected_change(arbiter_replay):
    arbiter_replay("logs", rules="candidate", baseline="rules").assert_no_decision_changes()
"""


def _project(root: Path, redis_url: str, tmp_path: Path) -> None:
    (root / "rules").mkdir(parents=True)
    (root / "candidate").mkdir()
    (root / "logs").mkdir()
    (root / "tests").mkdir()
    text = SHOP.read_text()
    (root / "rules" / "shop.rules").write_text(text)
    (root / "candidate" / "shop.rules").write_text(
        text.replace("profile.visits <= 1", "profile.visits <= 2")
    )
    (root / "pytest.ini").write_text("[pytest]\naddopts = -p no:cacheprovider\n")
    log = root / "logs" / "decisions.jsonl"
    app = create_app(
        settings(redis_url, tmp_path, rules_path=str(root / "rules"), decision_log_file=str(log))
    )
    rewards = []
    with TestClient(app) as c:
        for i, visits in enumerate([1, 2, 2, 5, 7, 1, 2, 3]):
            c.put(f"/v1/profiles/p{i}", json={"visits": visits}, headers=ADMIN)
            answer = c.post(
                "/v1/decide", json={"customer_id": f"p{i}", "context": {"channel": "web"}}
            ).json()
            first = answer["actions"][0]["action"]
            rewards.append({"decision_id": answer["decision_id"], "action": first, "reward": i % 2})
    (root / "rewards.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rewards))


def _pytest(root: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST", "PYTHONPATH"))}
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "tests"],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )


def test_an_outside_project_uses_the_fixtures(redis_url: str, tmp_path: Path) -> None:
    root = tmp_path / "shop-project"
    _project(root, redis_url, tmp_path)
    (root / "tests" / "test_rules.py").write_text(textwrap.dedent(PROJECT_TESTS))
    run = _pytest(root)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "5 passed" in run.stdout

    (root / "tests" / "test_rules.py").unlink()
    (root / "tests" / "test_failing.py").write_text(textwrap.dedent(FAILING_TESTS))
    run = _pytest(root)
    assert run.returncode == 1, run.stdout + run.stderr
    out = run.stdout
    assert "2 failed" in out
    assert "expected ['vip_lounge'], got ['welcome_offer']" in out
    assert "when new_visitor    offer welcome_offer  -> offers welcome_offer" in out
    assert "decisions changed unexpectedly: bestsellers->welcome_offer (3)" in out
    # Both traces of an example: no rule (the default) then, the moved rule now.
    assert "then: no rule fired" in out
    assert "now:  " in out and "candidate/shop.rules:25:1: when new_visitor" in out

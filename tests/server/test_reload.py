"""Ruleset versions across workers: two apps ("workers") on one real Redis.

A PUT or a rollback on one worker reaches the other through its reload loop
(`RulesetManager.watch` → `refresh`). A version that does not load on a
worker (its model file is broken there) is refused by that worker's reload,
which keeps the old version, plan and models answering throughout; once the
file is good again the worker adopts the version by itself.
"""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from support.scored import LAPSED, MODELS_DIR, OFFERS, SCORED_RULES, expected_clicks, write_scored
from support.server import ADMIN, CASES, settings

from arbiter.server.app import create_app

WAIT_S = 10.0  # far above the 50 ms reload interval, for a loaded machine


@contextmanager
def worker(redis_url: str, tmp_path: Path, name: str, rules: Path) -> Iterator[TestClient]:
    app = create_app(settings(redis_url, tmp_path / name, rules_path=str(rules)))
    with TestClient(app) as client:
        yield client


def decide(client: TestClient, customer: str, **context: Any) -> dict[str, Any]:
    body = {"customer_id": customer, "context": context, "limit": 3}
    r = client.post("/v1/decide", json=body)
    assert r.status_code == 200, r.text
    out: dict[str, Any] = r.json()
    assert out["degraded"] is False
    return out


def live_version(client: TestClient, name: str) -> int:
    version: int = client.get(f"/v1/rulesets/{name}", headers=ADMIN).json()["version_no"]
    return version


def wait_for(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while not condition():
        assert time.monotonic() < deadline, f"not within {WAIT_S}s: {what}"
        time.sleep(0.02)


def test_a_put_and_a_rollback_on_one_worker_reach_the_other(redis_url: str, tmp_path: Path) -> None:
    shop = CASES / "shop.rules"
    with (
        worker(redis_url, tmp_path, "a", shop) as a,
        worker(redis_url, tmp_path, "b", shop) as b,
    ):
        assert live_version(a, "shop") == live_version(b, "shop") == 1
        assert decide(b, "nobody", channel="web")["actions"][0]["action"] == "bestsellers"
        text = shop.read_text().replace("default bestsellers", "default app_banner")
        r = a.put("/v1/rulesets/shop", content=text.encode(), headers=ADMIN)
        assert r.status_code == 200 and r.json()["version_no"] == 2, r.text

        wait_for(lambda: live_version(b, "shop") == 2, "worker b adopts version 2")
        # The new default is app-only: a web visitor with no matching rule gets nothing.
        assert decide(b, "nobody", channel="web")["actions"] == []
        assert b.get("/v1/rulesets/shop", headers=ADMIN).json()["text"] == text

        r = a.post("/v1/rulesets/shop/rollback", headers=ADMIN)
        assert r.status_code == 200 and r.json()["version_no"] == 1, r.text
        wait_for(lambda: live_version(b, "shop") == 1, "worker b rolls back to version 1")
        assert decide(b, "nobody", channel="web")["actions"][0]["action"] == "bestsellers"


def test_a_version_that_does_not_load_here_leaves_the_old_one_serving(
    redis_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger="arbiter.rulesets")
    a_rules = write_scored(tmp_path / "a-rules")
    b_rules = write_scored(tmp_path / "b-rules")
    # Version 2 adds a rule offering `fallback` first, so the versions tell apart.
    v2 = SCORED_RULES.replace(
        "default fallback", "when true offer fallback priority 1\ndefault fallback"
    )
    clicks = expected_clicks(MODELS_DIR, LAPSED, list(OFFERS))
    v1_scores = {n: c * OFFERS[n][0] for n, c in zip(OFFERS, clicks, strict=True)}

    def answers_v1(d: dict[str, Any], v1_hash: str) -> None:
        assert d["ruleset"]["version"] == v1_hash
        scores = {x["action"]: x["score"] for x in d["actions"]}
        assert scores == {n: pytest.approx(s, rel=1e-6) for n, s in v1_scores.items()}

    with (
        worker(redis_url, tmp_path, "a", a_rules) as a,
        worker(redis_url, tmp_path, "b", b_rules) as b,
    ):
        assert a.put("/v1/profiles/c", json=LAPSED, headers=ADMIN).status_code == 200
        before = decide(a, "c", channel="web")
        v1_hash = before["ruleset"]["version"]
        answers_v1(before, v1_hash)

        # A broken export lands on worker a's disk. Its loaded session is unaffected.
        (tmp_path / "a-rules" / "offer_click.onnx").write_bytes(b"\x08\x01garbage")
        answers_v1(decide(a, "c", channel="web"), v1_hash)

        # A PUT of version 2 to worker a: refused there (422), version 1 still live.
        r = a.put("/v1/rulesets/scored", content=v2.encode(), headers=ADMIN)
        assert r.status_code == 422, r.text
        assert r.json()["error"]["diagnostics"][0]["code"] == "model-load"
        assert live_version(a, "scored") == 1
        answers_v1(decide(a, "c", channel="web"), v1_hash)

        # The same PUT to worker b, whose files are good: live everywhere, as far as
        # Redis is concerned. Worker a's reload tries it, fails, and keeps version 1.
        r = b.put("/v1/rulesets/scored", content=v2.encode(), headers=ADMIN)
        assert r.status_code == 200, r.text
        v2_no = r.json()["version_no"]
        assert decide(b, "c", channel="web")["actions"][0]["action"] == "fallback"

        during = 0
        failures = lambda: [  # noqa: E731
            rec for rec in caplog.records if f"version {v2_no} does not load here" in rec.message
        ]
        deadline = time.monotonic() + WAIT_S
        while len(failures()) < 2:  # two failed reloads, with decisions all along
            assert time.monotonic() < deadline, "worker a never tried version 2"
            answers_v1(decide(a, "c", channel="web"), v1_hash)
            during += 1
        assert "model-load" in failures()[0].message
        assert live_version(a, "scored") == 1
        answers_v1(decide(a, "c", channel="web"), v1_hash)

        # The file is mended: worker a adopts version 2 on its own.
        shutil.copy(MODELS_DIR / "offer_click.onnx", tmp_path / "a-rules" / "offer_click.onnx")
        wait_for(lambda: live_version(a, "scored") == v2_no, "worker a adopts version 2")
        after = decide(a, "c", channel="web")
        assert after["ruleset"]["version"] != v1_hash
        assert after["actions"][0]["action"] == "fallback"
    assert during >= 1

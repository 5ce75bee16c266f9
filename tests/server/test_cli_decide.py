"""`arbiter decide` validates, converts and decides exactly as `POST /v1/decide` does."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from support.server import ADMIN, CASES, settings

from arbiter.server.app import create_app
from arbiter.server.cli.main import main

TRAPS = str(CASES / "traps.rules")


def cli_decide(
    capsys: pytest.CaptureFixture[str],
    context: dict[str, Any],
    profile: dict[str, Any],
    *extra: str,
) -> dict[str, Any]:
    args = ["decide", "--rules", TRAPS, "--customer", "c1", "--context", json.dumps(context)]
    code = main([*args, "--profile", json.dumps(profile), *extra])
    out = capsys.readouterr()
    assert code == 0, out.err
    answer: dict[str, Any] = json.loads(out.out)
    return answer


def test_iso_times_are_converted(capsys: pytest.CaptureFixture[str]) -> None:
    recent = time.strftime("%Y-%m-%d", time.gmtime(time.time() - 5 * 86400))
    answer = cli_decide(capsys, {"channel": "web"}, {"last_purchase_at": recent}, "--limit", "3")
    assert [a["action"] for a in answer["actions"]] == ["thanks", "browse_more"]


def test_count_of_no_events_is_zero(capsys: pytest.CaptureFixture[str]) -> None:
    answer = cli_decide(capsys, {"channel": "web"}, {})
    assert [a["action"] for a in answer["actions"]] == ["browse_more"]


def test_events_are_counted(capsys: pytest.CaptureFixture[str]) -> None:
    events = json.dumps([{"type": "add_to_cart", "ts": time.time() - 3600}])
    profile = {"consents": ["email"]}
    answer = cli_decide(capsys, {"channel": "email"}, profile, "--events", events)
    assert [a["action"] for a in answer["actions"]] == ["cart_email"]


@pytest.mark.parametrize(
    ("context", "profile", "message"),
    [
        (
            {"channel": "webb"},
            {},
            "error[invalid-value]: context.channel: expected one of web, app, email, got 'webb';"
            " did you mean 'web'?",
        ),
        (
            {},
            {"last_purchase_at": "20 Nov"},
            "error[invalid-value]: profile.last_purchase_at: '20 Nov' is not an ISO-8601 time",
        ),
        (
            {},
            {"consents": "email"},
            "error[invalid-value]: profile.consents: expected a list of strings",
        ),
    ],
)
def test_bad_values_are_refused_with_the_field(
    capsys: pytest.CaptureFixture[str],
    context: dict[str, Any],
    profile: dict[str, Any],
    message: str,
) -> None:
    args = ["decide", "--rules", TRAPS, "--customer", "c1", "--context", json.dumps(context)]
    assert main([*args, "--profile", json.dumps(profile)]) == 1
    err = capsys.readouterr().err
    assert err.strip() == f"arbiter: {message}"


def test_bad_limit_is_refused_as_over_http(capsys: pytest.CaptureFixture[str]) -> None:
    args = ["decide", "--rules", TRAPS, "--customer", "c1", "--profile", "{}", "--limit", "0"]
    assert main(args) == 1
    assert capsys.readouterr().err.strip() == (
        "arbiter: error[invalid-value]: limit: must be between 1 and 50"
    )


def test_cli_and_http_decide_alike(
    redis_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The same customer, as a literal profile on the CLI and stored in Redis over HTTP."""
    recent = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - 3 * 86400))
    cases = [
        ({"channel": "web"}, {"last_purchase_at": recent}, []),
        ({"channel": "email"}, {"consents": ["email"]}, [{"type": "add_to_cart"}]),
        ({"channel": "app"}, {}, []),
    ]
    app = create_app(settings(redis_url, tmp_path, rules_path=TRAPS))
    with TestClient(app) as c:
        for i, (context, profile, events) in enumerate(cases):
            cid = f"c{i}"
            assert c.put(f"/v1/profiles/{cid}", json=profile, headers=ADMIN).status_code == 200
            if events:
                body = {"events": [{"customer_id": cid, **e} for e in events]}
                assert c.post("/v1/events", json=body, headers=ADMIN).status_code == 202
            over_http = c.post(
                "/v1/decide", json={"customer_id": cid, "context": context, "limit": 3}
            ).json()
            extra = ["--limit", "3", "--events", json.dumps(events)]
            on_cli = cli_decide(capsys, context, profile, *extra)
            assert [a["action"] for a in on_cli["actions"]] == [
                a["action"] for a in over_http["actions"]
            ]
        bad = c.post("/v1/decide", json={"customer_id": "c1", "context": {"channel": "webb"}})
        assert bad.status_code == 422
        assert bad.json()["error"]["message"] == (
            "context.channel: expected one of web, app, email, got 'webb'; did you mean 'web'?"
        )

"""The `arbiter` command line, run through `server.cli.main.main` as a user would."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from support.server import ADMIN, CASES, settings

from arbiter.server.app import create_app
from arbiter.server.cli.main import main

SHOP = str(CASES / "shop.rules")


def test_check_ok_and_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", SHOP]) == 0
    assert "shop.rules: ok (0 errors" in capsys.readouterr().out
    assert main(["check", SHOP, "--format", "json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report[0]["ok"] is True


def test_check_reports_errors_with_place(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.rules"
    text = Path(SHOP).read_text().replace("offer vip_lounge", "offer vip_longe")
    bad.write_text(text)
    # Where the misspelt name is, counted from the text (1-based line and column).
    before = text[: text.index("vip_longe")]
    line, col = before.count("\n") + 1, len(before) - before.rfind("\n")
    assert (line, col) == (27, 27)
    assert main(["check", str(bad)]) == 1
    assert capsys.readouterr().out.splitlines() == [
        f"{bad}:27:27: error[unknown-action]: no action named 'vip_longe'",
        "    when vip            offer vip_longe",
        "                              ^^^^^^^^^",
        "  hint: did you mean 'vip_lounge'?",
        f"{bad}: FAILED (1 errors, 0 warnings)",
    ]


def test_check_missing_file(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["check", "no/such.rules"])
    assert "no such file" in str(exc.value)


def test_decide_with_literal_profile(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(
        [
            "decide", "--rules", SHOP, "--customer", "c1",
            "--context", '{"channel": "web"}', "--profile", '{"visits": 1}',
        ]
    )  # fmt: skip
    assert code == 0
    answer = json.loads(capsys.readouterr().out)
    assert answer["actions"][0]["action"] == "welcome_offer"


def test_decide_bad_json_is_a_clear_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["decide", "--rules", SHOP, "--customer", "c1", "--context", "{nope"]) == 2
    assert "arbiter:" in capsys.readouterr().err


def test_replay_jsonl_log(
    redis_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    log = tmp_path / "decisions.jsonl"
    app = create_app(settings(redis_url, tmp_path, decision_log_file=str(log)))
    with TestClient(app) as c:
        c.put("/v1/profiles/c1", json={"visits": 1}, headers=ADMIN)
        for i in range(5):
            body = {"customer_id": f"c{i}", "context": {"channel": "web"}}
            assert c.post("/v1/decide", json=body).status_code == 200
    # The app flushed its log on shutdown.
    assert len(log.read_text().splitlines()) == 5
    assert main(["replay", str(log), "--rules", SHOP]) == 0
    assert "replayed 5: 5 identical" in capsys.readouterr().out

    changed = tmp_path / "shop.rules"
    changed.write_text(
        Path(SHOP).read_text().replace("when new_visitor    offer welcome_offer", "")
    )
    assert main(["replay", str(log), "--rules", str(changed)]) == 0
    out = capsys.readouterr().out
    assert "CHANGED welcome_offer(5) -> bestsellers(1) [new ruleset version]" in out
    assert "1 changed by a new ruleset version" in out


def test_replay_from_redis_stream(
    redis_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with TestClient(create_app(settings(redis_url, tmp_path))) as c:
        for i in range(3):
            c.post("/v1/decide", json={"customer_id": f"r{i}", "context": {"channel": "app"}})
    assert main(["replay", redis_url, "--rules", SHOP]) == 0
    assert "replayed 3: 3 identical" in capsys.readouterr().out


def test_unreachable_redis_is_a_clear_error_not_a_traceback(
    capsys: pytest.CaptureFixture[str],
) -> None:
    # Port 1 on loopback: nothing listens there, the connection is refused at once.
    code = main(["replay", "redis://127.0.0.1:1", "--rules", str(CASES / "shop.rules")])
    err = capsys.readouterr().err
    assert code == 1
    assert err.startswith("arbiter: error[redis-unavailable]: ConnectionError: ")
    assert "Traceback" not in err


def test_a_model_that_cannot_load_is_reported_at_its_declaration(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rules = tmp_path / "m.rules"
    rules.write_text(
        "ruleset m\n"
        "profile { x: number }\n"
        "context { channel: one of [web] }\n"
        'model churn = onnx "missing.onnx" inputs (profile.x)\n'
        "action a { value 1, channels [web] }\n"
        "when churn > 0.5 offer a\n"
    )
    code = main(["decide", "--rules", str(rules), "--customer", "c", "--context", "{}"])
    err = capsys.readouterr().err
    assert code == 1
    assert err.startswith(f"{rules}:4:1: error[model-load]: model churn: cannot load missing.onnx")
    assert "Traceback" not in err

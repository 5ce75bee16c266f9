"""`arbiter ingest FILE.jsonl` end to end: the CLI, real Redis, the windows it feeds."""

from __future__ import annotations

import io
import json
import time
from pathlib import Path
from typing import Any

import pytest
from support.server import CASES
from support.store import DAY, aggregates

from arbiter.engine.plan import AggregateSpec
from arbiter.engine.store import keys, windows
from arbiter.engine.store.client import connect_sync
from arbiter.server.cli.ingest import ingest_main
from arbiter.server.cli.main import main


@pytest.fixture
def env(redis_url: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> str:
    monkeypatch.setenv("ARBITER_REDIS_URL", redis_url)
    monkeypatch.setenv("ARBITER_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.chdir(tmp_path)  # no stray .env file is read
    return redis_url


def write(tmp_path: Path, lines: list[Any], name: str = "events.jsonl") -> Path:
    path = tmp_path / name
    path.write_text(
        "".join((x if isinstance(x, str) else json.dumps(x)) + "\n" for x in lines),
        encoding="utf-8",
    )
    return path


def test_ingest_counts_and_reports(
    env: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    now = time.time()
    lines: list[Any] = []
    for i in range(1200):  # more than two batches
        lines.append(
            {
                "customer_id": f"c{i % 7}",
                "type": "purchase",
                "ts": now - (i % 48) * 1800,
                "event_id": f"o{i}",
                "properties": {"amount": 2.5},
            }
        )
    lines.append("")  # blank lines are skipped, not errors
    lines.append({"customer_id": "c5", "type": "purchase", "event_id": "o5", "ts": now - 10})
    iso = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now - 3600))
    lines.append({"customer_id": "c0", "type": "page_view", "ts": iso})
    path = write(tmp_path, lines)
    assert main(["ingest", str(path), "--batch", "500"]) == 0
    out = capsys.readouterr().out
    assert f"{path}: read 1202 events: 1201 counted, 1 duplicates, 0 invalid" in out
    spec = AggregateSpec("count", "purchase", None, DAY)
    total = sum(aggregates(env, f"c{i}", [spec], now)[0] for i in range(7))
    assert total == sum(1 for i in range(1200) if (i % 48) * 1800 <= DAY)
    client = connect_sync(env)
    try:
        blob = client.hget(keys.windows("c0"), windows.LAST_SEEN_FIELD)
        seen = windows.last_seen_of(blob, "page_view")
    finally:
        client.close()
    assert seen is not None and float(seen) == pytest.approx(now - 3600, abs=1)


def test_running_a_file_twice_counts_ids_once(
    env: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    lines = [{"customer_id": "c", "type": "view", "event_id": f"v{i}"} for i in range(10)]
    path = write(tmp_path, lines)
    assert main(["ingest", str(path)]) == 0
    assert main(["ingest", str(path)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[-1].endswith("read 10 events: 0 counted, 10 duplicates, 0 invalid")


BAD_LINES = [
    ("{nope", None, "not valid JSON"),
    ("[1, 2]", None, "expected a JSON object"),
    ({"type": "view"}, "customer_id", "required"),
    ({"customer_id": "c", "type": "add to cart"}, "type", "letters, digits and _"),
    ({"customer_id": "c", "type": "view", "timestamp": 5}, "timestamp", "unknown field"),
    ({"customer_id": "c", "type": "view", "ts": "yesterday"}, "ts", "ISO-8601"),
    ({"customer_id": "c", "type": "view", "ts": time.time() + 86400}, "ts", "in the future"),
    ({"customer_id": "c", "type": "view", "event_id": 7}, "event_id", "string"),
    ({"customer_id": "c", "type": "view", "properties": [1]}, "properties", "object"),
    ({"customer_id": "c", "type": "v", "properties": {"a|b": 1}}, "properties.a|b", "names"),
    ({"customer_id": "c", "type": "v", "properties": {"x": {"y": 1}}}, "properties.x", "number"),
    ('{"customer_id": "c", "type": "v", "properties": {"x": NaN}}', "properties.x", "finite"),
]


@pytest.mark.parametrize(("line", "field", "words"), BAD_LINES)
def test_an_invalid_line_stops_before_anything_is_written(
    env: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    line: Any,
    field: str | None,
    words: str,
) -> None:
    good = {"customer_id": "c", "type": "view", "event_id": "g1"}
    path = write(tmp_path, [good, good, line, good])
    assert main(["ingest", str(path)]) == 1
    err = capsys.readouterr().err
    where = f"{path}:3: " + (f"{field}: " if field else "")
    assert where in err and words in err, err
    assert "1 of 4 lines invalid; nothing was written" in err
    client = connect_sync(env)
    try:
        assert client.dbsize() == 0
    finally:
        client.close()


def test_skip_invalid_writes_the_rest(
    env: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    lines: list[Any] = [{"customer_id": "c", "type": "view"}] * 3
    lines += ["{broken", {"customer_id": "c"}]
    path = write(tmp_path, lines)
    assert main(["ingest", str(path), "--skip-invalid", "--batch", "2"]) == 0
    captured = capsys.readouterr()
    assert f"{path}:4: not valid JSON" in captured.err
    assert f"{path}:5: type: required" in captured.err
    assert "read 5 events: 3 counted, 0 duplicates, 2 invalid (skipped)" in captured.out


def test_properties_checked_against_the_rules(
    env: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    line = {"customer_id": "c", "type": "purchase", "properties": {"amount": "lots"}}
    path = write(tmp_path, [line])
    assert main(["ingest", str(path), "--rules", str(CASES / "shop.rules")]) == 1
    assert f"{path}:1: properties.amount: expected a number" in capsys.readouterr().err
    assert main(["ingest", str(path)]) == 0  # undeclared checks: strings are kept, not summed


def test_usage_errors(env: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["ingest", str(tmp_path / "missing.jsonl")]) == 2
    path = write(tmp_path, [{"customer_id": "c", "type": "view"}])
    assert main(["ingest", str(path), "--batch", "0"]) == 2
    err = capsys.readouterr().err
    assert "no such file" in err and "--batch must be at least 1" in err


def test_redis_down_is_reported(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    path = write(tmp_path, [{"customer_id": "c", "type": "view", "event_id": "a"}])
    code = ingest_main(str(path), redis_url=lambda: (f"redis://127.0.0.1:{port}", None))
    assert code == 1
    err = capsys.readouterr().err
    assert "failed after 1 lines (0 counted)" in err and "sent again safely" in err


def test_progress_bar_is_drawn_when_asked(redis_url: str, tmp_path: Path) -> None:
    path = write(tmp_path, [{"customer_id": "c", "type": "view"}] * 50)
    err, out = io.StringIO(), io.StringIO()
    code = ingest_main(
        str(path), redis_url=lambda: (redis_url, None), progress=True, out=out, err=err
    )
    assert code == 0
    assert "checking" in err.getvalue() and "ingesting" in err.getvalue()
    assert "100%" in err.getvalue()
    assert "read 50 events: 50 counted" in out.getvalue()


def test_embedded_redis_when_no_url_is_set(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from arbiter.engine.store.embedded import EmbeddedRedis

    monkeypatch.delenv("ARBITER_REDIS_URL", raising=False)
    monkeypatch.setenv("ARBITER_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.chdir(tmp_path)
    path = write(tmp_path, [{"customer_id": "c", "type": "view", "event_id": "e"}])
    assert main(["ingest", str(path)]) == 0
    assert "1 counted" in capsys.readouterr().out
    # The embedded server was stopped (and saved); the next `arbiter serve` sees the events.
    with EmbeddedRedis(tmp_path / "data" / "redis") as server:
        client = connect_sync(server.url)
        try:
            blob = client.hget(keys.windows("c"), windows.LAST_SEEN_FIELD)
            assert windows.last_seen_of(blob, "view") is not None
        finally:
            client.close()


def test_string_properties_the_rules_group_by_are_counted_per_value(
    env: str, tmp_path: Path
) -> None:
    """With `--rules`, a property a ruleset groups by (`max(count(… by category))`) is kept."""
    from support.paths import RULESETS_DIR

    now = time.time()
    views = [("shoes", 1), ("shoes", 2), ("bags", 3), ("shoes", 4)]
    lines = [
        {
            "customer_id": "g",
            "type": "product_view",
            "ts": now - hours * 3600,
            "properties": {"category": category},
        }
        for category, hours in views
    ]
    path = write(tmp_path, lines)
    assert main(["ingest", str(path), "--rules", str(RULESETS_DIR / "fashion.rules")]) == 0
    specs = [
        AggregateSpec("max_count", "product_view", "category", DAY),
        AggregateSpec("distinct", "product_view", "category", 30 * DAY),
    ]
    assert aggregates(env, "g", specs, now) == [3.0, 2.0]
    # Without rules nothing groups by it: the views are counted, their categories not kept.
    other = write(tmp_path, [{**line, "customer_id": "h"} for line in lines], "other.jsonl")
    assert main(["ingest", str(other)]) == 0
    assert aggregates(env, "h", specs, now) == [0.0, 0.0]

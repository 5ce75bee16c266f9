"""Decision log sinks: rotating (and gzipped) JSON-lines files, and `arbiter logs export`."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from support.paths import CASES_DIR
from support.server import settings

from arbiter.engine.log.files import LogReadError, RotatingFiles, log_files, read_records
from arbiter.engine.store import keys
from arbiter.engine.store.client import connect_sync
from arbiter.server.app import create_app
from arbiter.server.cli.logs import TimeArgumentError, parse_time
from arbiter.server.cli.main import main
from arbiter.server.routes.experiments import parse_range

FIXTURE = CASES_DIR / "records" / "v1.jsonl"
LINES = [line.rstrip(b"\n") for line in FIXTURE.read_bytes().splitlines()]


class Clock:
    """A settable clock: the sink's age rotation is tested without waiting."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_rotation_by_size_keeps_every_line_in_order(tmp_path: Path) -> None:
    files = RotatingFiles(tmp_path, max_bytes=3000, clock=Clock(1_796_000_000))
    for i in range(0, 40, 4):
        files.write(LINES[i : i + 4])
    files.close()
    written = log_files([tmp_path])
    assert len(written) == len(files.finished) > 3
    assert all(p.stat().st_size < 3000 + max(map(len, LINES)) * 4 for p in written)
    assert [r.decision_id for r in read_records([tmp_path])] == [
        r.decision_id for r in read_records([FIXTURE])
    ]


def test_rotation_by_age_and_gzip(tmp_path: Path) -> None:
    clock = Clock(1_796_000_000)
    files = RotatingFiles(tmp_path, max_seconds=60, gzip=True, clock=clock)
    files.write(LINES[:10])
    clock.now += 59
    files.write(LINES[10:20])
    assert files.current is not None and files.current.suffix == ".jsonl"
    clock.now += 1
    files.write(LINES[20:40])
    files.close()
    assert [p.name for p in log_files([tmp_path])] == [p.name for p in files.finished]
    assert all(p.name.endswith(".jsonl.gz") for p in files.finished)
    assert [len(gzip.decompress(p.read_bytes()).splitlines()) for p in files.finished] == [20, 20]
    assert not list(tmp_path.glob("*.jsonl"))  # plain files replaced by their .gz
    assert files.finished[0].name.startswith("decisions-20261130T005320-")
    assert len(list(read_records([tmp_path]))) == 40


def test_a_bad_line_is_reported_by_file_and_line(tmp_path: Path) -> None:
    log = tmp_path / "x.jsonl"
    log.write_bytes(LINES[0] + b"\n\n" + b'{"decision_id": 3}\n')
    with pytest.raises(LogReadError, match=r"x.jsonl:3: not a decision record"):
        list(read_records([log]))
    with pytest.raises(LogReadError, match="no such decision log"):
        list(read_records([tmp_path / "missing.jsonl"]))


def test_the_server_writes_rotating_files(redis_url: str, tmp_path: Path) -> None:
    out = tmp_path / "log"
    app = create_app(
        settings(redis_url, tmp_path, decision_log_dir=str(out), decision_log_gzip=True)
    )
    with TestClient(app) as c:
        for i in range(7):
            r = c.post("/v1/decide", json={"customer_id": f"f{i}", "context": {"channel": "web"}})
            assert r.status_code == 200
    # Closed at shutdown, so compressed.
    [done] = log_files([out])
    assert done.name.endswith(".jsonl.gz")
    assert [r.request.customer_id for r in read_records([out])] == [f"f{i}" for i in range(7)]


def test_logs_export_by_time_range(
    redis_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base_ms = 1_796_000_000_000
    client = connect_sync(redis_url)
    try:
        # One record a minute for 40 minutes.
        for i, line in enumerate(LINES):
            client.xadd(keys.DECISION_STREAM, {b"r": line}, id=f"{base_ms + i * 60_000}-0")
    finally:
        client.close()
    ids = [r.decision_id for r in read_records([FIXTURE])]
    out = tmp_path / "export"
    since, until = (base_ms + 5 * 60_000) / 1000, (base_ms + 35 * 60_000) / 1000
    argv = ["logs", "export", redis_url, "--out", str(out), "-q", "--gzip"]
    argv += ["--since", str(since), "--until", str(until), "--max-seconds", "600"]
    assert main(argv) == 0
    assert "exported 30 records" in capsys.readouterr().out
    assert [r.decision_id for r in read_records([out])] == ids[5:35]
    # Ten minutes of records a file, cut on the records' own times.
    sizes = [len(gzip.decompress(p.read_bytes()).splitlines()) for p in log_files([out])]
    assert sizes == [10, 10, 10]

    assert main(["logs", "export", redis_url, "--out", str(tmp_path / "all"), "-q"]) == 0
    assert len(list(read_records([tmp_path / "all"]))) == 40


def test_time_arguments() -> None:
    assert parse_time("1796000000.5") == 1796000000.5
    assert parse_time("2026-11-29T00:00") == 1_795_910_400
    assert parse_time("2026-11-29") == parse_time("2026-11-29T00:00:00+00:00")
    assert parse_time("-2h", now=10_000) == 10_000 - 7200
    assert main(["logs", "export", "--out", "x", "--since", "yesterday"]) == 1


def test_logs_and_reports_read_a_time_the_same_way() -> None:
    # One parser (server/times.py): `-24h` and `24h` both count back from now, in either command.
    assert parse_time("24h", now=100_000) == parse_time("-24h", now=100_000) == 13_600
    now = parse_time("2026-11-29")
    assert parse_range("-1w", "2026-11-29T12:00", now=now) == (
        now - 7 * 86400,
        now + 12 * 3600,
    )
    with pytest.raises(TimeArgumentError, match="is not a time"):
        parse_time("soon")

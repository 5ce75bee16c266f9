"""Replay and evaluate on several cores give what one process gives.

The log: decisions of tests/cases/server/shop.rules made through the
engine's `decide` (random profiles and channels), a few records edited so
they no longer reproduce, written as a plain file and as gzip. It is
replayed against the same rules (mismatches, in log order) and against the
rules with one threshold moved (the what-if report), with one process and
with two workers, forked and spawned, over pieces of several sizes: the
reports must be equal field for field.
"""

from __future__ import annotations

import gzip
import json
import math
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from support.paths import CASES_DIR

from arbiter import dsl
from arbiter.engine.codegen.compiler import compile_plan
from arbiter.engine.decision.decide import decide
from arbiter.engine.decision.oracle import LiveOracle
from arbiter.engine.log.files import (
    LogReadError,
    Piece,
    read_lines,
    read_piece,
    split_logs,
)
from arbiter.engine.log.parallel import (
    ReplayPool,
    ReplaySetup,
    Task,
    chunks_from_files,
    replay_log,
)
from arbiter.engine.log.report import to_json
from arbiter.engine.log.whatif import ExactSum
from arbiter.engine.records import ENCODER, DecideRequest, Inputs
from arbiter.server.cli.main import main

SHOP = CASES_DIR / "server" / "shop.rules"
TAMPERED = (17, 150, 151, 388)  # records edited after logging: must fail, in this order


@pytest.fixture(scope="module")
def logs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, list[str]]:
    """(plain log, gzipped copy, the tampered records' ids) of 400 shop decisions."""
    plan = compile_plan(dsl.load_checked(SHOP))
    rng = random.Random(3)
    lines, ids = [], []
    for i in range(400):
        profile = {
            "visits": rng.randint(0, 4),
            "lifetime_value": rng.choice([0.0, 1500.5, 80.25]),
            "orders_90d": rng.randint(0, 5),
            "consents": ["email"],
        }
        aggregates = {
            "count(add_to_cart within 86400s)": float(rng.randint(0, 1)),
            "count(purchase within 86400s)": 0.0,
        }
        context = {"channel": rng.choice(["web", "app", "email"]), "page": "/"}
        _, record = decide(
            plan,
            DecideRequest(f"c{i}", context),
            Inputs(profile, aggregates, {}, {}),
            decision_id=f"d{i:04d}",
            now=1.796e9 + i,
            oracle=LiveOracle({}, {}),
        )
        if i in TAMPERED and record.actions:
            record.actions[0].score += 0.5
            ids.append(record.decision_id)
        lines.append(ENCODER.encode(record) + b"\n")
        if i % 50 == 0:
            lines.append(b"\n")  # blank lines are allowed and skipped
    assert len(ids) == len(TAMPERED)
    root = tmp_path_factory.mktemp("parallel")
    plain = root / "plain" / "decisions.jsonl"
    plain.parent.mkdir()
    plain.write_bytes(b"".join(lines))
    zipped = root / "gz" / "decisions.jsonl.gz"
    zipped.parent.mkdir()
    zipped.write_bytes(gzip.compress(b"".join(lines)))
    return plain, zipped, ids


@pytest.fixture(scope="module")
def changed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("new") / "shop.rules"
    path.write_text(SHOP.read_text().replace("profile.visits <= 1", "profile.visits <= 2"))
    return path


@pytest.mark.parametrize("piece_bytes", [97, 1000, 4096, 10**9])
def test_pieces_hold_every_line_once_in_order(
    logs: tuple[Path, Path, list[str]], piece_bytes: int
) -> None:
    plain, zipped, _ = logs
    every = [line for _n, line in read_lines(plain)]
    for path, jobs in ((plain, 1), (zipped, 1), (zipped, 2), (zipped, 5)):
        pieces = split_logs([path.parent], jobs=jobs, piece_bytes=piece_bytes)
        assert pieces[-1].end is None and pieces[0].start == 0
        got = [line for piece in pieces for _at, line in read_piece(piece)]
        assert got == every, (path.name, jobs, piece_bytes)
    if piece_bytes == 97:  # a plain file is cut by size, a gzip file only as far as jobs need
        assert len(split_logs([plain], piece_bytes=97)) == math.ceil(plain.stat().st_size / 97)
        assert len(split_logs([zipped], jobs=2, piece_bytes=97)) == 2


def test_a_piece_starting_exactly_on_a_line_keeps_that_line(tmp_path: Path) -> None:
    log = tmp_path / "x.jsonl"
    log.write_bytes(b"aa\nbbb\ncc\n")
    assert list(read_piece(Piece(str(log), 0, 3))) == [(0, b"aa\n")]
    assert list(read_piece(Piece(str(log), 3, 7))) == [(3, b"bbb\n")]
    assert list(read_piece(Piece(str(log), 4, None))) == [(7, b"cc\n")]
    assert list(read_piece(Piece(str(log), 2, 3))) == []
    for size in range(1, 12):  # every cut, down to one byte a piece
        pieces = split_logs([log], piece_bytes=size)
        assert [line for p in pieces for _at, line in read_piece(p)] == [b"aa\n", b"bbb\n", b"cc\n"]


def _report(
    setup: ReplaySetup, tasks: Sequence[Task], jobs: int, method: str | None = None
) -> dict[str, Any]:
    seen: list[int] = []
    report = replay_log(setup, tasks, jobs=jobs, progress=seen.append, method=method)
    assert sum(seen) == report.total  # the progress bar ends at the number of records
    return to_json(report)


def test_replay_reports_are_the_same_for_any_jobs_and_split(
    logs: tuple[Path, Path, list[str]], changed: Path
) -> None:
    plain, zipped, tampered = logs
    same = ReplaySetup((str(SHOP),))
    what_if = ReplaySetup((str(changed),), (str(SHOP),))
    for setup in (same, what_if):
        one = _report(setup, list(chunks_from_files([plain])), 1)
        for tasks, jobs, method in (
            (split_logs([plain]), 1, None),
            (split_logs([plain], jobs=2, piece_bytes=2000), 2, "fork"),
            (split_logs([zipped], jobs=2), 2, "fork"),
            (split_logs([plain], jobs=2, piece_bytes=5000), 2, "spawn"),
        ):
            assert _report(setup, tasks, jobs, method) == one, (len(tasks), jobs, method)
    # The same rules: the edited records fail, listed in log order.
    report = _report(same, split_logs([plain], jobs=2, piece_bytes=2000), 2, "fork")
    assert [m["decision_id"] for m in report["same_version"]["first_mismatches"]] == tampered
    assert report["identical"] == 400 - len(tampered)
    # The new rules change decisions: the report has something to compare.
    report = _report(what_if, split_logs([plain], jobs=2, piece_bytes=2000), 2, "fork")
    assert report["new_version"]["changed"] > 0


def test_workers_are_forked_on_linux_and_spawned_on_request() -> None:
    setup = ReplaySetup((str(SHOP),))
    with ReplayPool(setup, 2, method="fork") as pool:
        assert pool.start_method == "fork"
    with ReplayPool(setup, 1) as pool:
        assert pool.start_method == "none"  # one job: this process


def test_a_bad_line_is_named_by_file_and_line_from_any_piece(
    logs: tuple[Path, Path, list[str]], tmp_path: Path
) -> None:
    plain, _, _ = logs
    lines = plain.read_bytes().splitlines(keepends=True)
    lines[300] = b'{"not": "a record"}\n'
    bad = tmp_path / "bad.jsonl"
    bad.write_bytes(b"".join(lines))
    for jobs, piece_bytes in ((1, 10**9), (2, 3000)):
        with pytest.raises(LogReadError, match=rf"{bad}:301: not a decision record"):
            replay_log(
                ReplaySetup((str(SHOP),)),
                split_logs([bad], jobs=jobs, piece_bytes=piece_bytes),
                jobs=jobs,
                method="fork",
            )


def test_exact_sums_do_not_depend_on_how_the_numbers_are_grouped() -> None:
    rng = random.Random(9)
    numbers = [rng.uniform(-1, 1) * 10 ** rng.randint(-8, 8) for _ in range(2000)]
    whole = ExactSum()
    for x in numbers:
        whole.add(x)
    assert whole.value == math.fsum(numbers)
    for cut in (1, 7, 500, 1999):
        parts = [ExactSum(), ExactSum()]
        for i, x in enumerate(numbers):
            parts[i >= cut].add(x)
        parts[0].merge(parts[1])
        assert parts[0].value == whole.value
    inf = ExactSum()
    inf.add(1.0)
    inf.add(math.inf)
    assert inf.value == math.inf


def test_replay_cli_json_is_the_same_with_two_jobs(
    logs: tuple[Path, Path, list[str]], changed: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    plain, zipped, _ = logs
    outputs = []
    for source, jobs in ((plain, 1), (plain, 2), (zipped, 2)):
        argv = ["replay", str(source), "--rules", str(changed), "--baseline", str(SHOP)]
        assert main([*argv, "-q", "--format", "json", "--jobs", str(jobs)]) == 0
        outputs.append(json.loads(capsys.readouterr().out))
    assert outputs[0] == outputs[1] == outputs[2]
    assert outputs[0]["replayed"] == 400

"""The studio's job pool: try, scenarios and simulate run outside the serving process,
bounded in number (busy → 503) and in time (over the limit → the process is killed, 503)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from support.paths import ROOT_DIR
from support.server import ADMIN, settings

from arbiter.server.app import create_app
from arbiter.server.errors import ApiError
from arbiter.server.settings import Settings, SettingsError
from arbiter.server.studio.pool import JobPool
from arbiter.server.studio.worker import Worker

RETAIL = ROOT_DIR / "rulesets" / "retail.rules"


def test_a_job_runs_in_another_process_and_a_second_request_is_refused_while_busy() -> None:
    async def scenario() -> None:
        pool = JobPool(1, timeout_s=60)
        try:
            async with pool.slot() as slot:
                assert await slot.run(os.getpid) != os.getpid()
                with pytest.raises(ApiError) as busy:
                    async with pool.slot():
                        pass  # never entered: the one worker is taken, so slot() refuses
                assert (busy.value.status, busy.value.code) == (503, "studio_busy")
                assert busy.value.headers["Retry-After"]
            async with pool.slot() as slot:  # free again once the first request is done
                assert await slot.run(abs, -3) == 3
        finally:
            pool.close()

    asyncio.run(scenario())


def test_a_job_over_its_time_limit_is_stopped_and_the_slot_serves_the_next_one() -> None:
    async def scenario() -> None:
        pool = JobPool(1, timeout_s=3)
        try:
            async with pool.slot() as slot:
                await slot.run(os.getpid)  # started: the limit now times the job alone
                assert slot._executor is not None
                processes = list(slot._executor._processes.values())
                with pytest.raises(ApiError) as over:
                    await slot.run(time.sleep, 30)
                assert (over.value.status, over.value.code) == (503, "studio_timeout")
                assert "ARBITER_STUDIO_JOB_TIMEOUT_S" in over.value.message
                assert processes and all(not p.is_alive() for p in processes)  # killed
                assert await slot.run(abs, -2) == 2  # a fresh process
        finally:
            pool.close()

    asyncio.run(scenario())


def test_the_pool_settings_are_checked() -> None:
    assert Settings.from_env({"ARBITER_STUDIO_WORKERS": "3"}, env_file=None).studio_workers == 3
    with pytest.raises(SettingsError, match="ARBITER_STUDIO_WORKERS"):
        Settings.from_env({"ARBITER_STUDIO_WORKERS": "0"}, env_file=None)
    with pytest.raises(SettingsError, match="ARBITER_STUDIO_JOB_TIMEOUT_S"):
        Settings.from_env({"ARBITER_STUDIO_JOB_TIMEOUT_S": "0"}, env_file=None)


def test_a_simulation_over_its_time_limit_is_a_clear_503(redis_url: str, tmp_path: Path) -> None:
    s = settings(redis_url, tmp_path, rules_path=str(RETAIL), studio_job_timeout_s=0.001)
    body: dict[str, Any] = {
        "text": RETAIL.read_text(encoding="utf-8"),
        "context": {"channel": "web"},
        "population": "generated",
        "sample": 2000,
    }
    with TestClient(create_app(s)) as client:
        r = client.post("/v1/studio/simulate", json=body, headers=ADMIN)
        assert r.status_code == 503, r.text
        assert r.json()["error"]["code"] == "studio_timeout"
        assert r.headers["retry-after"]
        # Live decisions are unaffected.
        d = client.post("/v1/decide", json={"customer_id": "c1", "context": {"channel": "web"}})
        assert d.status_code == 200, d.text


def test_while_a_simulation_runs_another_job_is_refused_and_decide_answers(
    redis_url: str, tmp_path: Path
) -> None:
    s = settings(redis_url, tmp_path, rules_path=str(RETAIL), studio_workers=1)
    text = RETAIL.read_text(encoding="utf-8")
    big: dict[str, Any] = {
        "text": text,
        "context": {"channel": "web"},
        "population": "generated",
        "sample": 2000,
    }
    with TestClient(create_app(s)) as client:
        warm = client.post("/v1/studio/scenarios", json={"text": text}, headers=ADMIN)
        assert warm.status_code == 200, warm.text  # the worker process is up
        pool = client.app.state.studio_jobs  # type: ignore[attr-defined]
        for slot in pool._all:  # a short limit from now on (a cold start takes longer)
            slot.timeout_s = 0.5
        answers: dict[str, Any] = {}
        simulation = threading.Thread(
            target=lambda: answers.update(
                sim=client.post("/v1/studio/simulate", json=big, headers=ADMIN)
            )
        )
        simulation.start()
        while pool.busy == 0 and simulation.is_alive():
            time.sleep(0.01)
        busy = client.post("/v1/studio/scenarios", json={"text": text}, headers=ADMIN)
        decided = client.post(
            "/v1/decide", json={"customer_id": "c1", "context": {"channel": "web"}}
        )
        simulation.join()
        assert busy.status_code == 503, busy.text
        assert busy.json()["error"]["code"] == "studio_busy"
        assert decided.status_code == 200, decided.text
        # 2,000 customers x 3 channels x 2 versions: 12,000 decisions with three ONNX models
        # each (tens of µs a decision at best), far more than 0.5 s on any machine.
        assert answers["sim"].status_code == 503
        assert answers["sim"].json()["error"]["code"] == "studio_timeout"
        for slot in pool._all:  # the default limit again: the next job starts a process
            slot.timeout_s = s.studio_job_timeout_s
        after = client.post("/v1/studio/scenarios", json={"text": text}, headers=ADMIN)
        assert after.status_code == 200, after.text  # a fresh worker took over


_PREPARED = """
import asyncio, os
from arbiter.dsl import parser
from arbiter.server.studio.pool import JobPool
from arbiter.server.studio.worker import Worker

async def main():
    pool, checker = JobPool(1, timeout_s=60), Worker()
    try:
        async with pool.slot() as slot:
            in_slot = await slot.run(parser.prepared)
            other = await slot.run(os.getpid) != os.getpid()
        print(in_slot, other, await checker.run(parser.prepared), parser.prepared())
    finally:
        pool.close()
        checker.close()

asyncio.run(main())
"""


def test_every_studio_process_starts_with_the_rules_parser_built() -> None:
    # Building Lark's parser is a third of a second of CPU, which each new job process
    # paid on its first try (many seconds on a loaded machine, past what a page waits):
    # the forkserver builds it once and every process it forks starts with it. In a
    # fresh interpreter, as `arbiter serve` is, so no forkserver started earlier counts.
    run = subprocess.run(
        [sys.executable, "-c", _PREPARED], capture_output=True, text=True, timeout=120, check=False
    )
    assert run.returncode == 0, run.stderr
    # job slot, (in another process), checker worker, and the parent never parsed
    assert run.stdout.split() == ["True", "True", "True", "False"]


def test_worker_processes_are_started_off_the_event_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    # Submitting starts a process, which waits for the forkserver (on a server's first
    # check, for it to load the studio: a second of CPU). On the event loop's thread
    # that stalled every decision meanwhile (/readyz: 1,044 ms at worst, 22 ms since).
    submitted_from: list[threading.Thread] = []
    real_submit = ProcessPoolExecutor.submit

    def spy(self: ProcessPoolExecutor, fn: Any, /, *args: Any, **kwargs: Any) -> Any:
        submitted_from.append(threading.current_thread())
        return real_submit(self, fn, *args, **kwargs)

    monkeypatch.setattr(ProcessPoolExecutor, "submit", spy)

    async def scenario() -> None:
        pool, checker = JobPool(2, timeout_s=60), Worker()
        try:
            pool.warm()
            async with pool.slot() as slot:
                assert await slot.run(abs, -1) == 1
            assert await checker.run(abs, -2) == 2
        finally:
            pool.close()
            checker.close()

    asyncio.run(scenario())
    assert len(submitted_from) >= 2  # the job and the check (and the warm-up, if it got there)
    assert threading.current_thread() not in submitted_from

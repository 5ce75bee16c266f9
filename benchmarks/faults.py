"""The fault matrix: one fault injected into a running, loaded server, per scenario.

Each scenario, on 127.0.0.1 only: a fresh real Redis (TCP, persistent) and
`arbiter serve --workers 2`; a mixed open-loop load (decide, feedback, events)
for `--seconds`; the fault at `--at` seconds; then the verdict: 5xx answers
(a "storm" is any 500, or 5xx going on 2 s after the fault is over), decide latency during and after
the fault, and whether anything accepted is missing from Redis afterwards.

    python -m benchmarks.faults [--seconds 8] [--at 3] [--rate 300] [--only NAME ...]

Scenarios: redis_restart (stopped, started 1 s later on the same port and
files), redis_pause (`DEBUG SLEEP 1`), worker_kill (SIGKILL to one of the two
workers), broken_ruleset (a `.rules` text that does not compile, PUT), model
garbage (an ONNX file overwritten with junk, then the ruleset reloaded),
disk_full (the JSONL decision-log sink on a 256 KiB tmpfs, which fills).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from arbiter.engine.store.client import connect_sync
from arbiter.engine.store.embedded import EmbeddedRedis
from benchmarks import _load
from benchmarks._harness import ROOT, Client, arbiter_argv, free_port, server
from benchmarks.soak import lost, stream_lengths

ADMIN = {"Authorization": "Bearer fault-admin"}
SHOP = "tests/cases/server/shop.rules"
RETAIL_CONTEXT = {"channel": "web", "page": "/", "device": "mobile", "cart_value": 0}


@dataclass
class Ctx:
    """What a fault may act on."""

    redis: EmbeddedRedis
    port: int
    proc: subprocess.Popen[bytes]
    tmp: Path
    notes: dict[str, Any]


def _restart_redis(ctx: Ctx) -> None:
    ctx.redis.stop()
    time.sleep(1.0)
    ctx.redis.start()


def _pause_redis(ctx: Ctx) -> None:
    r = connect_sync(ctx.redis.url)
    try:
        r.execute_command("DEBUG", "SLEEP", "1")
    finally:
        r.close()


def _children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(p) for p in text.split()]


def _kill_worker(ctx: Ctx) -> None:
    # uvicorn's supervisor forks the workers (and a resource tracker): kill one that serves.
    workers = [p for p in _children(ctx.proc.pid) if "spawn_main" in _cmdline(p)]
    ctx.notes["workers_before"] = workers
    os.kill(workers[0], signal.SIGKILL)
    ctx.notes["killed"] = workers[0]


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def _broken_ruleset(ctx: Ctx) -> None:
    client = Client(ctx.port, ADMIN)
    status, body = client.call("GET", "/v1/rulesets/shop")
    text = json.loads(body)["text"].replace("offer welcome_offer", "offer welcom_offer")
    status, _ = client.call("PUT", "/v1/rulesets/shop", text.encode())
    ctx.notes["put_status"] = status


def _garbage_model(ctx: Ctx) -> None:
    (ctx.tmp / "models" / "churn.onnx").write_bytes(b"\x00garbage, not an onnx model" * 100)
    client = Client(ctx.port, ADMIN)
    _, body = client.call("GET", "/v1/rulesets/retail_web")
    status, answer = client.call(
        "PUT", "/v1/rulesets/retail_web", json.loads(body)["text"].encode()
    )
    ctx.notes["reload_status"] = status
    ctx.notes["reload_error"] = json.loads(answer)["error"]["code"] if status != 200 else None


def _disk_full(ctx: Ctx) -> None:
    sink = ctx.notes["sink"]
    ctx.notes["sink_bytes_at_fault"] = Path(sink).stat().st_size if Path(sink).exists() else 0


@dataclass
class Scenario:
    name: str
    fault: Callable[[Ctx], None]
    rules: str = SHOP
    retail: bool = False
    sink_on_tmpfs: bool = False


SCENARIOS = [
    Scenario("redis_restart", _restart_redis),
    Scenario("redis_pause", _pause_redis),
    Scenario("worker_kill", _kill_worker),
    Scenario("broken_ruleset", _broken_ruleset),
    Scenario("model_garbage", _garbage_model, retail=True),
    Scenario("disk_full", _disk_full, sink_on_tmpfs=True),
]


def _mount_tmpfs(path: Path) -> bool:
    path.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(path)], capture_output=True
    )
    return done.returncode == 0


def run_scenario(sc: Scenario, seconds: float, at: float, rate: float) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        redis = EmbeddedRedis(tmp / "redis", port=free_port(), unix_socket=False, persistent=True)
        redis.start()
        mounted = None
        try:
            port = free_port()
            rules = sc.rules
            env = {
                "ARBITER_REDIS_URL": redis.url,
                "ARBITER_ADMIN_KEY": "fault-admin",
                "ARBITER_DATA_DIR": str(tmp / "data"),
                "ARBITER_ACCESS_LOG_SAMPLE": "0",
            }
            notes: dict[str, Any] = {}
            if sc.retail:
                (tmp / "rules").mkdir()
                shutil.copy(ROOT / "rulesets" / "retail.rules", tmp / "rules")
                shutil.copytree(ROOT / "models", tmp / "models")
                rules = str(tmp / "rules")
            if sc.sink_on_tmpfs:
                if _mount_tmpfs(tmp / "disk"):
                    mounted = tmp / "disk"
                    sink = mounted / "decisions.jsonl"
                else:  # no right to mount: a device that is always full
                    sink = Path("/dev/full")
                env["ARBITER_DECISION_LOG_FILE"] = str(sink)
                notes["sink"] = str(sink)
            mix = _load.Mix(
                customers=500, context=RETAIL_CONTEXT if sc.retail else {"channel": "web"}
            )
            with server(arbiter_argv(rules, port, workers=2), port, env) as proc:
                ctx = Ctx(redis, port, proc, tmp, notes)
                before = stream_lengths(redis.url)
                tally = _load.Tally()

                async def drive() -> None:
                    load = asyncio.create_task(
                        _load.run(port, rate, seconds, mix=mix, headers=ADMIN, tally=tally)
                    )
                    await asyncio.sleep(at)
                    started = time.perf_counter()
                    await asyncio.to_thread(sc.fault, ctx)
                    notes["fault_s"] = round(time.perf_counter() - started, 2)
                    await load

                asyncio.run(drive())
                after_status = Client(port, ADMIN).call("GET", "/readyz")[0]
            if mounted is not None:
                notes["sink_bytes_end"] = (mounted / "decisions.jsonl").stat().st_size
            report = _load.report(tally, seconds)
            # Decide's own answer time (send to answer) around the fault: what a page waits.
            during = [
                service
                for t, kind, _status, _lat, service in tally.timeline
                if kind == "decide" and at - 0.5 <= t <= at + 3
            ]
            fault_end = at + notes["fault_s"]
            late = [t for t, _k, st, _l, _s in tally.timeline if st >= 500]
            last_5xx = round(max(late) - fault_end, 2) if late else None
            verdict = {
                "scenario": sc.name,
                **{
                    k: report[k]
                    for k in ("requests", "status_5xx", "status_4xx", "connection_errors")
                },
                "status_500": tally.count(lambda _k, st: st == 500),
                # 503 is the designed answer of a write while Redis is down (with Retry-After);
                # a storm is any 500, or 5xx going on more than 2 s after the fault is over.
                "last_5xx_after_fault_s": last_5xx,
                "storm": tally.count(lambda _k, st: st == 500) > 0
                or (last_5xx is not None and last_5xx > 2.0),
                "decide_p99_ms": round(_load.percentile(tally.latencies["decide"], 0.99) * 1000, 1),
                "decide_service_p99_ms_fault_window": round(
                    _load.percentile(during, 0.99) * 1000, 1
                ),
                "decide_service_max_ms_fault_window": round(max(during, default=0) * 1000, 1),
                "ready_after": after_status,
                **lost(redis.url, tally, before),
                "statuses": report["statuses"],
                "notes": notes,
            }
            return verdict
        finally:
            redis.stop()
            if mounted is not None:
                subprocess.run(["umount", str(mounted)], capture_output=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=8)
    ap.add_argument("--at", type=float, default=3)
    ap.add_argument("--rate", type=float, default=300)
    ap.add_argument("--only", nargs="*", default=None)
    args = ap.parse_args()
    for sc in SCENARIOS:
        if args.only and sc.name not in args.only:
            continue
        print(json.dumps(run_scenario(sc, args.seconds, args.at, args.rate)), flush=True)


if __name__ == "__main__":
    main()

"""Where Redis' CPU per decision goes on the reference workload: commands, bytes, round trips.

    python -m benchmarks.redis_anatomy [--seconds 6] [--rounds 2] [--base <commit>]

Two parts, both against a real `redis-server` on 127.0.0.1 (TCP, as the
reference workload runs):

1. **The server under load.** `arbiter serve` (this checkout, or `--base`'s
   tree) on the cached reference workload (`benchmarks.http`), `wrk` as
   `benchmarks.http` runs it, with feedback for 10% of decisions and
   without. Per decision, from `INFO` deltas: Redis' CPU (user and system
   apart), commands, bytes in and out, read and write events
   (`total_reads_processed`, `total_writes_processed`: one per read or
   write system call on a client socket, so at least one per round trip),
   and the time Redis spent inside commands (`INFO commandstats`) by
   command. What is not command time is the event loop, the system calls
   and the kernel's TCP work on Redis' side.
2. **Each command and script per call, under that load.** One more run
   with Redis' SLOWLOG recording every command (threshold 0): the median
   and mean time of a call by command, scripts by name, and of an
   `EVALSHA` of `return 1` sent by a side client during the run (entering
   Lua and nothing else). Not counted in part 1: the log costs a little.
3. **A round trip alone.** One client sends pipelines of `k` `GET`s of a
   100-byte value, back to back or paced at 1,000 a second (Redis idle
   between them, as at a few thousand decisions a second), and the Redis
   CPU per round trip and per command is printed: what a round trip costs
   whatever is in it.
"""

from __future__ import annotations

import argparse
import socket
import statistics
import subprocess
import tempfile
import threading
import time
from collections import defaultdict
from collections.abc import Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import hiredis

from arbiter.engine.learning import reward_writer
from arbiter.engine.store import contact_history, windows
from arbiter.engine.store.client import connect_sync
from arbiter.engine.store.profiles import AFTER_DECISION_LUA
from arbiter.engine.store.scripts import script_sha
from benchmarks._harness import HOST, baseline_tree, free_port
from benchmarks.ab_commits import layout_of, rdb_of
from benchmarks.http import arbiter, redis_server, reference_inputs, run_wrk, warm

STATS = (
    "total_commands_processed",
    "total_net_input_bytes",
    "total_net_output_bytes",
    "total_reads_processed",
    "total_writes_processed",
)


def snapshot(port: int) -> tuple[dict[str, float], dict[str, tuple[int, int]]]:
    """(cpu and stats counters, commandstats calls/usec by command) of the Redis on `port`."""
    client = connect_sync(f"redis://{HOST}:{port}")
    info = client.info("everything")
    client.close()
    counters = {k: float(info[k]) for k in ("used_cpu_user", "used_cpu_sys", *STATS)}
    commands = {
        k.removeprefix("cmdstat_"): (int(v["calls"]), int(v["usec"]))
        for k, v in info.items()
        if k.startswith("cmdstat_") and k != "cmdstat_info"
    }
    return counters, commands


def per_decision(
    a: tuple[dict[str, float], dict[str, tuple[int, int]]],
    b: tuple[dict[str, float], dict[str, tuple[int, int]]],
    decisions: int,
) -> dict[str, Any]:
    """The deltas between two snapshots, per decision."""
    d = max(1, decisions)
    out: dict[str, Any] = {k: (b[0][k] - a[0][k]) / d for k in b[0]}
    out["commands"] = {
        name: ((calls - a[1].get(name, (0, 0))[0]) / d, (usec - a[1].get(name, (0, 0))[1]) / d)
        for name, (calls, usec) in b[1].items()
    }
    return out


def print_load(name: str, runs: Sequence[dict[str, Any]]) -> None:
    med = statistics.median
    user = med(r["used_cpu_user"] for r in runs) * 1e6
    system = med(r["used_cpu_sys"] for r in runs) * 1e6
    names = {n for r in runs for n in r["commands"]}
    cmds = {
        n: (med(r["commands"].get(n, (0, 0))[0] for r in runs),
            med(r["commands"].get(n, (0, 0))[1] for r in runs))
        for n in names
    }  # fmt: skip
    in_commands = sum(u for _, u in cmds.values())
    print(f"\n{name} (medians of {len(runs)} runs), per decision:")
    print("| Redis CPU | user | system | inside commands | outside |")
    print("|---:|---:|---:|---:|---:|")
    print(
        f"| {user + system:.1f} µs | {user:.1f} µs | {system:.1f} µs | {in_commands:.1f} µs "
        f"| {user + system - in_commands:.1f} µs |"
    )
    print(
        f"commands {med(r['total_commands_processed'] for r in runs):.2f}, "
        f"bytes in {med(r['total_net_input_bytes'] for r in runs):,.0f}, "
        f"out {med(r['total_net_output_bytes'] for r in runs):,.0f}, "
        f"read events {med(r['total_reads_processed'] for r in runs):.3f}, "
        f"write events {med(r['total_writes_processed'] for r in runs):.3f}"
    )
    top = sorted(cmds.items(), key=lambda kv: -kv[1][1])
    print(
        "inside commands (calls/µs): "
        + ", ".join(f"{n} {c:.2f}/{u:.1f}" for n, (c, u) in top if c >= 0.005)
    )


def under_load(opts: argparse.Namespace) -> None:
    rdb, bodies = reference_inputs()
    with tempfile.TemporaryDirectory() as tmp_name, ExitStack() as stack:
        tmp = Path(tmp_name)
        code = baseline_tree(opts.base, tmp / "base") if opts.base else None
        if code is not None and layout_of(code) != windows.LAYOUT_VERSION:
            rdb = rdb_of(layout_of(code))  # the workload as that version stores it
        redis_port = stack.enter_context(redis_server(tmp, rdb))
        port = stack.enter_context(arbiter(redis_port, tmp / "s", "uvicorn", code=code))
        warm(port, "/v1/decide", bodies)
        idle0 = snapshot(redis_port)
        time.sleep(3)
        idle = per_decision(idle0, snapshot(redis_port), 3)
        print(
            f"idle server: Redis CPU {(idle['used_cpu_user'] + idle['used_cpu_sys']) * 1e3:.1f} "
            f"ms/s, {idle['total_commands_processed']:.0f} commands/s"
        )
        runs: dict[str, list[dict[str, Any]]] = {"feedback 10%": [], "no feedback": []}
        for r in range(opts.rounds):
            order = [("feedback 10%", 10), ("no feedback", 0)]
            for name, every in order if r % 2 == 0 else order[::-1]:
                before = snapshot(redis_port)
                load = run_wrk(port, "/v1/decide", bodies, opts.seconds, feedback_every=every)
                time.sleep(0.6)  # the write-behind lingers: let it land
                runs[name].append(per_decision(before, snapshot(redis_port), load.decisions))
                runs[name][-1]["rps"] = load.rps
        for name, got in runs.items():
            print_load(f"{name}, {statistics.median(x['rps'] for x in got):,.0f} decisions/s", got)
        per_call(redis_port, port, bodies, opts.seconds)


SCRIPT_NAMES = {
    script_sha(AFTER_DECISION_LUA): "script: index + contacts (after a decision)",
    script_sha(reward_writer.APPEND_LUA): "script: reward, exactly once (feedback)",
    script_sha(contact_history.RECORD_REJECTION_LUA): "script: rejection counter (feedback)",
}
EMPTY_LUA = "return 1"


def per_call(redis_port: int, port: int, bodies: Sequence[str], seconds: int) -> None:
    """Part 2: µs per call by command and script under the load, from SLOWLOG."""
    client = connect_sync(f"redis://{HOST}:{redis_port}")
    empty = client.script_load(EMPTY_LUA)
    client.config_set("slowlog-max-len", 1_000_000)
    client.slowlog_reset()
    client.config_set("slowlog-log-slower-than", 0)
    stop = threading.Event()

    def enter_lua() -> None:  # ~500 calls a second, beside the server's
        side = connect_sync(f"redis://{HOST}:{redis_port}")
        while not stop.wait(0.002):
            side.evalsha(empty, 0)
        side.close()

    side = threading.Thread(target=enter_lua)
    side.start()
    try:
        load = run_wrk(port, "/v1/decide", bodies, seconds, feedback_every=10)
    finally:
        stop.set()
        side.join()
        client.config_set("slowlog-log-slower-than", 10_000)
    entries = client.slowlog_get(1_000_000)
    client.slowlog_reset()
    client.close()
    times: dict[str, list[int]] = defaultdict(list)
    for entry in entries:
        words = entry["command"].split()
        name = words[0].decode("latin-1").upper()
        if name in ("SLOWLOG", "CONFIG"):
            continue
        if name == "EVALSHA" and len(words) > 1:
            sha = words[1].decode("latin-1")
            name = (
                "EVALSHA of `return 1` (entering Lua)"
                if sha == empty
                else (SCRIPT_NAMES.get(sha, f"script {sha[:8]}"))
            )
        times[name].append(int(entry["duration"]))
    d = max(1, load.decisions)
    print(f"\nPer call under the same load ({load.rps:,.0f} decisions/s, SLOWLOG of every call):")
    print("| command | calls per decision | median µs | mean µs | µs per decision |")
    print("|---|---:|---:|---:|---:|")
    for name, got in sorted(times.items(), key=lambda kv: -sum(kv[1])):
        if len(got) / d < 0.001 and "return 1" not in name:
            continue
        print(
            f"| {name} | {len(got) / d:.3f} | {statistics.median(got):.0f} "
            f"| {statistics.mean(got):.1f} | {sum(got) / d:.2f} |"
        )


def round_trips(n: int = 3000) -> None:
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        proc = subprocess.Popen(
            ["redis-server", "--port", str(port), "--bind", HOST, "--save", "", "--dir", tmp],
            stdout=subprocess.DEVNULL,
        )
        try:
            time.sleep(0.5)
            sock = socket.create_connection((HOST, port))
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            reader = hiredis.Reader()

            def call(commands: Sequence[tuple[str, ...]]) -> list[Any]:
                sock.sendall(b"".join(hiredis.pack_command(c) for c in commands))
                out: list[Any] = []
                while len(out) < len(commands):
                    reply = reader.gets()
                    if reply is False:
                        reader.feed(sock.recv(65536))
                    else:
                        out.append(reply)
                return out

            def cpu() -> float:
                text = call([("INFO", "cpu")])[0].decode()
                info = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
                return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])

            call([("SET", "k", "x" * 100)])
            print("\nA round trip alone: one client, pipelines of k GETs (100-byte value)")
            print("| k | paced | Redis CPU per round trip | per command |")
            print("|---:|---|---:|---:|")
            for k in (1, 5, 20):
                for rate in (0, 1000):
                    c0, t0 = cpu(), time.perf_counter()
                    for i in range(n):
                        call([("GET", "k")] * k)
                        if rate:
                            due = t0 + (i + 1) / rate
                            while (left := due - time.perf_counter()) > 0:
                                time.sleep(max(0.0, left - 0.0002))
                    us = (cpu() - c0) / n * 1e6
                    paced = "1,000/s" if rate else "back to back"
                    print(f"| {k} | {paced} | {us:.1f} µs | {us / k:.1f} µs |")
            sock.close()
        finally:
            proc.terminate()
            proc.wait(timeout=10)


def main() -> None:
    """Both parts; see the module's docstring."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=int, default=6)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--base", default=None, help="serve this commit's tree instead")
    opts = ap.parse_args()
    under_load(opts)
    round_trips()


if __name__ == "__main__":
    main()

"""Redis CPU per ingested event: another commit's ingest script against this checkout's.

    python -m benchmarks.ingest_cost [--base 66d9e57] [--events 4000] [--rounds 6]

Exports `--base`'s package tree (`_harness.baseline_tree`), imports its
`windows.ingest_command` and `profiles.INGEST_LUA` next to this checkout's,
and sends the same kind of events (retail's four types, an amount, times
spread over a year, 400 customers a round, fresh customers every round)
through each, alternately (order reversed every other round), in pipelines
of 100, against the embedded Redis. Prints the Redis CPU (`INFO cpu`) per
event, medians of the rounds. Events arrive about as often as decisions, so
a window layout must not make them dearer.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from arbiter.engine.store.client import connect
from arbiter.engine.store.embedded import EmbeddedRedis
from benchmarks._harness import baseline_tree

TYPES = ["page_view", "product_view", "add_to_cart", "purchase"]
Ingest = tuple[str, Callable[..., tuple[list[str], list[Any]]], Callable[[str], str]]


def load(tree: Path | None) -> Ingest:
    """(INGEST_LUA, ingest_command, keys.alias) of `tree` (None: this checkout)."""
    for name in [m for m in sys.modules if m == "arbiter" or m.startswith("arbiter.")]:
        del sys.modules[name]
    if tree is not None:
        sys.path.insert(0, str(tree))
    try:
        profiles = importlib.import_module("arbiter.engine.store.profiles")
        windows = importlib.import_module("arbiter.engine.store.windows")
        keys = importlib.import_module("arbiter.engine.store.keys")
    finally:
        if tree is not None:
            sys.path.remove(str(tree))
    return profiles.INGEST_LUA, windows.ingest_command, keys.alias


async def measure(url: str, versions: dict[str, Ingest], events: int, rounds: int) -> None:
    client = connect(url, socket_timeout=60)
    shas = {name: await client.script_load(v[0]) for name, v in versions.items()}
    rng = random.Random(3)
    now = time.time()
    got: dict[str, list[float]] = {name: [] for name in versions}

    async def cpu() -> float:
        info = await client.info("cpu")
        return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])

    for r in range(rounds):
        order = list(versions.items())
        for name, (_, command, alias) in order if r % 2 == 0 else order[::-1]:
            calls = []
            for i in range(events):
                customer = f"{name}{r}-c{i % 400}"
                ts = now - rng.uniform(0, 365 * 86400)
                key_list, args = command(
                    customer, rng.choice(TYPES), ts, {"amount": 20.0}, None, now
                )
                key_list = [*key_list, alias(customer)]
                calls.append(("EVALSHA", shas[name], len(key_list), *key_list, *args))
            c0 = await cpu()
            for start in range(0, len(calls), 100):
                pipe = client.pipeline(transaction=False)
                for call in calls[start : start + 100]:
                    pipe.execute_command(*call)
                await pipe.execute()
            got[name].append((await cpu() - c0) / len(calls) * 1e6)
    await client.aclose()
    print(f"Redis CPU per ingested event, medians of {rounds} rounds of {events} events:")
    print("| version | µs per event | per round |")
    print("|---|---:|---|")
    for name, values in got.items():
        rounds_text = ", ".join(f"{v:.1f}" for v in values)
        print(f"| {name} | {statistics.median(values):.1f} | {rounds_text} |")


def main() -> None:
    """Run both versions' ingest alternately and print the table."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--base", default="66d9e57")
    ap.add_argument("--events", type=int, default=4000)
    ap.add_argument("--rounds", type=int, default=6)
    opts = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        versions = {opts.base: load(baseline_tree(opts.base, tmp / "base")), "this": load(None)}
        with EmbeddedRedis(tmp / "redis") as redis:
            asyncio.run(measure(redis.url, versions, opts.events, opts.rounds))


if __name__ == "__main__":
    main()

"""What the identity link check costs Redis in a decision's read (layout 2 of the windows).

The decision's read script (`engine.store.windows.READ_LUA`) runs wrapped by
`engine.store.identity.guarded`: a `GET` of the id's alias key first. This
sends the same reads of an ordinary customer (retail.rules' `Needs`, 200
events over a year) with the plain and with the guarded script, alternately
in one run against a real Redis (the embedded one), and prints
Redis' own time per call of each (`INFO commandstats`, `cmdstat_evalsha`
usec) and their ratio.

    python -m benchmarks.read_guard [--calls 2000] [--rounds 21]
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import random
import statistics
import tempfile
import time
from typing import Any

from arbiter import dsl
from arbiter.engine.codegen.compiler import compile_plan
from arbiter.engine.store import keys, windows
from arbiter.engine.store.client import connect
from arbiter.engine.store.embedded import EmbeddedRedis
from arbiter.engine.store.profiles import READ_LUA, Event, ProfileStore
from benchmarks._harness import ROOT

RULES = ROOT / "rulesets" / "retail.rules"
TYPES = ["page_view", "product_view", "add_to_cart", "purchase"]


async def usec_per_call(
    client: Any, sha: str, key_list: list[str], args: list[Any], n: int
) -> float:
    before = (await client.info("commandstats"))["cmdstat_evalsha"]
    pipe = client.pipeline(transaction=False)
    for _ in range(n):
        pipe.evalsha(sha, len(key_list), *key_list, *args)
    await pipe.execute()
    after = (await client.info("commandstats"))["cmdstat_evalsha"]
    return float(after["usec"] - before["usec"]) / (after["calls"] - before["calls"])


async def measure(url: str, calls: int, rounds: int) -> dict[str, list[float]]:
    plan = compile_plan(dsl.load_checked(RULES))
    client = connect(url, socket_timeout=None)
    store = ProfileStore(client)
    now = time.time()
    rng = random.Random(1)
    events = [
        Event("c", rng.choice(TYPES), now - rng.uniform(0, 365 * 86400), {"amount": 20.0}, None)
        for _ in range(200)
    ]
    await store.add_events(events, now=now)
    await store.put_profile("c", {"visits": 12, "consents": ["email"]})
    key_list, args = windows.read_command("c", plan.needs, now)
    plain = await client.script_load(windows.READ_LUA)
    guarded = await client.script_load(READ_LUA)
    assert guarded == hashlib.sha1(READ_LUA.encode()).hexdigest()
    out: dict[str, list[float]] = {"plain": [], "guarded": []}
    variants = [("plain", plain, key_list), ("guarded", guarded, [*key_list, keys.alias("c")])]
    for i in range(rounds):
        # Alternate which goes first, so neither always follows the other.
        for label, sha, k in variants if i % 2 == 0 else variants[::-1]:
            out[label].append(await usec_per_call(client, sha, k, args, calls))
    await client.aclose()
    return out


def main() -> None:
    """Run the measurement and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=21)
    opts = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, EmbeddedRedis(tmp) as redis:
        result = asyncio.run(measure(redis.url, opts.calls, opts.rounds))
    plain, guarded = statistics.median(result["plain"]), statistics.median(result["guarded"])
    pairs = zip(result["guarded"], result["plain"], strict=True)
    added = statistics.median(g - p for g, p in pairs)
    print(f"read script, Redis usec per call (median of {opts.rounds} rounds of {opts.calls}):")
    print(f"  plain READ_LUA      {plain:7.1f}")
    print(f"  guarded (alias GET) {guarded:7.1f}")
    print(f"  guarded / plain     {guarded / plain:7.2f}")
    print(f"  added per call, median of the rounds' differences: {added:+.1f} usec")


if __name__ == "__main__":
    main()

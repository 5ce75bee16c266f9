"""Redis time of a decision's store work: the contact history hash against layout 1, in one run.

Layout 1 of contact caps and fatigue kept a sorted set per counter: the
decision's read ran a `ZCOUNT` per cap and a `ZRANGE` per fatigue rule, and
the write behind it an alias-guarded script per decision (`RPUSH`/`EXPIRE`
of the log index, then `ZADD`, `ZREMRANGEBYSCORE`, `EXPIRE` per counter).
Now one hash per customer (`engine.store.contact_history`) is read with one
`HMGET` and written with one `HMGET`/`HSET`, and a decision that counted no
contact indexes its log entry with plain `RPUSH`/`EXPIRE`.

This sends both, alternately, against the same customers of a real Redis
(the embedded one): retail.rules' reads (its five cap counters and one
fatigue rule, each holding a few records), 200 events a customer over a
year, and the write of a decision that counted a contact on two counters for
one decision in six (as on the reference workload), none for the others.
The read is sent three ways: layout 1's script, the same script reading the
contact history hash (the first step of this change), and the plain
commands the store sends now (`engine.store.windows.read_commands`). It
prints Redis' own CPU per decision from `INFO cpu` (`used_cpu_user +
used_cpu_sys`: every command, network included) and this client's CPU
(redis-py packing and parsing, what a worker pays), medians of the rounds.
The older scripts (layout 1: commit 088a09d; the script reading the history
hash: cf61426) are kept here only for this comparison.

    python -m benchmarks.redis_cost [--decisions 2000] [--rounds 9]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import tempfile
import time
from collections.abc import Callable
from typing import Any

from arbiter import dsl
from arbiter.engine.codegen.compiler import compile_plan
from arbiter.engine.store import keys, windows
from arbiter.engine.store.client import connect
from arbiter.engine.store.embedded import EmbeddedRedis
from arbiter.engine.store.identity import guarded
from arbiter.engine.store.profiles import AFTER_DECISION_LUA, Event, ProfileStore
from benchmarks._harness import ROOT

RULES = ROOT / "rulesets" / "retail.rules"
TYPES = ["page_view", "product_view", "add_to_cart", "purchase"]
CUSTOMERS = 200
CONTACT_EVERY = 6  # one decision in six counts a contact (the reference workload: 16%)

_LAYOUT1_READ = """
-- KEYS: profile, last-seen, window hash, cap zsets, rejection zsets (see windows.py)
-- ARGV: n_last, last names..., n_series, series fields..., n_caps, cap 'since' values...,
--       n_rejections
local out = {}
out[1] = redis.call('HGETALL', KEYS[1])
local a = 1
local n_last = tonumber(ARGV[a]); a = a + 1
if n_last > 0 then
  out[2] = redis.call('HMGET', KEYS[2], unpack(ARGV, a, a + n_last - 1))
else
  out[2] = {}
end
a = a + n_last
local n_series = tonumber(ARGV[a]); a = a + 1
if n_series > 0 then
  out[3] = redis.call('HMGET', KEYS[3], unpack(ARGV, a, a + n_series - 1))
else
  out[3] = {}
end
a = a + n_series
local n_caps = tonumber(ARGV[a]); a = a + 1
local caps = {}
local key_index = 4
for i = 1, n_caps do
  caps[i] = redis.call('ZCOUNT', KEYS[key_index], '(' .. ARGV[a], '+inf')
  a = a + 1
  key_index = key_index + 1
end
out[4] = caps
local n_rej = tonumber(ARGV[a])
local rej = {}
for i = 1, n_rej do
  rej[i] = redis.call('ZRANGE', KEYS[key_index], 0, -1, 'WITHSCORES')
  key_index = key_index + 1
end
out[5] = rej
return out
"""

_LAYOUT1_AFTER = """
-- KEYS[1] decision index list, KEYS[2..] contact zsets
-- ARGV: stream id, decision id, ttl, now, member, then one cap window per contact key
if ARGV[1] ~= '' then  -- '' = the record was not logged (ARBITER_DECISION_LOG=off)
  redis.call('RPUSH', KEYS[1], 's:' .. ARGV[1], 'd:' .. ARGV[2])
  redis.call('EXPIRE', KEYS[1], ARGV[3])
end
local now = tonumber(ARGV[4])
for i = 2, #KEYS do
  local window = tonumber(ARGV[4 + i])
  redis.call('ZADD', KEYS[i], now, ARGV[5])
  redis.call('ZREMRANGEBYSCORE', KEYS[i], '-inf', now - window)
  redis.call('EXPIRE', KEYS[i], math.floor(window) + 60)
end
return 1
"""


_HISTORY_SCRIPT_READ = """
-- KEYS: profile, last-seen, window hash, contact history (see windows.py)
-- ARGV: n_last, last names..., n_series, series fields..., history fields...
local out = {}
out[1] = redis.call('HGETALL', KEYS[1])
local a = 1
local n_last = tonumber(ARGV[a]); a = a + 1
if n_last > 0 then
  out[2] = redis.call('HMGET', KEYS[2], unpack(ARGV, a, a + n_last - 1))
else
  out[2] = {}
end
a = a + n_last
local n_series = tonumber(ARGV[a]); a = a + 1
if n_series > 0 then
  out[3] = redis.call('HMGET', KEYS[3], unpack(ARGV, a, a + n_series - 1))
else
  out[3] = {}
end
a = a + n_series
if a <= #ARGV then
  out[4] = redis.call('HMGET', KEYS[4], unpack(ARGV, a))
else
  out[4] = {}
end
return out
"""


Queue = Callable[[Any, int], None]


async def per_decision(client: Any, queue: Queue, n: int) -> tuple[float, float]:
    """(Redis used_cpu usec, this client's CPU usec) per decision, `n` decisions in pipelines.

    The client's CPU is redis-py packing the commands and parsing the replies,
    what an Arbiter worker pays for them.
    """
    cpu0 = await client.info("cpu")
    mine0 = time.process_time()
    for start in range(0, n, 100):
        pipe = client.pipeline(transaction=False)
        for i in range(start, min(n, start + 100)):
            queue(pipe, i)
        await pipe.execute()
    mine = time.process_time() - mine0
    cpu1 = await client.info("cpu")
    cpu = sum(float(cpu1[k]) - float(cpu0[k]) for k in ("used_cpu_user", "used_cpu_sys"))
    return cpu * 1e6 / n, mine * 1e6 / n


async def measure(url: str, decisions: int, rounds: int) -> dict[str, list[tuple[float, float]]]:
    plan = compile_plan(dsl.load_checked(RULES))
    needs = plan.needs
    client = connect(url, socket_timeout=None)
    store = ProfileStore(client)
    now = time.time()
    rng = random.Random(1)
    ids = [f"c{i}" for i in range(CUSTOMERS)]
    for cid in ids:
        events = [
            Event(cid, rng.choice(TYPES), now - rng.uniform(0, 365 * 86400), {"amount": 20.0})
            for _ in range(200)
        ]
        await store.add_events(events, now=now)
        await store.put_profile(cid, {"lifetime_value": 120.0, "orders_90d": 2, "consents": []})
    old_read = await client.script_load(guarded(_LAYOUT1_READ))
    old_after = await client.script_load(guarded(_LAYOUT1_AFTER))
    script_read = await client.script_load(guarded(_HISTORY_SCRIPT_READ))
    new_after = await client.script_load(AFTER_DECISION_LUA)
    counters = list(needs.capped_actions)
    fatigued = [action for action, *_ in needs.fatigued_actions]
    # A few contacts and rejections per counter, in both layouts.
    for cid in ids:
        for k in range(3):
            t = now - 3600 * (k + 1)
            contacts = counters[:2]
            key_list, args = store.after_decision_command(
                cid, b"1-0", f"seed{k}", 604800, contacts, t
            )
            await client.evalsha(new_after, len(key_list), *key_list, *args)
            for action, _ in contacts:
                await client.zadd(keys.contacts(cid, action), {f"{t!r}:seed{k}": t})
            for action in fatigued:
                await store.record_rejection(cid, action, t, 30 * 86400)
                await client.zadd(keys.rejections(cid, action), {f"{t!r}:r{k}": t})

    reads = windows._reads(needs)
    head = [
        len(reads.last_fields),
        *reads.last_fields,
        len(reads.series_fields),
        *reads.series_fields,
    ]

    def old_read_call(pipe: Any, i: int) -> None:
        cid = ids[i % CUSTOMERS]
        tag = keys.tag(cid)
        key_list = [tag + keys.PROFILE_SUFFIX, tag + keys.LAST_SEEN_SUFFIX]
        key_list += [tag + keys.WINDOWS_SUFFIX]
        key_list += [keys.contacts(cid, action) for action, _ in counters]
        key_list += [keys.rejections(cid, action) for action in fatigued]
        args = [*head, len(counters), *(repr(now - w) for _, w in counters), len(fatigued)]
        key_list.append(keys.alias(cid))
        pipe.execute_command("EVALSHA", old_read, len(key_list), *key_list, *args)

    def script_read_call(pipe: Any, i: int) -> None:
        cid = ids[i % CUSTOMERS]
        tag = keys.tag(cid)
        key_list = [
            tag + suffix
            for suffix in (
                keys.PROFILE_SUFFIX,
                keys.LAST_SEEN_SUFFIX,
                keys.WINDOWS_SUFFIX,
                keys.HISTORY_SUFFIX,
                keys.ALIAS_SUFFIX,
            )
        ]
        args = [*head, *reads.history_fields]
        pipe.execute_command("EVALSHA", script_read, len(key_list), *key_list, *args)

    def plain_read_call(pipe: Any, i: int) -> None:
        for command in windows.read_commands(ids[i % CUSTOMERS], needs):
            pipe.execute_command(*command)

    def contacts_of(i: int) -> list[tuple[str, int]]:
        return counters[:2] if i % CONTACT_EVERY == 0 else []

    def old_write(pipe: Any, i: int) -> None:
        cid, t, did = ids[i % CUSTOMERS], now + i * 1e-3, f"d{i}"
        contacts = contacts_of(i)
        key_list = [keys.decision_index(cid), *(keys.contacts(cid, a) for a, _ in contacts)]
        args = [b"1-0", did, 604800, repr(t), f"{t!r}:{did}", *(w for _, w in contacts)]
        pipe.execute_command(
            "EVALSHA", old_after, len(key_list) + 1, *key_list, keys.alias(cid), *args
        )

    def new_write(pipe: Any, i: int) -> None:
        cid, t, did = ids[i % CUSTOMERS], now + i * 1e-3, f"d{i}"
        contacts = contacts_of(i)
        if not contacts:  # as engine.log.writer does
            index = keys.decision_index(cid)
            pipe.rpush(index, b"s:1-0", b"d:" + did.encode())
            pipe.expire(index, 604800)
            return
        key_list, args = store.after_decision_command(cid, b"1-0", did, 604800, contacts, t)
        pipe.execute_command("EVALSHA", new_after, len(key_list), *key_list, *args)

    variants = {
        "read, layout 1 (script)": old_read_call,
        "read, history hash (script)": script_read_call,
        "read, history hash (plain commands)": plain_read_call,
        "write, layout 1 (script)": old_write,
        "write, history hash (plain or script)": new_write,
    }
    out: dict[str, list[tuple[float, float]]] = {name: [] for name in variants}
    for r in range(rounds):
        order = list(variants.items())
        for name, queue in order if r % 2 == 0 else order[::-1]:
            out[name].append(await per_decision(client, queue, decisions))
    await client.aclose()
    return out


def main() -> None:
    """Run the comparison and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--decisions", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=9)
    opts = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, EmbeddedRedis(tmp) as redis:
        result = asyncio.run(measure(redis.url, opts.decisions, opts.rounds))
    med = {
        name: (statistics.median(x[0] for x in v), statistics.median(x[1] for x in v))
        for name, v in result.items()
    }
    print(f"Per decision, medians of {opts.rounds} rounds of {opts.decisions} (µs):")
    print("| part | Redis used_cpu | client CPU (redis-py) |")
    print("|---|---:|---:|")
    for name, (redis_us, client_us) in med.items():
        print(f"| {name} | {redis_us:.1f} | {client_us:.1f} |")
    before = med["read, layout 1 (script)"][0] + med["write, layout 1 (script)"][0]
    after = (
        med["read, history hash (plain commands)"][0]
        + med["write, history hash (plain or script)"][0]
    )
    print(f"read + write, Redis: {before:.1f} -> {after:.1f} µs ({after / before:.2f}x)")


if __name__ == "__main__":
    main()

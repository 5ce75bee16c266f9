"""Round trips and latency of a decision's Redis work, with 10 and 200 events per customer.

Prints, in one run, against a real Redis on 127.0.0.1 (TCP):

1. Commands per decision from `INFO commandstats` deltas over a sample of
   decisions, reads and write-behind measured apart (reads first with the log
   held back, then the log flushed). Commands a Lua script runs count there
   too: they are shown separately from the commands the client sent.
2. Round trips per decision counted at the client (each direct command and
   each pipeline `execute` is one), with the decision log writing behind as
   in the server (5 ms linger, batches).
3. Decide latency, in process (store read + rules + log submit, uvloop) and
   over HTTP (`arbiter serve`, one keep-alive connection): median and p99 of
   `--decisions` sequential decisions for customers with 10 and with 200
   events, side by side, with the ratio.

    python -m benchmarks.store_roundtrips [--decisions 2000] [--customers 200] [--sample 200]
        [--grouped]

`--grouped` gives page views a category and adds two grouped windows
(`max(count(page_view within 24h by category))`, `distinct(page_view.category
within 30d)`): the read is still one command, with two more series in its HMGET.
"""

from __future__ import annotations

import argparse
import asyncio
import inspect
import json
import random
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import uvloop

from arbiter import dsl
from arbiter.engine.codegen.compiler import compile_plan
from arbiter.engine.decision.decide import decide
from arbiter.engine.decision.oracle import LiveOracle
from arbiter.engine.log.writer import DecisionLog
from arbiter.engine.plan import Plan
from arbiter.engine.records import DecideRequest
from arbiter.engine.store import windows
from arbiter.engine.store.client import connect
from arbiter.engine.store.embedded import EmbeddedRedis
from arbiter.engine.store.profiles import Event, ProfileStore, grouped_properties
from benchmarks._harness import Client, arbiter_argv, free_port, server, summary

DAY = windows.DAY
LEVELS = (10, 200)
ADMIN = {"Authorization": "Bearer bench-admin"}

# The windows a typical retail ruleset reads (see rulesets/retail.rules): counts over
# 24h and 7d (hourly buckets), a 30d sum/max (daily), a 365d count, last-seen,
# caps, consent and fatigue. No models or bandits: this measures the store.
RULES = """
ruleset profiles_bench

profile { visits_30d: int, lifetime_value: number, orders_90d: int, consents: set<string> }
context { channel: one of [web, app, email] }

event page_view
event add_to_cart { price: number }
event purchase { amount: number, items: number }

segment new_visitor = profile.visits_30d <= 1 and count(purchase within 365d) == 0
segment browsing = count(page_view within 24h) >= 3
segment cart_abandoner = count(add_to_cart within 24h) > 0 and count(purchase within 24h) == 0
segment big_spender = sum(purchase.amount within 30d) > 300 or max(purchase.amount within 30d) > 200
                      or profile.lifetime_value > 2000
segment regular = count(page_view within 7d) >= 10 and avg(add_to_cart.price within 7d) > 20
                  and profile.orders_90d >= 1
segment lapsed = last_seen(page_view) is missing or days_since(last_seen(page_view)) > 14

action welcome_offer { value 5 channels [web, app] cap 1 per 7d }
action cart_reminder {
  value 15 channels [email] cap 2 per 1d requires consent "email"
  suppress after 3 rejections within 30d for 14d
}
action vip_perk { value 20 channels [web, app] cap 3 per 30d }
action browse_tip { value 3 channels [web, app] }
action winback { value 8 channels [email] cap 1 per 14d requires consent "email" }
action bestsellers { value 1 }

when new_visitor offer welcome_offer
when cart_abandoner offer cart_reminder
when big_spender offer vip_perk
when browsing or regular offer browse_tip
when lapsed offer winback
default bestsellers
"""

# `--grouped`: page views carry a category, read per value by two more segments.
GROUPED_RULES = (
    RULES.replace("event page_view\n", "event page_view { category: string }\n")
    + """
segment category_focus = max(count(page_view within 24h by category)) >= 3
segment explorer = distinct(page_view.category within 30d) >= 5
action category_edit { value 4 channels [web, app] }
when category_focus or explorer offer category_edit
"""
)
CATEGORIES = ("dresses", "shoes", "bags", "coats", "hats", "belts", "knitwear", "jeans")


# ----------------------------------------------------------------- the data


def customer(level: int, i: int) -> str:
    return f"e{level}-{i}"


def profile(rng: random.Random) -> dict[str, Any]:
    return {
        "visits_30d": rng.randint(0, 25),
        "lifetime_value": round(rng.uniform(0, 3000), 2),
        "orders_90d": rng.randint(0, 5),
        "consents": ["email"] if rng.random() < 0.5 else [],
    }


def events(cid: str, n: int, now: float, rng: random.Random, grouped: bool = False) -> list[Event]:
    """A month of behaviour: three in four page views, some carts, a few purchases."""
    out = []
    for k in range(n):
        ts = now - rng.uniform(0, 30 * DAY)
        roll = rng.random()
        if roll < 0.75:
            view = {"category": rng.choice(CATEGORIES)} if grouped else {}
            out.append(Event(cid, "page_view", ts, view, f"{cid}-{k}"))
        elif roll < 0.92:
            out.append(Event(cid, "add_to_cart", ts, {"price": rng.uniform(5, 200)}, f"{cid}-{k}"))
        else:
            props = {"amount": rng.uniform(10, 500), "items": rng.randint(1, 5)}
            out.append(Event(cid, "purchase", ts, props, f"{cid}-{k}"))
    return out


async def populate(url: str, n_customers: int, plan: Plan) -> None:
    grouped = grouped_properties([plan.needs])
    client = connect(url, socket_timeout=30)
    store = ProfileStore(client)
    rng = random.Random(42)
    now = time.time()
    try:
        for level in LEVELS:
            batch: list[Event] = []
            for i in range(n_customers):
                cid = customer(level, i)
                await store.put_profile(cid, profile(rng))
                batch += events(cid, level, now, rng, bool(grouped))
                if len(batch) >= 2000:
                    await store.add_events(batch, now=now, grouped=grouped)
                    batch = []
            await store.add_events(batch, now=now, grouped=grouped)
    finally:
        await client.aclose()


# ------------------------------------------------------- counting round trips


class CountingRedis:
    """The real client, counting round trips: each direct command, each pipeline execute."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.round_trips = 0

    def pipeline(self, *args: Any, **kwargs: Any) -> Any:
        pipe = self.inner.pipeline(*args, **kwargs)
        execute = pipe.execute

        async def counted(*a: Any, **k: Any) -> Any:
            self.round_trips += 1
            return await execute(*a, **k)

        pipe.execute = counted
        return pipe

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.inner, name)
        if not callable(attr):
            return attr

        def call(*a: Any, **k: Any) -> Any:
            result = attr(*a, **k)
            if not inspect.isawaitable(result):
                return result  # e.g. register_script

            async def counted() -> Any:
                self.round_trips += 1
                return await result

            return counted()

        return call


def contacts_of(plan: Plan, actions: list[Any]) -> list[tuple[str, int]]:
    out = []
    for a in actions:
        spec = plan.action(a.action)
        if spec.cap is not None:
            out.append((spec.name, spec.cap.window_seconds))
    return out


CHANNELS = ("web", "app", "email")


async def one_decision(
    plan: Plan, store: ProfileStore, log: DecisionLog, cid: str, channel: str, n: int
) -> float:
    """Read, decide, submit to the log; returns the read's share in seconds."""
    now = time.time()
    t0 = time.perf_counter()
    inputs = await store.fetch(cid, plan.needs, now)
    fetched = time.perf_counter() - t0
    decision, record = decide(
        plan,
        DecideRequest(cid, {"channel": channel}),
        inputs,
        decision_id=f"{int(now * 1000):012x}{n:020x}",
        now=now,
        oracle=LiveOracle({}, {}),
    )
    log.submit(record, contacts_of(plan, decision.actions))
    return fetched


def stats_delta(before: dict[str, Any], after: dict[str, Any]) -> dict[str, int]:
    out = {}
    for name, row in after.items():
        calls = row["calls"] - before.get(name, {"calls": 0})["calls"]
        if calls and name != "cmdstat_info":
            out[name.removeprefix("cmdstat_")] = calls
    return out


SENT_BY_CLIENT = {"evalsha", "set", "xadd"}  # everything else below ran inside a script,
# except the write-behind's RPUSH and EXPIRE of a decision that counted no contact: sent
# plainly (engine.log.writer), they are listed with the script's own.


async def commands_per_decision(
    url: str, plan: Plan, n_customers: int, sample: int, level: int
) -> dict[str, dict[str, float]]:
    """Calls per decision by command, reads and write-behind apart (INFO commandstats)."""
    client = connect(url, socket_timeout=5)
    store = ProfileStore(client)
    log = DecisionLog(client, store)
    rng = random.Random(level)
    try:
        await one_decision(plan, store, log, customer(level, 0), "web", 0)  # scripts loaded
        await log.flush()
        s0 = await client.info("commandstats")
        for n in range(sample):
            cid = customer(level, rng.randrange(n_customers))
            await one_decision(plan, store, log, cid, rng.choice(CHANNELS), n + 1)
        s1 = await client.info("commandstats")
        await log.flush()
        s2 = await client.info("commandstats")
    finally:
        await client.aclose()
    usec = s1["cmdstat_evalsha"]["usec"] - s0["cmdstat_evalsha"]["usec"]
    return {
        "read": {k: v / sample for k, v in stats_delta(s0, s1).items()},
        "write-behind": {k: v / sample for k, v in stats_delta(s1, s2).items()},
        "read server µs": {"evalsha": usec / sample},
    }


async def live_run(
    url: str, plan: Plan, n_customers: int, decisions: int, level: int
) -> dict[str, Any]:
    """Sequential decisions with the log writing behind; latency and counted round trips."""
    hot = CountingRedis(connect(url, socket_timeout=None, connect_timeout=0.05))
    background = CountingRedis(connect(url, socket_timeout=None, connect_timeout=5))
    store = ProfileStore(hot, read_deadline_s=0.05)
    log = DecisionLog(background, ProfileStore(background))
    log.start()
    rng = random.Random(level + 1)
    fetch_s: list[float] = []
    decide_s: list[float] = []
    try:
        for n in range(200):  # warm up: connections, scripts, caches
            cid = customer(level, rng.randrange(n_customers))
            await one_decision(plan, store, log, cid, rng.choice(CHANNELS), n)
        await log.flush()
        hot.round_trips = background.round_trips = 0
        batches0 = log.written
        for n in range(decisions):
            cid = customer(level, rng.randrange(n_customers))
            channel = rng.choice(CHANNELS)
            t0 = time.perf_counter()
            fetch_s.append(await one_decision(plan, store, log, cid, channel, 10_000 + n))
            decide_s.append(time.perf_counter() - t0)
            # Between requests the server's loop would be free for the log; so is ours.
            await asyncio.sleep(0)
        await log.flush()
        written = log.written - batches0
        reads_rt = hot.round_trips / decisions
        writes_rt = background.round_trips / written
    finally:
        await log.close()
        await hot.inner.aclose()
        await background.inner.aclose()
    return {
        "fetch": summary(fetch_s),
        "decide": summary(decide_s),
        "read_round_trips": reads_rt,
        "write_round_trips": writes_rt,
    }


# --------------------------------------------------------------------- HTTP


def http_run(
    url: str, rules: Path, tmp: Path, n_customers: int, decisions: int
) -> dict[int, dict[str, float]]:
    port = free_port()
    env = {
        "ARBITER_REDIS_URL": url,
        "ARBITER_ADMIN_KEY": "bench-admin",
        "ARBITER_DATA_DIR": str(tmp / "data"),
        "ARBITER_LEARNER": "off",
    }
    rng = random.Random(7)
    out: dict[int, list[float]] = {level: [] for level in LEVELS}
    with server(arbiter_argv(str(rules), port), port, env):
        client = Client(port)

        def body(level: int) -> bytes:
            cid = customer(level, rng.randrange(n_customers))
            return json.dumps(
                {"customer_id": cid, "context": {"channel": rng.choice(CHANNELS)}}
            ).encode()

        for level in LEVELS:  # warm up
            for _ in range(200):
                client.call("POST", "/v1/decide", body(level))
        # Interleaved blocks, so that both levels see the same machine conditions.
        for _ in range(decisions // 100):
            for level in LEVELS:
                for _ in range(100):
                    t0 = time.perf_counter()
                    status, _ = client.call("POST", "/v1/decide", body(level))
                    out[level].append(time.perf_counter() - t0)
                    if status != 200:
                        raise RuntimeError(f"decide answered {status}")
    return {level: summary(samples) for level, samples in out.items()}


# --------------------------------------------------------------------- main


def run_async(coro_fn: Callable[[], Any]) -> Any:
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(coro_fn())


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--decisions", type=int, default=2000)
    ap.add_argument("--customers", type=int, default=200)
    ap.add_argument("--sample", type=int, default=200)
    ap.add_argument("--grouped", action="store_true", help="add windows grouped by category")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        rules = tmp / "profiles_bench.rules"
        rules.write_text(GROUPED_RULES if args.grouped else RULES, encoding="utf-8")
        plan = compile_plan(dsl.load_checked(rules))
        with EmbeddedRedis(
            tmp / "redis", port=free_port(), unix_socket=False, persistent=False
        ) as r:
            t0 = time.perf_counter()
            run_async(lambda: populate(r.url, args.customers, plan))
            print(
                f"populated {args.customers} customers x {LEVELS} events "
                f"in {time.perf_counter() - t0:.1f}s; {len(plan.needs.aggregates)} aggregates, "
                f"{len(plan.needs.capped_actions)} caps, {len(plan.needs.fatigued_actions)} fatigue"
            )
            cmds = {
                level: run_async(
                    partial(commands_per_decision, r.url, plan, args.customers, args.sample, level)
                )
                for level in LEVELS
            }
            live = {
                level: run_async(
                    partial(live_run, r.url, plan, args.customers, args.decisions, level)
                )
                for level in LEVELS
            }
            http = http_run(r.url, rules, tmp, args.customers, args.decisions)

    print(f"\n1. Commands per decision (INFO commandstats deltas over {args.sample} decisions)")
    for level in LEVELS:
        server_us = cmds[level].pop("read server µs")["evalsha"]
        for part, row in cmds[level].items():
            sent = {k: v for k, v in row.items() if k in SENT_BY_CLIENT}
            inside = {k: v for k, v in row.items() if k not in SENT_BY_CLIENT}
            print(f"  {level:>3} events  {part:<13} sent: {fmt(sent)}")
            where = "inside scripts" if part == "read" else "inside scripts or plain"
            print(f"  {'':>3}         {'':<13} {where}: {fmt(inside)}")
        print(f"  {'':>3}         read script time in Redis: {server_us:.0f} µs per decision")
    print("\n2. Round trips per decision (client side, log writing behind)")
    for level in LEVELS:
        lv = live[level]
        print(
            f"  {level:>3} events  read {lv['read_round_trips']:.2f}   "
            f"write-behind {lv['write_round_trips']:.3f}"
        )
    print(f"\n3. Latency over {args.decisions} sequential decisions (ms)")
    print(f"  {'':34}{'10 events':>18}{'200 events':>18}{'ratio 200/10':>16}")
    rows = [
        ("in process: store.fetch", live[10]["fetch"], live[200]["fetch"]),
        ("in process: fetch+decide+log", live[10]["decide"], live[200]["decide"]),
        ("HTTP POST /v1/decide", http[10], http[200]),
    ]
    for name, a, b in rows:
        print(
            f"  {name:34}{a['median_ms']:>8.3f} / {a['p99_ms']:<7.3f}"
            f"{b['median_ms']:>8.3f} / {b['p99_ms']:<7.3f}"
            f"{b['median_ms'] / a['median_ms']:>7.2f} / {b['p99_ms'] / a['p99_ms']:<6.2f}"
        )
    print("  (each cell: median / p99; ratio: medians / p99s)")


def fmt(row: dict[str, float]) -> str:
    return ", ".join(f"{k} {v:.2f}" for k, v in sorted(row.items())) or "-"


if __name__ == "__main__":
    main()

"""The reference workload of the performance targets (issue 11), built deterministically.

`rulesets/retail.rules` as shipped; 10,000 customers with realistic profiles
and 200 events each spread over the last 365 days (page views, product
views, carts, purchases); decision requests over the shop's channels and
pages, 1% of them for customers the store has never seen.

Events are loaded through `ProfileStore.add_events`, the path `/v1/events`
and `arbiter ingest` take, so what is measured is what production writes.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from arbiter import dsl
from arbiter.engine.store.profiles import Event, ProfileStore
from arbiter.engine.validate import normalize_all

RULES = "rulesets/retail.rules"
# Bumped whenever what `load` stores changes, so a cached copy is rebuilt (benchmarks.http).
# 2: profiles stored as `PUT /v1/profiles` stores them (times as epoch seconds); version 1
# stored `last_purchase_at` as an ISO string, so the rules reading it failed at run time
# on most decisions and two of the three models were never scored.
VERSION = 2
DAY = 86400.0
TIERS = ("none", "none", "none", "silver", "gold")
CHANNELS = ("web", "web", "web", "app", "app", "email")
DEVICES = ("desktop", "mobile", "mobile", "tablet")


@dataclass(frozen=True)
class Workload:
    """Sizes of the reference workload (defaults: the issue's)."""

    customers: int = 10_000
    events_per_customer: int = 200
    days: int = 365
    unknown_share: float = 0.01
    seed: int = 11


def customer_id(i: int) -> str:
    return f"cust-{i:06d}"


def profile(i: int, now: float, rng: random.Random) -> dict[str, Any]:
    """A profile with the attributes retail.rules declares."""
    orders = rng.choice((0, 0, 1, 1, 2, 3, 4, 6))
    last_purchase = now - rng.uniform(1, 400) * DAY
    return {
        "lifetime_value": round(rng.lognormvariate(5.5, 1.2), 2),
        "orders_90d": orders,
        "visits_30d": rng.randint(0, 20),
        "last_purchase_at": datetime.fromtimestamp(last_purchase, UTC).isoformat(),
        "loyalty_tier": rng.choice(TIERS),
        "consents": ["email"] if rng.random() < 0.6 else [],
    }


def events(i: int, w: Workload, now: float, rng: random.Random) -> list[Event]:
    """`w.events_per_customer` events over `w.days` days, oldest first.

    Without event ids: ids are remembered for two days after arrival only, so a
    bulk load with ids would hold 200 of them per customer, which steady state
    never does (and the memory figure would say so).
    """
    cid = customer_id(i)
    out = []
    for _ in range(w.events_per_customer):
        ts = now - rng.uniform(0, w.days * DAY)
        roll = rng.random()
        if roll < 0.55:
            out.append(Event(cid, "page_view", ts, {}))
        elif roll < 0.85:
            out.append(Event(cid, "product_view", ts, {}))
        elif roll < 0.95:
            price = round(rng.uniform(5, 200), 2)
            out.append(Event(cid, "add_to_cart", ts, {"price": price}))
        else:
            amount = round(rng.uniform(10, 500), 2)
            out.append(Event(cid, "purchase", ts, {"amount": amount}))
    out.sort(key=lambda e: e.ts)
    return out


async def load(store: ProfileStore, w: Workload, now: float, batch: int = 25) -> float:
    """Write every profile and event; returns the seconds it took.

    Customers go in `batch` at a time, each customer's events in one
    `add_events` call (one pipeline), several calls in flight at once.
    """
    rng = random.Random(w.seed)
    # Normalised against the ruleset's profile block, as the profiles route does it.
    schema = dsl.load_checked(RULES).profile
    started = time.perf_counter()
    for start in range(0, w.customers, batch):
        ids = range(start, min(start + batch, w.customers))
        await asyncio.gather(
            *(
                store.put_profile(customer_id(i), normalize_all(schema, profile(i, now, rng)))
                for i in ids
            )
        )
        evs = [e for i in ids for e in events(i, w, now, rng)]
        await store.add_events(evs, now=now)
    return time.perf_counter() - started


def request_bodies(w: Workload, n: int = 2000) -> Iterator[dict[str, Any]]:
    """Decision requests: the shop's channels and pages, `w.unknown_share` unknown customers."""
    rng = random.Random(w.seed + 1)
    for k in range(n):
        if rng.random() < w.unknown_share:
            cid = f"unknown-{k}"
        else:
            cid = customer_id(rng.randrange(w.customers))
        channel = rng.choice(CHANNELS)
        page = rng.choice(("/", "/", f"/product/{rng.randrange(500)}", "/cart", "/account"))
        yield {
            "customer_id": cid,
            "context": {
                "channel": channel,
                "page": page,
                "device": rng.choice(DEVICES),
                "cart_value": round(rng.uniform(0, 120), 2),
            },
        }


def request_lines(w: Workload, n: int = 2000) -> list[str]:
    """`request_bodies` as compact JSON strings."""
    return [json.dumps(b, separators=(",", ":")) for b in request_bodies(w, n)]

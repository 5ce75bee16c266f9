"""Decide latency with one ONNX model and one bandit of 5 and of 20 arms, next to neither.

Three rulesets share their profile, context, twenty offers and rules
(benchmarks/rules/shared/offers.rules) and differ only in scoring:

- ``decide_plain``: ranked by value; no model, no bandit (the baseline);
- ``decide_bandit5``: a per-offer click model (models/offer_click.onnx, one
  batched run over all eligible offers) in the arbitration formula, and a
  bandit choosing among 5 of the offers;
- ``decide_bandit20``: the same with a bandit over all 20 offers.

For each, prints the median and p99 latency of

- in process: `engine.decision.decide` with a `LiveOracle` over the real `OnnxModel`
  and a trained `BanditModel` (an untrained one answers uniform without
  asking VW), the inputs already fetched;
- over HTTP: sequential ``POST /v1/decide`` on one keep-alive connection to
  ``arbiter serve`` (1 worker, embedded Redis, profiles stored, the bandit's
  trained state published before the server starts);

with the ratio to the baseline, and the cost of the model and bandit calls
alone. Rulesets are measured in interleaved rounds (``--rounds``) so that
the load of a shared machine falls on all three alike. Load goes to
127.0.0.1 only, bounded by ``--requests``.

    python -m benchmarks.decide_models [--calls 5000] [--requests 3000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from arbiter import dsl
from arbiter.engine.codegen.compiler import compile_plan
from arbiter.engine.decision.decide import decide
from arbiter.engine.decision.oracle import LiveOracle
from arbiter.engine.learning.bandit import BanditModel
from arbiter.engine.learning.bandit_store import exploration_of, publish
from arbiter.engine.plan import Plan
from arbiter.engine.records import DecideRequest, Inputs
from arbiter.engine.scoring.loading import load_models
from arbiter.engine.store.client import connect
from arbiter.engine.store.embedded import EmbeddedRedis
from benchmarks._harness import Client, arbiter_argv, free_port, server, summary, timed_loop

RULES = Path(__file__).resolve().parent / "rules"
RULESETS = (
    ("no model, no bandit", "decide_plain"),
    ("ONNX + bandit of 5", "decide_bandit5"),
    ("ONNX + bandit of 20", "decide_bandit20"),
)
ADMIN = {"Authorization": "Bearer bench-admin"}
DEVICES = ("mobile", "desktop", "tablet")
PAGES = ("home", "product", "cart")
BANDIT = "hero"


def profiles(n: int, seed: int = 5) -> list[dict[str, Any]]:
    """``n`` customers who all qualify for every offer (so a bandit sees all its arms)."""
    rng = random.Random(seed)
    return [
        {
            "orders_90d": rng.randint(1, 8),
            "lifetime_value": round(rng.uniform(60, 3000), 2),
            "visits_30d": rng.randint(2, 30),
        }
        for _ in range(n)
    ]


def contexts(n: int, seed: int = 6) -> list[dict[str, str]]:
    """``n`` request contexts, spread over every device and page."""
    rng = random.Random(seed)
    return [{"device": rng.choice(DEVICES), "page": rng.choice(PAGES)} for _ in range(n)]


def load_plan(name: str) -> Plan:
    """A compiled benchmark ruleset."""
    return compile_plan(dsl.load_checked(RULES / f"{name}.rules"))


def trained_bandits(plan: Plan, decisions: int = 500) -> dict[str, BanditModel]:
    """The plan's bandit, trained in process on rewards from a fixed rule, so that its pmf
    is VW's (not the cold-start shortcut) and not uniform."""
    if BANDIT not in plan.checked.bandits:
        return {}
    model = BanditModel(BANDIT, exploration_of(plan.checked.bandits[BANDIT]))
    oracle = LiveOracle(load_models(plan, RULES), {BANDIT: model})
    people, places = profiles(50), contexts(50)
    for i in range(decisions):
        request = DecideRequest(f"t{i}", places[i % 50])
        _, record = decide(
            plan,
            request,
            Inputs(profile=people[i % 50]),
            decision_id=f"train-{i}",
            now=1.7e9,
            oracle=oracle,
        )
        (choice,) = record.bandits
        # Reward the arm whose index matches the device: a learnable, context-dependent rule.
        reward = float(
            choice.arms.index(choice.chosen) % 3 == DEVICES.index(places[i % 50]["device"])
        )
        model.learn(
            choice.shared,
            choice.arm_features,
            choice.arms.index(choice.chosen),
            reward,
            choice.probability,
        )
    return {BANDIT: model}


@dataclass
class Row:
    """One ruleset's figures, in milliseconds."""

    label: str
    inproc: dict[str, float]
    http: dict[str, float] | None = None
    model_us: float | None = None
    bandit_us: float | None = None
    arms: int = 0


def time_calls(fn: Callable[[int], object], n: int) -> list[float]:
    """``n`` timed calls of ``fn(i)`` in seconds, after ``n // 10`` untimed ones."""
    for i in range(n // 10):
        fn(i)
    out = []
    for i in range(n):
        t0 = time.perf_counter()
        fn(i)
        out.append(time.perf_counter() - t0)
    return out


@dataclass
class Prepared:
    """One ruleset ready to decide in process."""

    label: str
    plan: Plan
    decide_one: Callable[[int], object]
    row: Row


def prepare_in_process(label: str, name: str, calls: int) -> Prepared:
    """A ruleset's plan, models and trained bandit, and the model and bandit calls timed alone."""
    plan = load_plan(name)
    models = load_models(plan, RULES)
    bandits = trained_bandits(plan)
    people, places = profiles(200), contexts(200)
    requests = [DecideRequest(f"c{i}", places[i]) for i in range(200)]
    inputs = [Inputs(profile=p) for p in people]

    def decide_one(i: int) -> object:
        # A LiveOracle per decision, as the server makes one.
        oracle = LiveOracle(models, bandits)
        return decide(
            plan,
            requests[i % 200],
            inputs[i % 200],
            decision_id=f"d{i}",
            now=1.7e9,
            oracle=oracle,
        )

    row = Row(label, {})
    if models:
        # What one batched scoring of the twenty offers costs on its own.
        model = next(iter(models.values()))
        rows = [[3.0, 500.0, 10.0, float(v), float(v % 4 * 5)] for v in range(20)]
        row.model_us = 1e6 * statistics.median(time_calls(lambda _: model.score(rows), calls))
    if bandits:
        _, record = decide(
            plan,
            requests[0],
            inputs[0],
            decision_id="probe",
            now=1.7e9,
            oracle=LiveOracle(models, bandits),
        )
        (choice,) = record.bandits
        bandit = bandits[BANDIT]
        row.arms = len(choice.arms)
        row.bandit_us = 1e6 * statistics.median(
            time_calls(lambda _: bandit.pmf(choice.shared, choice.arm_features), calls)
        )
    return Prepared(label, plan, decide_one, row)


def bench_in_process(calls: int, rounds: int) -> list[Row]:
    """``calls`` decisions per ruleset, in ``rounds`` interleaved rounds so that a change in
    the machine's load during the run falls on every ruleset alike."""
    prepared = [prepare_in_process(label, name, calls) for label, name in RULESETS]
    samples: list[list[float]] = [[] for _ in prepared]
    for _ in range(rounds):
        for k, p in enumerate(prepared):
            samples[k].extend(time_calls(p.decide_one, calls // rounds))
    for p, timings in zip(prepared, samples, strict=True):
        p.row.inproc = summary(timings)
    return [p.row for p in prepared]


async def _publish(url: str, plan: Plan, bandits: dict[str, BanditModel]) -> None:
    client = connect(url, socket_timeout=5.0)
    try:
        for name, model in bandits.items():
            await publish(client, plan.name, name, model)
    finally:
        await client.aclose()


def bench_http(
    requests: int, rounds: int, redis: EmbeddedRedis, tmp: Path
) -> list[dict[str, float]]:
    """``requests`` sequential decides per ruleset against ``arbiter serve`` on 127.0.0.1.

    One server (1 worker) per ruleset, all running at once and measured in
    interleaved rounds, each idle while another is measured.
    """
    env = {
        "ARBITER_REDIS_URL": redis.url,
        "ARBITER_ADMIN_KEY": "bench-admin",
        "ARBITER_DATA_DIR": str(tmp / "data"),
        # No rewards arrive here: the learner would only poll.
        "ARBITER_LEARNER": "off",
    }
    bodies = [
        json.dumps({"customer_id": f"c{i}", "context": place}).encode()
        for i, place in enumerate(contexts(200))
    ]
    for _, name in RULESETS:
        plan = load_plan(name)
        asyncio.run(_publish(redis.url, plan, trained_bandits(plan)))
    with ExitStack() as stack:
        clients = []
        for _, name in RULESETS:
            port = free_port()
            stack.enter_context(server(arbiter_argv(str(RULES / f"{name}.rules"), port), port, env))
            clients.append(Client(port, ADMIN))
        for i, profile in enumerate(profiles(200)):  # one Redis: stored once for all three
            status, _ = clients[0].call("PUT", f"/v1/profiles/c{i}", profile)
            assert status == 200, status
        for client in clients:
            status, body = client.call("POST", "/v1/decide", bodies[0])
            answer = json.loads(body)
            assert status == 200 and answer["actions"] and not answer["degraded"], answer
            timed_loop(client, "/v1/decide", bodies, min(500, requests))  # warm up
        samples: list[list[float]] = [[] for _ in clients]
        for _ in range(rounds):
            for k, client in enumerate(clients):
                samples[k].extend(timed_loop(client, "/v1/decide", bodies, requests // rounds))
    return [summary(s) for s in samples]


def print_table(rows: Sequence[Row]) -> None:
    """Median and p99 in process and over HTTP, each with its ratio to the baseline."""
    base = rows[0]
    head = f"{'ruleset':22}{'in-process median':>18}{'p99':>9}{'ratio':>7}"
    print("\n" + head + f"{'HTTP median':>13}{'p99':>9}{'ratio':>7}")
    for row in rows:
        line = (
            f"{row.label:22}{row.inproc['median_ms'] * 1000:>15.1f} us"
            f"{row.inproc['p99_ms'] * 1000:>6.0f} us"
            f"{row.inproc['median_ms'] / base.inproc['median_ms']:>7.2f}"
        )
        if row.http is not None and base.http is not None:
            line += (
                f"{row.http['median_ms']:>10.3f} ms{row.http['p99_ms']:>6.2f} ms"
                f"{row.http['median_ms'] / base.http['median_ms']:>7.2f}"
            )
        print(line)
    print()
    for row in rows[1:]:
        parts = []
        if row.model_us is not None:
            parts.append(f"ONNX score of 20 offers (one batch) {row.model_us:.1f} us")
        if row.bandit_us is not None:
            parts.append(f"bandit pmf over {row.arms} arms {row.bandit_us:.1f} us")
        extra = (row.inproc["median_ms"] - base.inproc["median_ms"]) * 1000
        print(f"{row.label}: {'; '.join(parts)}; decide +{extra:.0f} us over the baseline")


def main() -> None:
    """Measure and print."""
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--calls", type=int, default=5000, help="in-process decisions per ruleset")
    ap.add_argument("--requests", type=int, default=3000, help="HTTP decisions per ruleset")
    ap.add_argument("--rounds", type=int, default=5, help="interleaved rounds per ruleset")
    ap.add_argument("--no-http", action="store_true", help="in-process figures only")
    args = ap.parse_args()
    if not 100 <= args.requests <= 50_000 or not 100 <= args.calls <= 100_000:
        ap.error("--requests must be in [100, 50000] and --calls in [100, 100000]")

    rows = bench_in_process(args.calls, args.rounds)
    if not args.no_http:
        with tempfile.TemporaryDirectory() as tmp, EmbeddedRedis(Path(tmp) / "redis") as redis:
            for row, http in zip(
                rows, bench_http(args.requests, args.rounds, redis, Path(tmp)), strict=True
            ):
                row.http = http
    print_table(rows)


if __name__ == "__main__":
    main()

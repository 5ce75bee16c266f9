"""What the decision log's write-behind costs per record: the worker's CPU, Redis' CPU and memory.

With the log on, a decision costs the server more CPU than with it off
(target 5 of issue 11), and Redis more CPU and memory (target 1). This runs
`DecisionLog` against a real Redis (the embedded one) with records made by
`decide` on retail.rules (its models and a trained bandit, 60 customers of the
reference workload), in batches of ``--batch`` records (the server's batches
are what arrives in 5 ms: a dozen at 2,000 decisions a second), three ways,
alternately:

- ``before (8282fc7)``: one redis-py pipeline of `SET`/`XADD` per batch, then
  one of `RPUSH`/`EXPIRE` or the contact script per record;
- ``now, JSON``: the writer today with ``ARBITER_DECISION_LOG_COMPRESSION=off``;
- ``now, zstd``: the writer today, records compressed with the dictionary it
  trains on the first 500 (`engine.store.compression`).

It prints per record the worker's CPU (`time.process_time`: encoding,
compressing, packing, parsing replies, the event loop), Redis' CPU (`INFO
cpu`) and the growth of Redis' `used_memory` (both copies of the record, the
customer's index entry, contacts), medians of the rounds.

    python -m benchmarks.log_cost [--records 3000] [--batch 12] [--rounds 7]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from collections.abc import Callable
from typing import Any

import msgspec

from arbiter.engine.decision.decide import decide
from arbiter.engine.decision.oracle import LiveOracle
from arbiter.engine.decision.policies import contacts_of
from arbiter.engine.learning.attribution import exposures_of, write_exposures
from arbiter.engine.log.writer import DecisionLog, _Entry
from arbiter.engine.records import ENCODER, DecideRequest, DecisionRecord
from arbiter.engine.scoring.loading import load_models
from arbiter.engine.store import keys
from arbiter.engine.store.client import connect
from arbiter.engine.store.compression import TRAIN_ON, RecordCompressor
from arbiter.engine.store.embedded import EmbeddedRedis
from arbiter.engine.store.profiles import AFTER_DECISION_LUA, ProfileStore
from benchmarks import reference
from benchmarks._harness import ROOT
from benchmarks.http import retail_plan, trained


class OldLog(DecisionLog):
    """The writer before this change (commit 8282fc7): records and customer writes through
    redis-py pipelines, each record encoded here."""

    async def _write_entries(self, batch: list[_Entry]) -> None:
        blobs = [ENCODER.encode(e.record) for e in batch]
        unwritten = [(e, b) for e, b in zip(batch, blobs, strict=True) if e.stream_id is None]
        if unwritten and self.records:
            pipe = self.redis.pipeline(transaction=False)
            for entry, blob in unwritten:
                pipe.set(keys.decision(entry.record.decision_id), blob, ex=self.ttl)
                pipe.xadd(keys.DECISION_STREAM, {b"r": blob}, maxlen=self.maxlen, approximate=True)
            results = await pipe.execute()
            for (entry, _), sid in zip(unwritten, results[1::2], strict=True):
                entry.stream_id = sid
        await self._old_customer_writes(batch, [e.stream_id or b"" for e in batch])
        if any(e.exposures for e in batch):
            pipe = self.redis.pipeline(transaction=False)
            for entry in batch:
                write_exposures(pipe, entry.exposures, self.ttl)
            await pipe.execute()

    async def _old_customer_writes(self, batch: list[_Entry], sids: list[bytes]) -> None:
        pipe = self.redis.pipeline(transaction=False)
        for entry, sid in zip(batch, sids, strict=True):
            rec = entry.record
            owner = rec.inputs.resolved_id or rec.request.customer_id
            if not entry.contacts:
                index = keys.decision_index(owner)
                pipe.rpush(index, b"s:" + sid, b"d:" + rec.decision_id.encode())
                pipe.expire(index, self.ttl)
                continue
            key_list, args = self.store.after_decision_command(
                owner, sid, rec.decision_id, self.ttl, entry.contacts, rec.ts
            )
            pipe.execute_command(
                "EVALSHA", self.store.after_decision_sha, len(key_list), *key_list, *args
            )
        await pipe.execute()


async def made(url: str, n: int) -> list[tuple[DecisionRecord, list[tuple[str, int]], Any]]:
    """`n` decisions on retail.rules over the reference workload's first 60 customers."""
    w = reference.Workload(customers=60)
    client = connect(url, socket_timeout=30)
    store = ProfileStore(client)
    now = time.time()
    await reference.load(store, w, now)
    plan = retail_plan()
    bodies = list(reference.request_bodies(w, 300))
    reqs = [DecideRequest(b["customer_id"], b["context"]) for b in bodies]
    inputs = [await store.fetch(r.customer_id, plan.needs, now) for r in reqs]
    models = load_models(plan, ROOT / "rulesets")
    bandits = trained(plan, models, reqs, inputs)
    out = []
    for i in range(n):
        req = reqs[i % len(reqs)]
        decision, record = decide(
            plan,
            req,
            inputs[i % len(reqs)],
            decision_id=f"d{i:07d}",
            now=now,
            oracle=LiveOracle(models, bandits),
        )
        contacts: list[tuple[str, int]] = []
        for a in decision.actions:
            spec = plan.action(a.action)
            if spec.cap is not None:
                contacts.append((spec.name, spec.cap.window_seconds))
            contacts += contacts_of(plan, spec, req.context.get("channel"))
        exposures = exposures_of(plan.checked.bandits, record) if record.bandits else ()
        out.append((record, contacts, exposures))
    await client.aclose()
    return out


def redis_cpu(info: dict[str, Any]) -> float:
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


Writer = Callable[[Any, ProfileStore], DecisionLog]


async def one_run(
    make: Writer, url: str, items: list[Any], batch: int, tag: str
) -> tuple[float, float, float]:
    """Worker CPU, Redis CPU (µs) and Redis memory (bytes) per record of one writer."""
    # As the server's log client: no per-reply socket timeout (the log bounds a batch).
    client = connect(url, socket_timeout=None, connect_timeout=5)
    store = ProfileStore(client)
    await client.script_load(AFTER_DECISION_LUA)  # the old writer does not reload it
    log = make(client, store)
    # Fresh ids each run: a run must not find the previous run's records.
    recs = [
        (msgspec.structs.replace(r, decision_id=f"{tag}{r.decision_id}"), c, e) for r, c, e in items
    ]
    await log.flush()
    memory0 = int((await client.info("memory"))["used_memory"])
    cpu0 = redis_cpu(await client.info("cpu"))
    t0 = time.process_time()
    for start in range(0, len(recs), batch):
        for r, c, e in recs[start : start + batch]:
            log.submit(r, c, e)
        await log.flush()
    worker = time.process_time() - t0
    red = redis_cpu(await client.info("cpu")) - cpu0
    memory = int((await client.info("memory"))["used_memory"]) - memory0
    await client.aclose()
    n = len(recs)
    return worker / n * 1e6, red / n * 1e6, memory / n


async def shared_compressor(url: str, items: list[Any]) -> RecordCompressor:
    """A compressor with the dictionary the server would train on these records."""
    client = connect(url, socket_timeout=None)
    compressor = RecordCompressor(train_on=min(TRAIN_ON, len(items)))
    await compressor.settle(client)
    for record, _, _ in items[: compressor.train_on]:
        compressor.compress(ENCODER.encode(record))
    await compressor.settle(client)
    await client.aclose()
    return compressor


async def measure(
    url: str, n: int, batch: int, rounds: int
) -> dict[str, list[tuple[float, float, float]]]:
    items = await made(url, n)
    zstd = await shared_compressor(url, items)
    writers: dict[str, Writer] = {
        "before (8282fc7)": OldLog,
        "now, JSON": lambda c, s: DecisionLog(c, s, compression=RecordCompressor(enabled=False)),
        "now, zstd": lambda c, s: DecisionLog(c, s, compression=zstd),
    }
    out: dict[str, list[tuple[float, float, float]]] = {name: [] for name in writers}
    for k in range(rounds + 1):
        for i, (name, make) in enumerate(writers.items()):
            got = await one_run(make, url, items, batch, f"{i}-{k}-")
            if k:  # the first round warms up
                out[name].append(got)
    return out


def main() -> None:
    """Run the comparison and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--records", type=int, default=3000)
    parser.add_argument("--batch", type=int, default=12)
    parser.add_argument("--rounds", type=int, default=7)
    opts = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, EmbeddedRedis(tmp) as redis:
        result = asyncio.run(measure(redis.url, opts.records, opts.batch, opts.rounds))
    print(
        f"Per record, medians of {opts.rounds} rounds of {opts.records} records "
        f"in batches of {opts.batch}:"
    )
    print("| writer | worker CPU | Redis used_cpu | Redis used_memory |")
    print("|---|---:|---:|---:|")
    med = {}
    for name, v in result.items():
        med[name] = tuple(statistics.median(x[i] for x in v) for i in range(3))
        print(f"| {name} | {med[name][0]:.1f} µs | {med[name][1]:.1f} µs | {med[name][2]:,.0f} B |")
    base = med["now, JSON"]
    for name in ("before (8282fc7)", "now, zstd"):
        m = med[name]
        print(
            f"{name} / now, JSON: worker {m[0] / base[0]:.2f}x, Redis {m[1] / base[1]:.2f}x, "
            f"memory {m[2] / base[2]:.2f}x"
        )


if __name__ == "__main__":
    main()

"""A mixed decide / feedback / events load on 127.0.0.1, bounded in time, for soak and faults.

Open loop: each connection sends on a fixed schedule (the target rate split
across connections), and a request's latency is measured from the time it was
*scheduled*, so a stall shows as latency rather than as fewer requests
(no coordinated omission). Connections are raw HTTP/1.1 keep-alive on asyncio
streams, cheap enough that the generator leaves the cores to the server.

What was accepted is remembered so that afterwards it can be counted in Redis:
every event with its id, every feedback answered `accepted`, every decision.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

HOST = "127.0.0.1"
TIMEOUT_S = 5.0


@dataclass
class Tally:
    """What a run sent and got back."""

    latencies: dict[str, list[float]] = field(
        default_factory=lambda: {"decide": [], "feedback": [], "events": []}
    )
    statuses: Counter[tuple[str, int]] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)  # connection-level failures
    decisions: list[tuple[str, str]] = field(default_factory=list)  # (decision id, action)
    decided: int = 0
    events_accepted: dict[str, str] = field(default_factory=dict)  # event id -> customer
    feedback_accepted: int = 0
    # (scheduled t from the start, kind, status, s from schedule to answer, s from send to answer)
    timeline: list[tuple[float, str, int, float, float]] = field(default_factory=list)

    def all_latencies(self) -> list[float]:
        return [x for xs in self.latencies.values() for x in xs]

    def count(self, predicate: Any) -> int:
        return sum(n for (kind, status), n in self.statuses.items() if predicate(kind, status))


def percentile(samples: list[float], q: float) -> float:
    if not samples:
        return float("nan")
    s = sorted(samples)
    return s[min(len(s) - 1, int(len(s) * q))]


class Connection:
    """One keep-alive connection; reconnects after a failure."""

    def __init__(self, port: int, headers: dict[str, str]) -> None:
        self.port = port
        self.extra = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def request(self, method: str, path: str, body: bytes) -> tuple[int, bytes]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(HOST, self.port)
        assert self.reader is not None
        head = (
            f"{method} {path} HTTP/1.1\r\nHost: {HOST}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n{self.extra}\r\n"
        )
        self.writer.write(head.encode() + body)
        try:
            status_line = await self.reader.readline()
            if not status_line:
                raise ConnectionError("closed by the server")
            status = int(status_line.split()[1])
            length = 0
            while True:
                line = await self.reader.readline()
                if line in (b"\r\n", b""):
                    break
                name, _, value = line.decode("latin-1").partition(":")
                if name.lower() == "content-length":
                    length = int(value)
            payload = await self.reader.readexactly(length) if length else b""
        except BaseException:
            self.close()
            raise
        return status, payload

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


@dataclass
class Mix:
    """Shares of each request kind (the rest is decide) and the customers they are about."""

    feedback: float = 0.15
    events: float = 0.15
    customers: int = 2000
    context: dict[str, Any] = field(default_factory=lambda: {"channel": "web"})
    event_types: tuple[str, ...] = ("add_to_cart", "purchase")


async def run(
    port: int,
    rate: float,
    seconds: float,
    *,
    connections: int = 32,
    mix: Mix | None = None,
    headers: dict[str, str] | None = None,
    seed: int = 7,
    tally: Tally | None = None,
) -> Tally:
    """Send `rate` requests/s for `seconds` over `connections`; bounded, self-stopping."""
    mix = mix or Mix()
    tally = tally or Tally()
    rng = random.Random(seed)
    started = time.perf_counter()
    interval = connections / rate
    serial = 0

    def next_request() -> tuple[str, str, bytes, Any]:
        nonlocal serial
        serial += 1
        roll = rng.random()
        customer = f"c{rng.randrange(mix.customers)}"
        if roll < mix.feedback and tally.decisions:
            decision_id, action = tally.decisions[rng.randrange(len(tally.decisions))]
            reward = rng.choice((0.0, 1.0))
            body = {"decision_id": decision_id, "action": action, "reward": reward}
            return "feedback", "/v1/feedback", json.dumps(body).encode(), None
        if roll < mix.feedback + mix.events:
            ids = [f"e{seed}-{serial}-{i}" for i in range(rng.randint(1, 3))]
            events = [
                {"customer_id": customer, "type": rng.choice(mix.event_types), "event_id": i}
                for i in ids
            ]
            return "events", "/v1/events", json.dumps({"events": events}).encode(), (customer, ids)
        body = {"customer_id": customer, "context": mix.context}
        return "decide", "/v1/decide", json.dumps(body).encode(), None

    async def worker(offset: float) -> None:
        conn = Connection(port, headers or {})
        due = started + offset
        try:
            end = started + seconds
            while due < end and time.perf_counter() < end:
                delay = due - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                kind, path, body, ids = next_request()
                sent = time.perf_counter()
                status = 0
                try:
                    status, payload = await asyncio.wait_for(
                        conn.request("POST", path, body), TIMEOUT_S
                    )
                except (TimeoutError, OSError, ConnectionError, ValueError) as exc:
                    conn.close()
                    tally.errors[type(exc).__name__] += 1
                    payload = b""
                done = time.perf_counter()
                elapsed = done - due
                tally.latencies[kind].append(elapsed)
                tally.timeline.append((due - started, kind, status, elapsed, done - sent))
                if status:
                    tally.statuses[(kind, status)] += 1
                if status == 200 and kind == "decide":
                    tally.decided += 1
                    answer = json.loads(payload)
                    for a in answer["actions"][:1]:
                        tally.decisions.append((answer["decision_id"], a["action"]))
                    if len(tally.decisions) > 5000:
                        del tally.decisions[:1000]
                elif status == 202 and kind == "feedback" and json.loads(payload)["accepted"]:
                    tally.feedback_accepted += 1
                elif status == 202 and kind == "events":
                    customer, event_ids = ids
                    counted = json.loads(payload)["counted"]
                    if counted == len(event_ids):
                        tally.events_accepted.update(dict.fromkeys(event_ids, customer))
                    else:  # some were duplicates of an earlier retry: not new, not lost
                        tally.errors["events_partly_duplicate"] += 1
                due += interval
        finally:
            conn.close()

    await asyncio.gather(*(worker(i * interval / connections) for i in range(connections)))
    return tally


async def saturation(
    port: int,
    seconds: float,
    *,
    connections: int = 32,
    mix: Mix | None = None,
    headers: dict[str, str] | None = None,
) -> float:
    """Requests/s answered when every connection sends as fast as it can (closed loop)."""
    tally = await run(
        port, rate=1e9, seconds=seconds, connections=connections, mix=mix, headers=headers
    )
    answered = sum(tally.statuses.values())
    return answered / seconds


def _ms(samples: list[float]) -> dict[str, float]:
    return {
        "p50_ms": round(percentile(samples, 0.50) * 1000, 2),
        "p99_ms": round(percentile(samples, 0.99) * 1000, 2),
        "p999_ms": round(percentile(samples, 0.999) * 1000, 2),
        "max_ms": round(max(samples, default=float("nan")) * 1000, 2),
    }


def report(tally: Tally, seconds: float) -> dict[str, Any]:
    """The figures a run is judged by.

    Latency is from each request's scheduled time (`p50_ms`...: what a caller
    waiting on that schedule sees, queueing included); `service` is from the
    moment it was sent (the server's answer time plus the network); `send_lag`
    is how late the generator sent against its schedule: large values mean the
    machine (or the generator) could not keep the pace, and the run measured
    the machine rather than the server.
    """
    lat = tally.all_latencies()
    service = [t[4] for t in tally.timeline]
    lag = [max(0.0, t[3] - t[4]) for t in tally.timeline]
    by_kind: dict[str, dict[str, Any]] = {
        kind: {"requests": len(xs), **_ms(xs)} for kind, xs in tally.latencies.items() if xs
    }
    for kind, entry in by_kind.items():
        entry["service"] = _ms([t[4] for t in tally.timeline if t[1] == kind])
    return {
        "service": _ms(service),
        "send_lag": _ms(lag),
        "by_kind": by_kind,
        "requests": len(lat),
        "throughput_rps": round(len(lat) / seconds, 1),
        "p50_ms": round(percentile(lat, 0.50) * 1000, 2),
        "p99_ms": round(percentile(lat, 0.99) * 1000, 2),
        "p999_ms": round(percentile(lat, 0.999) * 1000, 2),
        "max_ms": round(max(lat, default=float("nan")) * 1000, 2),
        "status_5xx": tally.count(lambda _k, s: s >= 500),
        "status_4xx": tally.count(lambda _k, s: 400 <= s < 500),
        "connection_errors": sum(
            v for k, v in tally.errors.items() if k != "events_partly_duplicate"
        ),
        "statuses": {f"{k} {s}": n for (k, s), n in sorted(tally.statuses.items())},
    }

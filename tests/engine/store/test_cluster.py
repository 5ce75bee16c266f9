"""The same store behaviours on a real 3-master Redis Cluster, and the HTTP app on it.

All keys of one customer carry one hash tag, so a decision's read is one
EVALSHA to one node, and scripts only ever touch keys of one slot.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest
import redis
from fastapi.testclient import TestClient
from support.redis_cluster import RedisClusterProcesses
from support.server import ADMIN, CASES
from support.store import (
    DAY,
    HOUR,
    Decider,
    aggregates,
    count,
    ev,
    everything,
    ingest,
    run,
    shop_plan,
)

from arbiter.engine.plan import AggregateSpec
from arbiter.engine.store import keys
from arbiter.engine.store.profiles import ProfileStore
from arbiter.server.app import create_app
from arbiter.server.settings import Settings


def node_clients(cluster: RedisClusterProcesses) -> list[redis.Redis]:
    return [redis.Redis(host="127.0.0.1", port=port) for port in cluster.ports]


def commandstats(clients: list[redis.Redis]) -> list[dict[str, int]]:
    return [
        {name: stats["calls"] for name, stats in c.info("commandstats").items()} for c in clients
    ]


def test_fetch_is_one_command_to_one_node(
    redis_cluster: RedisClusterProcesses, redis_cluster_url: str
) -> None:
    plan = shop_plan()
    now = time.time()
    nodes = node_clients(redis_cluster)
    customers = [f"c{i}" for i in range(12)]  # spread over the three masters

    async def body(s: ProfileStore) -> list[tuple[str, list[dict[str, int]]]]:
        for c in customers:
            await s.put_profile(c, {"visits": 1})
            await s.fetch(c, plan.needs, now)  # connections and scripts are warm
        out = []
        for c in customers:
            before = commandstats(nodes)
            await s.fetch(c, plan.needs, now)
            after = commandstats(nodes)
            deltas = [
                {
                    k: v - b.get(k, 0)
                    for k, v in a.items()
                    if k != "cmdstat_info" and v != b.get(k, 0)
                }
                for a, b in zip(after, before, strict=True)
            ]
            out.append((c, deltas))
        return out

    try:
        results = run(redis_cluster_url, body)
        owners = set()
        for customer, deltas in results:
            touched = [i for i, d in enumerate(deltas) if d]
            assert len(touched) == 1, (customer, deltas)
            (i,) = touched
            # The read's commands (the id's link, the profile, its hashes), all on that node.
            assert deltas[i].pop("cmdstat_get") == 1 and deltas[i].pop("cmdstat_hgetall") == 1
            assert set(deltas[i]) <= {"cmdstat_hmget"}
            owners.add(i)
            # The node that answered owns the customer (another would reply MOVED).
            assert nodes[i].exists(keys.profile(customer)) == 1
        assert len(owners) == 3  # the customers really were on different nodes
    finally:
        for c in nodes:
            c.close()


def test_events_windows_and_duplicates(redis_cluster_url: str) -> None:
    now = time.time()
    events = [
        ev(f"c{i}", "purchase", now - k * HOUR, f"e{k}", amount=float(k))
        for i in range(6)
        for k in range(1, 30)
    ]
    assert ingest(redis_cluster_url, events + events[:10], now) == len(events)
    specs = [count("purchase", DAY), AggregateSpec("sum", "purchase", "amount", 30 * DAY)]
    for i in range(6):
        assert aggregates(redis_cluster_url, f"c{i}", specs, now) == [24, sum(range(1, 30))]


def test_profiles_caps_and_fatigue(redis_cluster_url: str) -> None:
    plan = shop_plan()
    t0 = time.time()

    async def body(s: ProfileStore) -> list[Any]:
        d = Decider(s, plan)
        await s.put_profile("new", {"visits": 1})
        await s.patch_profile("new", {"country": "DE"})
        seen: list[Any] = [await s.get_profile("new")]
        seen += [await d("new", t, channel="web") for t in (t0, t0 + 1, t0 + 7 * DAY)]
        fatigue = plan.action("vip_lounge").fatigue
        assert fatigue is not None
        keep = fatigue.window_seconds + fatigue.period_seconds
        await s.put_profile("vip", {"lifetime_value": 5000, "orders_90d": 4, "visits": 9})
        await s.record_rejection("vip", "vip_lounge", t0, keep)
        await s.record_rejection("vip", "vip_lounge", t0 + HOUR, keep)
        seen.append(await d("vip", t0 + 2 * HOUR, channel="web"))
        seen.append(await d("vip", t0 + 15 * DAY, channel="web"))
        return seen

    assert run(redis_cluster_url, body) == [
        {"visits": 1, "country": "DE"},
        "welcome_offer",
        "bestsellers",
        "welcome_offer",
        "bestsellers",
        "vip_lounge",
    ]


def test_erase_on_a_cluster(redis_cluster: RedisClusterProcesses, redis_cluster_url: str) -> None:
    plan = shop_plan()
    now = time.time()

    async def body(s: ProfileStore) -> int:
        d = Decider(s, plan)
        for who in ("gone", "kept"):
            await s.put_profile(who, {"visits": 1, "consents": ["email"]})
            await s.add_events([ev(who, "add_to_cart", now - 60, "x")], now=now)
            await d(who, now, channel="web")
            await d(who, now + 1, channel="email")
        erased: int = await s.erase("gone")
        return erased

    assert run(redis_cluster_url, body) >= 5
    nodes = node_clients(redis_cluster)
    try:
        content = {k: v for n in nodes for k, v in everything(n).items()}
    finally:
        for c in nodes:
            c.close()
    assert [k for k, v in content.items() if b"gone" in k or b"gone" in v] == []
    assert any(b"{kept}" in k for k in content)


def test_http_app_end_to_end(
    redis_cluster: RedisClusterProcesses,
    redis_cluster_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("ARBITER_REDIS_URL", redis_cluster_url)
    monkeypatch.setenv("ARBITER_ADMIN_KEY", "admin-key")
    monkeypatch.setenv("ARBITER_RULES", str(CASES / "shop.rules"))
    monkeypatch.setenv("ARBITER_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("ARBITER_RELOAD_INTERVAL_MS", "50")
    # This test is about reads reaching the right nodes, coalesced, and answering
    # with the profile (not degraded), so the deadline must fit a cold cluster on a
    # loaded machine: with the default 50 ms, a run once had all 60 concurrent
    # decisions degraded (their first reads open a connection to each of the three
    # nodes). What the deadline itself guarantees is tests/server/test_fault.py's job.
    monkeypatch.setenv("ARBITER_REDIS_TIMEOUT_MS", "5000")
    app = create_app(Settings.from_env(env_file=None))
    with TestClient(app) as client:
        assert client.get("/readyz").json()["status"] == "ready"
        for i in range(9):
            r = client.put(
                f"/v1/profiles/u{i}", json={"visits": 1, "consents": ["email"]}, headers=ADMIN
            )
            assert r.status_code == 200, r.text
        events = [
            {"customer_id": f"u{i}", "type": "add_to_cart", "event_id": f"a{i}"} for i in range(9)
        ]
        r = client.post("/v1/events", json={"events": events + events}, headers=ADMIN)
        assert r.status_code == 202 and r.json()["counted"] == 9 and r.json()["duplicates"] == 9
        assert client.patch("/v1/profiles/u0", json={"country": "FR"}, headers=ADMIN).json()[
            "attributes"
        ] == {"visits": 1, "consents": ["email"], "country": "FR"}
        got = client.get("/v1/profiles/u0", headers=ADMIN).json()
        assert set(got["last_seen"]) == {"add_to_cart"}

        def decide(customer: str, channel: str) -> dict[str, Any]:
            r = client.post(
                "/v1/decide", json={"customer_id": customer, "context": {"channel": channel}}
            )
            assert r.status_code == 200, r.text
            body: dict[str, Any] = r.json()
            assert body["degraded"] is False
            return body

        first = [decide(f"u{i}", "web")["actions"][0]["action"] for i in range(9)]
        assert first == ["welcome_offer"] * 9
        state = app.state.arbiter  # type: ignore[attr-defined]
        client.portal.call(state.log.flush)  # type: ignore[union-attr]
        assert [decide(f"u{i}", "web")["actions"][0]["action"] for i in range(9)] == [
            "bestsellers"
        ] * 9
        assert decide("u3", "email")["actions"][0]["action"] == "cart_reminder"

        # Concurrent decisions: the coalesced read pipeline spans the three nodes.
        async def many() -> list[tuple[int, bool]]:
            import httpx2

            transport = httpx2.ASGITransport(app=client.app)
            async with httpx2.AsyncClient(transport=transport, base_url="http://t") as ac:
                rs = await asyncio.gather(
                    *(ac.post("/v1/decide", json={"customer_id": f"u{i % 9}"}) for i in range(60))
                )
            return [(r.status_code, r.json()["degraded"]) for r in rs]

        batches, calls = state.store.round_trips.batches, state.store.round_trips.calls
        assert client.portal.call(many) == [(200, False)] * 60  # type: ignore[union-attr]
        # Really coalesced: 60 reads went out in fewer pipelines than reads.
        assert state.store.round_trips.calls - calls == 60
        assert state.store.round_trips.batches - batches < 60

        d = decide("u5", "web")
        fb = {"decision_id": d["decision_id"], "action": d["actions"][0]["action"], "reward": 0}
        assert client.post("/v1/feedback", json=fb).status_code == 202
        r = client.delete("/v1/profiles/u5", headers=ADMIN)
        assert r.status_code == 200 and r.json()["erased_keys"] >= 4
        assert client.get("/v1/profiles/u5", headers=ADMIN).status_code == 404

    nodes = node_clients(redis_cluster)
    try:
        content = {k: v for n in nodes for k, v in everything(n).items()}
    finally:
        for c in nodes:
            c.close()
    assert [k for k, v in content.items() if b"u5" in k or b'"u5"' in v] == []
    assert sum(1 for v in content.values() if b'"customer_id":"u4"' in v) >= 3

"""Identity stitching on real Redis and a real 3-master Redis Cluster.

An anonymous id's history (windows, last-seen, event ids, caps, rejections,
decision index, profile) is merged into a customer's; retried and
interrupted merges end in the same state as one clean merge; erasure of
either id leaves no key of both.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import redis
from support.legacy_windows import legacy_ingest
from support.redis import run_with_client
from support.store import DAY, HOUR, Decider, count, ev, everything, shop_plan

from arbiter.engine.plan import AggregateSpec
from arbiter.engine.store import contact_history, keys
from arbiter.engine.store.client import connect_sync
from arbiter.engine.store.identity import Identities, IdentityConflict, InvalidIdentify
from arbiter.engine.store.profiles import AFTER_DECISION_LUA, ProfileStore
from arbiter.engine.store.window_migration import migrate_windows

ACTIONS = ["welcome_offer", "cart_reminder", "vip_lounge", "app_banner", "bestsellers"]
SPECS = [
    count("add_to_cart", DAY),
    count("add_to_cart", 30 * DAY),
    count("purchase", 2 * HOUR),
    AggregateSpec("sum", "purchase", "amount", 30 * DAY),
    AggregateSpec("min", "purchase", "amount", 30 * DAY),
    AggregateSpec("max", "purchase", "amount", 30 * DAY),
    AggregateSpec("avg", "purchase", "amount", 30 * DAY),
    AggregateSpec("last", "add_to_cart", None, 0),
]


@pytest.fixture(params=["redis", "cluster"])
def url(request: pytest.FixtureRequest) -> str:
    """The same tests on one Redis and on a 3-master Redis Cluster."""
    name = "redis_url" if request.param == "redis" else "redis_cluster_url"
    value: str = request.getfixturevalue(name)
    return value


def run(url: str, body: Callable[[ProfileStore], Awaitable[Any]]) -> Any:
    return run_with_client(url, lambda client: body(ProfileStore(client)))


def history(anon: str, cust: str, now: float) -> tuple[list[Any], list[Any]]:
    """Events of an anonymous visitor and of the customer it turns out to be."""
    anon_events = [
        ev(anon, "add_to_cart", now - 2 * HOUR, "a1"),
        ev(anon, "add_to_cart", now - 3 * DAY, "a2"),
        ev(anon, "purchase", now - HOUR, "a3", amount=9.5),
        ev(anon, "purchase", now - 20 * DAY, "a4", amount=120.25),
        ev(anon, "view", now - 200 * DAY, None),
    ]
    cust_events = [
        ev(cust, "add_to_cart", now - 5 * HOUR, "c1"),
        ev(cust, "purchase", now - 30 * 60, "c2", amount=3.0),
        ev(cust, "purchase", now - 10 * DAY, "c3", amount=1.5),
    ]
    return anon_events, cust_events


async def seed(s: ProfileStore, anon: str, cust: str, now: float) -> None:
    """Both ids' history: events, profiles, contacts, rejections, a decision index."""
    anon_events, cust_events = history(anon, cust, now)
    await s.add_events(anon_events + cust_events, now=now)
    await s.put_profile(anon, {"visits": 1, "country": "FR", "consents": ["email"]})
    await s.put_profile(cust, {"visits": 7, "consents": ["email", "sms"]})
    for who, action, t in [
        (anon, "welcome_offer", now - HOUR),
        (cust, "cart_reminder", now - 2 * HOUR),
    ]:
        key_list, args = s.after_decision_command(
            who, f"{int(t * 1000)}-0".encode(), f"d-{who}", 7 * 86400, [(action, 7 * DAY)], t
        )
        await s.redis.eval(AFTER_DECISION_LUA, len(key_list), *key_list, *args)
    await s.record_rejection(anon, "vip_lounge", now - DAY, 21 * DAY)
    await s.record_rejection(anon, "vip_lounge", now - 2 * DAY, 21 * DAY)


def snapshot(url: str, roles: dict[str, str]) -> dict[str, Any]:
    """Every key of the given ids, names with the ids replaced by their role, values normalised."""
    client = connect_sync(url)
    out: dict[str, Any] = {}
    try:
        for who in roles:
            for raw in client.scan_iter(match=keys.customer_pattern(who), count=1000):
                name = raw.decode()
                for other, other_role in roles.items():
                    name = name.replace(keys.customer_pattern(other)[:-2], other_role)
                    name = name.replace(f":merged:{other}", f":merged:{other_role}")
                kind = client.type(raw)
                value: Any
                if kind == b"hash" and name.endswith(keys.HISTORY_SUFFIX):
                    # Record ids are hashes of what made them (the ids, random bytes): times.
                    value = {k: contact_history.times(v) for k, v in client.hgetall(raw).items()}
                elif kind == b"hash":
                    value = {k: _num(v) for k, v in client.hgetall(raw).items()}
                elif kind == b"zset" and ":rej:" in name:  # members end in random bytes
                    value = sorted(s for _, s in client.zrange(raw, 0, -1, withscores=True))
                elif kind == b"zset":
                    zset = client.zrange(raw, 0, -1, withscores=True)
                    value = {_sub(m, roles): s for m, s in zset}
                elif kind == b"list":
                    value = [_sub(x, roles) for x in client.lrange(raw, 0, -1)]
                elif kind == b"set":
                    value = {_role(m, roles) for m in client.smembers(raw)}
                else:
                    value = _role(client.get(raw), roles)
                out[name] = (value, client.ttl(raw) > 0)
    finally:
        client.close()
    return out


def _num(v: bytes) -> Any:
    try:
        return float(v)
    except ValueError:
        return v


def _sub(v: bytes, roles: dict[str, str]) -> bytes:
    for who, role in roles.items():
        v = v.replace(who.encode(), role.encode())
    return v


def _role(v: bytes | None, roles: dict[str, str]) -> Any:
    return roles.get(v.decode(), v) if v is not None else None


def fetch(url: str, who: str, now: float) -> Any:
    plan = shop_plan()

    async def body(s: ProfileStore) -> Any:
        inputs = await s.fetch(who, plan.needs, now)
        aggregates = await s.aggregates(who, SPECS, now)
        return inputs, [aggregates[spec.key] for spec in SPECS]

    return run(url, body)


# ----------------------------------------------------------------- the merge


def test_merged_windows_equal_one_customer_having_had_all_the_events(url: str) -> None:
    now = time.time()

    async def body(s: ProfileStore) -> Any:
        anon_events, cust_events = history("anon-1", "cust-1", now)
        await s.add_events(anon_events + cust_events, now=now)
        # The reference: the same events, all under one id from the start.
        ref = [ev("ref", e.type, e.ts, e.event_id, **e.properties) for e in anon_events]
        ref += [ev("ref", e.type, e.ts, e.event_id, **e.properties) for e in cust_events]
        await s.add_events(ref, now=now)
        report = await s.identities.identify("anon-1", "cust-1", ACTIONS, now)
        assert report.newly_linked
        # Layout 2: the window hash, last-seen times and event ids (one key each).
        # (Last-seen times are fields of the window hash since window layout 3.)
        assert (report.keys_merged, report.merged) == (2, ["eids", "series"])
        return [await s.aggregates(who, SPECS, now) for who in ("cust-1", "ref", "anon-1")]

    merged, ref, via_anon = run(url, body)
    assert merged == ref
    assert via_anon == ref  # reads of the anonymous id land on the customer
    assert merged[count("add_to_cart", 30 * DAY).key] == 3
    assert merged[AggregateSpec("max", "purchase", "amount", 30 * DAY).key] == 120.25
    windows = (":w", ":seen", ":eids")
    window = {k: v for k, v in snapshot(url, {"cust-1": "X"}).items() if k.endswith(windows)}
    reference = {k: v for k, v in snapshot(url, {"ref": "X"}).items() if k.endswith(windows)}
    assert set(window) == {"X:w", "X:eids"}  # last-seen times: fields of X:w (layout 3)
    assert window == reference  # record by record, series by series, expiries included


def test_everything_of_the_anonymous_id_moves_and_consent_is_never_widened(url: str) -> None:
    now = time.time()
    run(url, lambda s: seed(s, "anon-2", "cust-2", now))
    before_anon = snapshot(url, {"anon-2": "A"})
    assert set(before_anon["A:ch"][0]) == {b"c:welcome_offer", b"r:vip_lounge"}  # caps, fatigue
    run(url, lambda s: s.identities.identify("anon-2", "cust-2", ACTIONS, now))
    inputs, _ = fetch(url, "cust-2", now)
    # Customer's values win, the anonymous id fills the gaps; consent narrowed to both.
    assert inputs.profile == {"visits": 7, "country": "FR", "consents": ["email"]}
    assert inputs.caps == {"welcome_offer": 1, "cart_reminder": 1}
    assert inputs.rejections["vip_lounge"] == 2  # fatigued: 2 rejections within 7d, anonymously
    left = snapshot(url, {"anon-2": "A"})
    assert set(left) == {"A:alias"}  # only the link stays with the anonymous id
    after = snapshot(url, {"cust-2": "C", "anon-2": "A"})
    assert after["C:dlog"][0] == [
        f"s:{int((now - 2 * HOUR) * 1000)}-0".encode(),
        b"d:d-C",
        f"s:{int((now - HOUR) * 1000)}-0".encode(),
        b"d:d-A",
    ]
    assert len(after["C:ch"][0][b"r:vip_lounge"]) == 2
    assert after["C:linked"][0] == {"A"}


def test_consent_of_the_anonymous_id_is_not_copied_to_a_customer_without_one(url: str) -> None:
    now = time.time()

    async def body(s: ProfileStore) -> Any:
        await s.put_profile("anon-3", {"consents": ["email", "sms"], "visits": 1})
        await s.put_profile("cust-3", {"visits": 4})
        await s.identities.identify("anon-3", "cust-3", ACTIONS, now)
        return await s.get_profile("cust-3")

    assert run(url, body) == {"visits": 4}


def test_identify_twice_changes_nothing(url: str) -> None:
    now = time.time()
    run(url, lambda s: seed(s, "anon-4", "cust-4", now))
    first = run(url, lambda s: s.identities.identify("anon-4", "cust-4", ACTIONS, now))
    once = snapshot(url, {"cust-4": "C", "anon-4": "A"})
    second = run(url, lambda s: s.identities.identify("anon-4", "cust-4", ACTIONS, now))
    assert first.newly_linked and not second.newly_linked and second.keys_merged == 0
    assert snapshot(url, {"cust-4": "C", "anon-4": "A"}) == once


class Boom(RuntimeError):
    """The injected fault."""


def inject(monkeypatch: pytest.MonkeyPatch, step: str) -> None:
    """Make one merge step fail once: before it runs, halfway through, or after it ran."""
    original = getattr(Identities, step.split(":")[0])
    when = step.split(":")[1]
    fired = {"n": 0}

    async def faulty(self: Identities, *args: Any) -> Any:
        if fired["n"]:
            return await original(self, *args)
        fired["n"] += 1
        if when == "before":
            raise Boom(step)
        if when == "half":
            calls = args[0]
            await original(self, calls[: len(calls) // 2])
            raise Boom(step)
        await original(self, *args)
        raise Boom(step)

    monkeypatch.setattr(Identities, step.split(":")[0], faulty)


FAULTS = [
    "_link:before",
    "_merge:before",
    "_apply:half",
    "_apply:after",
    "_drop_sources:before",
    "_drop_sources:after",
]


@pytest.mark.parametrize("fault", FAULTS)
def test_an_interrupted_merge_completed_by_a_retry_ends_as_a_clean_one(
    url: str, fault: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    now = time.time()
    run(url, lambda s: seed(s, "anon-r", "cust-r", now))
    run(url, lambda s: s.identities.identify("anon-r", "cust-r", ACTIONS, now))
    clean = snapshot(url, {"cust-r": "C", "anon-r": "A"})

    run(url, lambda s: seed(s, "anon-f", "cust-f", now))
    inject(monkeypatch, fault)
    with pytest.raises(Boom):
        run(url, lambda s: s.identities.identify("anon-f", "cust-f", ACTIONS, now))
    # The retry, twice for good measure (a client that retried too eagerly).
    run(url, lambda s: s.identities.identify("anon-f", "cust-f", ACTIONS, now))
    run(url, lambda s: s.identities.identify("anon-f", "cust-f", ACTIONS, now))
    assert snapshot(url, {"cust-f": "C", "anon-f": "A"}) == clean


def test_ids_land_in_different_slots_on_the_cluster(redis_cluster_url: str) -> None:
    client = connect_sync(redis_cluster_url)
    assert isinstance(client, redis.RedisCluster)
    try:
        slots = {client.keyslot(keys.alias(x)) for x in ("anon-r", "cust-r", "anon-f", "cust-f")}
        assert len(slots) == 4  # so the tests above cross slots (and nodes) for real
        nodes = {client.get_node_from_key(keys.alias(x)).name for x in ("anon-f", "cust-f")}
        assert len(nodes) == 2
    finally:
        client.close()


def test_events_after_the_link_go_to_the_customer_and_count_once(url: str) -> None:
    now = time.time()

    async def body(s: ProfileStore) -> Any:
        await s.add_events([ev("anon-5", "add_to_cart", now - HOUR, "e1")], now=now)
        await s.identities.identify("anon-5", "cust-5", ACTIONS, now)
        # A retry of e1 (by the anonymous id) and new events by both ids.
        new = await s.add_events(
            [
                ev("anon-5", "add_to_cart", now - HOUR, "e1"),
                ev("anon-5", "add_to_cart", now - 60, "e2"),
                ev("cust-5", "add_to_cart", now - 30, "e3"),
            ],
            now=now + 1,
        )
        return new, await s.aggregates("cust-5", [count("add_to_cart", DAY)], now + 1)

    new, aggregates = run(url, body)
    assert new == 2
    assert aggregates == {count("add_to_cart", DAY).key: 3}
    assert snapshot(url, {"anon-5": "A"}).keys() == {"A:alias"}


def test_several_anonymous_ids_and_the_409s(url: str) -> None:
    now = time.time()

    async def body(s: ProfileStore) -> list[str]:
        ids = s.identities
        problems = []
        for anon in ("phone", "laptop", "tablet"):
            await s.add_events([ev(anon, "add_to_cart", now - HOUR, None)], now=now)
            await ids.identify(anon, "alice", ACTIONS, now)
        for anon, cust in [
            ("phone", "bob"),  # linked elsewhere
            ("newcomer", "phone"),  # the customer is itself a linked id
            ("alice", "bob"),  # alice has linked ids: linking her would make a chain
        ]:
            try:
                await ids.identify(anon, cust, ACTIONS, now)
            except IdentityConflict as exc:
                problems.append(str(exc))
        with pytest.raises(InvalidIdentify):
            await ids.identify("alice", "alice", ACTIONS, now)
        assert await ids.linked("alice") == ["laptop", "phone", "tablet"]
        assert await ids.linked("bob") == []  # refused links leave no trace
        assert await ids.resolve("newcomer") == "newcomer"
        agg = await s.aggregates("alice", [count("add_to_cart", DAY)], now)
        assert agg == {count("add_to_cart", DAY).key: 3}
        return problems

    problems = run(url, body)
    assert problems == [
        "'phone' is already linked to another customer",
        "'phone' is itself linked to another customer; identify with that one",
        "'alice' is a customer with linked ids of its own; it cannot be linked to another customer",
    ]


# ------------------------------------------------------------ decisions


def test_login_then_the_next_decision_sees_the_merged_windows_and_caps(url: str) -> None:
    plan = shop_plan()
    now = time.time()

    async def body(s: ProfileStore) -> Any:
        decide = Decider(s, plan)
        await s.put_profile("visitor", {"visits": 1})
        await s.put_profile("carol", {"visits": 1, "consents": ["email"]})
        await s.add_events([ev("visitor", "add_to_cart", now - 2 * HOUR, "x1")], now=now)
        seen_anonymously = await decide("visitor", now, channel="web")
        control = await decide("dave", now, channel="email")  # nobody: the default
        await s.identities.identify("visitor", "carol", ACTIONS, now)
        web = await decide("carol", now + 60, channel="web")
        email = await decide("carol", now + 60, channel="email")
        via_anon = await s.fetch("visitor", plan.needs, now + 60)
        return seen_anonymously, control, web, email, via_anon

    seen_anonymously, control, web, email, via_anon = run(url, body)
    assert seen_anonymously == "welcome_offer"
    assert control == "bestsellers"
    assert web != "welcome_offer"  # the cap reached while anonymous holds (1 per 7d)
    assert email == "cart_reminder"  # the cart put in anonymously, the consent of carol
    assert via_anon.resolved_id == "carol" and via_anon.caps["welcome_offer"] == 1


def test_a_linked_id_costs_one_more_command_and_an_ordinary_one_none(redis_url: str) -> None:
    plan = shop_plan()
    now = time.time()

    async def calls(s: ProfileStore, who: str) -> int:
        # Round trips of the read (each one pipeline of the read's commands).
        before = s.round_trips.batches
        await s.fetch(who, plan.needs, now)
        return s.round_trips.batches - before

    async def body(s: ProfileStore) -> tuple[int, int]:
        await s.identities.identify("anon-6", "cust-6", ACTIONS, now)
        await s.fetch("warm", plan.needs, now)
        return await calls(s, "cust-6"), await calls(s, "anon-6")

    assert run(redis_url, body) == (1, 2)


# ---------------------------------------------------------------- erasure


@pytest.mark.parametrize("erase_by", ["customer", "anonymous"])
def test_erasure_leaves_no_key_of_either_id(url: str, erase_by: str) -> None:
    now = time.time()

    async def body(s: ProfileStore) -> None:
        await seed(s, "anon-7", "cust-7", now)
        await seed(s, "anon-8", "keep-8", now)
        await s.identities.identify("anon-7", "cust-7", ACTIONS, now)
        await s.identities.identify("other-7", "cust-7", ACTIONS, now)
        await s.identities.identify("anon-8", "keep-8", ACTIONS, now)
        await s.erase("cust-7" if erase_by == "customer" else "anon-7")

    run(url, body)
    client = connect_sync(url)
    try:
        dump: dict[bytes, bytes] = {}
        nodes = (
            [redis.Redis(host=n.host, port=n.port) for n in client.get_primaries()]
            if isinstance(client, redis.RedisCluster)
            else [client]
        )
        for node in nodes:
            dump.update(everything(node))
    finally:
        client.close()
    for gone in (b"anon-7", b"cust-7", b"other-7"):
        assert [k for k, v in dump.items() if gone in k or gone in v] == [], gone
    assert any(b"keep-8" in k for k in dump) and any(b"anon-8" in v for v in dump.values())


def test_a_decision_read_before_the_link_writes_its_contacts_to_the_customer(url: str) -> None:
    plan = shop_plan()
    now = time.time()

    async def body(s: ProfileStore) -> Any:
        from arbiter.engine.decision.decide import decide
        from arbiter.engine.decision.oracle import LiveOracle
        from arbiter.engine.log.writer import DecisionLog
        from arbiter.engine.records import DecideRequest

        await s.put_profile("early", {"visits": 1})
        inputs = await s.fetch("early", plan.needs, now)  # read while not linked yet
        assert inputs.resolved_id is None
        decision, record = decide(
            plan,
            DecideRequest("early", {"channel": "web"}),
            inputs,
            decision_id="d-early",
            now=now,
            oracle=LiveOracle({}, {}),
        )
        assert decision.actions[0].action == "welcome_offer"
        await s.identities.identify("early", "erin", ACTIONS, now)
        log = DecisionLog(s.redis, s)
        log.submit(record, [("welcome_offer", 7 * DAY)])
        await log.flush()  # the write-behind lands after the link
        after = await s.fetch("erin", plan.needs, now + 1)
        index = await s.redis.lrange(keys.decision_index("erin"), 0, -1)
        return after.caps, index

    caps, index = run(url, body)
    assert caps["welcome_offer"] == 1
    assert b"d:d-early" in index
    assert set(snapshot(url, {"early": "A"})) == {"A:alias"}


# --------------------------------------------- windows stored by layout 1


def test_an_anonymous_id_with_windows_not_yet_migrated_merges_them_too(url: str) -> None:
    """Identify between the upgrade and `arbiter migrate`: the old hashes go to the customer."""
    now = time.time()
    anon_events, cust_events = history("anon-9", "cust-9", now)
    old = [(e.customer_id, e.type, e.ts, dict(e.properties)) for e in anon_events]
    client = connect_sync(url)
    try:
        legacy_ingest(client, old, now)
    finally:
        client.close()

    async def body(s: ProfileStore) -> Any:
        await s.add_events(cust_events, now=now)
        ref = [ev("ref-9", e.type, e.ts, None, **e.properties) for e in anon_events + cust_events]
        await s.add_events(ref, now=now)
        report = await s.identities.identify("anon-9", "cust-9", ACTIONS, now)
        again = await s.identities.identify("anon-9", "cust-9", ACTIONS, now)
        assert again.keys_merged == 0
        return report, [await s.aggregates(who, SPECS, now) for who in ("cust-9", "ref-9")]

    report, (merged, ref) = run(url, body)
    assert {"d", "h", "seen"} <= set(report.merged)
    assert merged == pytest.approx(ref)
    assert set(snapshot(url, {"anon-9": "A"})) == {"A:alias"}


def test_migrate_completes_the_merge_of_a_linked_id_instead_of_converting_it(
    redis_url: str,
) -> None:
    """Old hashes left on a linked id (a merge interrupted before the upgrade) reach the customer."""
    now = time.time()
    anon_events, cust_events = history("anon-10", "cust-10", now)
    client = connect_sync(redis_url)
    try:
        old = [(e.customer_id, e.type, e.ts, dict(e.properties)) for e in anon_events]
        legacy_ingest(client, old, now)
    finally:
        client.close()

    async def body(s: ProfileStore) -> Any:
        await s.add_events(cust_events, now=now)
        ref = [ev("ref-10", e.type, e.ts, None, **e.properties) for e in anon_events + cust_events]
        await s.add_events(ref, now=now)
        # The link made, the merge interrupted before it read anything.
        await s.identities._reserve("anon-10", "cust-10")
        await s.identities._link("anon-10", "cust-10")
        report = await migrate_windows(s.redis, now=now)
        again = await migrate_windows(s.redis, now=now)
        return report, again, [await s.aggregates(w, SPECS, now) for w in ("cust-10", "ref-10")]

    report, again, (merged, ref) = run(redis_url, body)
    assert (report.customers, report.linked, report.series) == (1, 1, 0)
    assert (again.customers, again.linked) == (0, 0)
    assert merged == pytest.approx(ref)
    assert set(snapshot(redis_url, {"anon-10": "A"})) == {"A:alias"}

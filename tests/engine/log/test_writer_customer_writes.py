"""The write behind a decision: index entries and contacts, scripted only where contacts are.

A decision that counted no contact indexes its log entry with plain
commands; one that did runs the alias-guarded script. A Redis without the
script loaded (new or restarted) gets it loaded, and only the scripts are
sent again: the plain commands, which ran, are not repeated.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import pytest
from support.store import DAY, run, shop_plan, web_record

from arbiter.engine.log.writer import INDEX_REFRESH_SECONDS, DecisionLog
from arbiter.engine.plan import Plan
from arbiter.engine.store import keys, raw_commands
from arbiter.engine.store.profiles import ProfileStore


async def _decide_and_submit(
    s: ProfileStore,
    log: DecisionLog,
    plan: Plan,
    customer: str,
    now: float,
    contacts: list[tuple[str, int]],
) -> str:
    """One web decision for ``customer``, queued on ``log`` with ``contacts``; its id."""
    record = await web_record(s, plan, customer, f"d-{customer}", now)
    log.submit(record, contacts)
    return record.decision_id


def test_mixed_batch_after_a_script_flush_writes_each_entry_once(redis_url: str) -> None:
    plan = shop_plan()
    now = time.time()

    async def body(s: ProfileStore) -> tuple[list[bytes], list[bytes], dict[str, int], int]:
        await s.redis.script_flush()
        log = DecisionLog(s.redis, s)
        for customer in ("plain", "capped"):
            contacts = [("welcome_offer", 7 * DAY)] if customer == "capped" else []
            await _decide_and_submit(s, log, plan, customer, now, contacts)
        await s.redis.script_flush()  # the read loaded the scripts: gone again
        await log.flush()
        plain = await s.redis.lrange(keys.decision_index("plain"), 0, -1)
        capped = await s.redis.lrange(keys.decision_index("capped"), 0, -1)
        caps = (await s.fetch("capped", plan.needs, now + 1)).caps
        ttl = await s.redis.ttl(keys.decision_index("plain"))
        return plain, capped, caps, ttl

    plain, capped, caps, ttl = run(redis_url, body)
    assert [e[:2] for e in plain] == [b"s:", b"d:"] and plain[1] == b"d:d-plain"
    assert [e[:2] for e in capped] == [b"s:", b"d:"] and capped[1] == b"d:d-capped"
    assert caps["welcome_offer"] == 1
    # The records' 7 days, and the slack that lets a worker refresh it once an hour.
    assert 7 * DAY < ttl <= 7 * DAY + INDEX_REFRESH_SECONDS
    assert not run(redis_url, lambda s: s.redis.exists(keys.contact_history("plain")))


def test_a_batchs_customer_writes_ride_on_the_next_batchs_round_trip(redis_url: str) -> None:
    """Index entries and contacts need the records' stream ids, so they follow the records:
    with the next batch's records, in its round trip, not in one of their own."""
    plan = shop_plan()
    now = time.time()

    async def body(s: ProfileStore) -> None:
        log = DecisionLog(s.redis, s)

        async def submit(customer: str) -> str:
            return await _decide_and_submit(
                s, log, plan, customer, now, [("welcome_offer", 7 * DAY)]
            )

        async def state(customer: str) -> tuple[bool, int, int]:
            stored = bool(await s.redis.exists(keys.decision(f"d-{customer}")))
            index = await s.redis.llen(keys.decision_index(customer))
            cap = (await s.fetch(customer, plan.needs, now + 1)).caps["welcome_offer"]
            return stored, index, cap

        await submit("a")
        await log._write_batch()
        assert await state("a") == (True, 0, 0)  # the record; its customer writes owed
        await submit("b")
        await log._write_batch()  # one round trip: a's customer writes, b's record
        assert await state("a") == (True, 2, 1)
        assert await state("b") == (True, 0, 0)
        await log.flush()  # what is owed is written too
        assert await state("b") == (True, 2, 1)
        # Waiting for one decision waits for its contacts as well (triggers rely on it).
        decision_id = await submit("c")
        await log.flush_through(decision_id)
        assert await state("c") == (True, 2, 1)

    run(redis_url, body)


def test_an_index_expiry_is_set_once_an_hour_and_again_on_a_list_found_new(
    redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker sets an index list's expiry with its first entry, not with every entry;
    a list it skipped that turned out new (erased since) gets it with the next round trip."""
    plan = shop_plan()
    now = time.time()
    sent: list[tuple[Any, ...]] = []
    real = raw_commands.send

    async def send(client: Any, commands: Sequence[Sequence[Any]]) -> list[Any]:
        sent.extend(tuple(c) for c in commands)
        return await real(client, commands)

    monkeypatch.setattr(raw_commands, "send", send)
    index = keys.decision_index("c")

    def expiries() -> int:
        return sum(1 for c in sent if c[0] == "EXPIRE" and c[1] == index)

    async def body(s: ProfileStore) -> list[tuple[int, int]]:
        log = DecisionLog(s.redis, s)
        seen = []
        for step in range(3):
            log.submit(await web_record(s, plan, "c", f"d-{step}", now))
            await log.flush()
            seen.append((expiries(), await s.redis.ttl(index)))
            if step == 1:
                await s.redis.delete(index)  # as erasure does
        seen.append((await s.redis.llen(index), 0))
        return seen

    first, second, third, length = run(redis_url, body)
    assert first[0] == 1 and first[1] > 7 * DAY
    assert second[0] == 1 and second[1] > 7 * DAY  # no second EXPIRE within the hour
    # The third entry made a new list (the second step erased it): its EXPIRE followed.
    assert third[0] == 2 and third[1] > 7 * DAY
    assert length[0] == 2

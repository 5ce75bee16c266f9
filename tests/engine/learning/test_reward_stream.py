"""`RewardGroup.read` sends XREADGROUP raw (`raw_commands`) and parses the reply itself:
the same entries whichever protocol the client speaks, and on a Redis Cluster."""

from __future__ import annotations

import asyncio

import pytest
import redis.asyncio
from support.redis import run_with_client

from arbiter.engine.learning.reward_stream import RewardGroup, parse_reward, stream_entries
from arbiter.engine.store import keys
from arbiter.engine.store.client import AsyncRedisClient


async def _append_and_read(client: AsyncRedisClient) -> list[tuple[str, str, float] | None]:
    group = RewardGroup(client, "g", "me", batch=10, claim_idle_ms=60_000, claim_every=3600)
    await group.create()
    await group.read(())  # the first read claims (nothing yet); then new entries
    for i in range(3):
        fields = {"decision_id": f"d{i}", "action": "a", "reward": str(i / 2), "ts": "1.0"}
        await client.xadd(keys.REWARD_STREAM, fields)  # type: ignore[arg-type]
    entries = await group.read(())
    assert all(isinstance(fields, dict) for _, fields in entries)
    assert await group.read(()) == []  # read once per group
    return [parse_reward(fields) for _, fields in entries]


EXPECTED = [("d0", "a", 0.0), ("d1", "a", 0.5), ("d2", "a", 1.0)]


@pytest.mark.parametrize("protocol", [2, 3])
def test_entries_are_read_alike_in_resp2_and_resp3(redis_url: str, protocol: int) -> None:
    async def main() -> list[tuple[str, str, float] | None]:
        client = redis.asyncio.Redis.from_url(redis_url, protocol=protocol)
        try:
            await client.delete(keys.REWARD_STREAM)
            return await _append_and_read(client)
        finally:
            await client.aclose()

    assert asyncio.run(main()) == EXPECTED


def test_entries_are_read_on_a_cluster(redis_cluster_url: str) -> None:
    assert run_with_client(redis_cluster_url, _append_and_read) == EXPECTED


def test_a_trimmed_entry_keeps_its_id_without_fields() -> None:
    # RESP2 shape, and an entry deleted while pending (XREADGROUP of pending ids: nil fields).
    reply = [[b"s", [[b"1-0", [b"decision_id", b"d", b"action", b"a"]], [b"2-0", None]]]]
    assert stream_entries(reply) == [
        (b"1-0", {b"decision_id": b"d", b"action": b"a"}),
        (b"2-0", None),
    ]
    assert stream_entries(None) == []

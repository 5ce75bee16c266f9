"""The decision log never blocks a decision: a stalled sink drops the oldest records.

The sink is real Redis; the stall is injected by holding the pipeline's
`execute` until the test lets it go (the one fault a real Redis cannot be
asked for on cue without stopping every other client too).
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

from arbiter.engine.log.replay import read_stream
from arbiter.engine.log.writer import DecisionLog
from arbiter.engine.records import (
    DecideRequest,
    DecisionRecord,
    Inputs,
    RecordedRuleset,
)
from arbiter.engine.store import keys
from arbiter.engine.store.client import connect, connect_sync
from arbiter.engine.store.profiles import ProfileStore

QUEUE_MAX = 100


def record(i: int) -> DecisionRecord:
    return DecisionRecord(
        decision_id=f"d{i:05d}",
        ts=time.time(),
        ruleset=RecordedRuleset("shop", "v", "h"),
        request=DecideRequest(f"c{i % 7}"),
        inputs=Inputs(),
        seed=i,
        actions=[],
    )


class StalledRedis:
    """A real client whose pipelines wait at `execute` until `release` is set."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.release = asyncio.Event()
        self.stalled = asyncio.Event()

    def pipeline(self, *args: Any, **kwargs: Any) -> Any:
        pipe = self.client.pipeline(*args, **kwargs)
        execute = pipe.execute

        async def held(*a: Any, **k: Any) -> Any:
            self.stalled.set()
            await self.release.wait()
            return await execute(*a, **k)

        pipe.execute = held
        return pipe

    def __getattr__(self, name: str) -> Any:
        return getattr(self.client, name)


def test_stalled_sink_drops_oldest_and_submit_never_waits(redis_url: str) -> None:
    async def main() -> tuple[list[str], int, int, int]:
        client = connect(redis_url, socket_timeout=5)
        stalled = StalledRedis(client)
        log = DecisionLog(stalled, ProfileStore(client), queue_max=QUEUE_MAX)
        log.start()
        try:
            log.submit(record(0))
            await asyncio.wait_for(stalled.stalled.wait(), 5)  # record 0 is in flight, held
            # The sink is held until `release`: a submit that waited on it would never return.
            accepted = sum(log.submit(record(i)) for i in range(1, 1001))
            depth = len(log.pending)
            stalled.release.set()
            await log.close()
            return (
                [r.decision_id for r in read_stream(connect_sync(redis_url), keys.DECISION_STREAM)],
                accepted,
                log.dropped,
                depth,
            )
        finally:
            await client.aclose()

    written, accepted, dropped, depth = asyncio.run(main())
    # Every submit returned with its record queued; the queue stayed bounded.
    assert accepted == 1000 and depth == QUEUE_MAX
    # The record in flight was kept; of the rest the newest QUEUE_MAX - 1 survive.
    assert dropped == 1000 - (QUEUE_MAX - 1)
    assert written == ["d00000", *[f"d{i:05d}" for i in range(1001 - (QUEUE_MAX - 1), 1001)]]


def test_full_disk_under_the_file_sink_does_not_stop_the_stream(
    redis_url: str, tmp_path: Path
) -> None:
    class FullDisk(DecisionLog):
        def _append_file(self, blobs: list[bytes]) -> None:
            raise OSError(28, "No space left on device")

    async def main() -> tuple[int, int, int]:
        client = connect(redis_url, socket_timeout=5)
        log = FullDisk(client, ProfileStore(client), file_path=tmp_path / "log.jsonl")
        try:
            for i in range(10):
                log.submit(record(i))
            await log.flush()
            return await client.xlen(keys.DECISION_STREAM), log.file_failures, len(log.pending)
        finally:
            await client.aclose()

    assert asyncio.run(main()) == (10, 1, 0)

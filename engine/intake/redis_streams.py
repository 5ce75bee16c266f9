"""The Redis Streams source: sharded intake streams read through one consumer group.

Producers `XADD` to `arb:in:{in<k>}` (k in 0..shards-1, see `shard_of`); each
message has one field, `event` or `identify`, holding the JSON of
`POST /v1/events` (one event) or `POST /v1/identify`. Each shard has its own
hash tag, so on Redis Cluster the shards spread over the nodes; every
consumer reads every shard with its own XREADGROUP (one pipeline per node).

Delivery, at least once:

- a consumer first re-reads its own unacknowledged messages (a restart under
  the same name), then new ones;
- every `claim_idle_ms / 2` it claims (XAUTOCLAIM) messages another consumer
  has held unacknowledged for `claim_idle_ms`: a consumer that died, or hung;
- messages are acknowledged by the consumer after their effects are written.

Bounded: every `trim_every_s`, acknowledged messages are trimmed
(XTRIM MINID below the oldest unacknowledged one), so a stream holds only
what is unread or in flight. Dead letters go to `arb:in:dead`, capped at
`dead_letter_maxlen` (approximately; oldest first).
"""

from __future__ import annotations

import asyncio
import time
import zlib
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from redis.exceptions import ResponseError

from arbiter.engine.intake.source import Delivery, Lag
from arbiter.engine.store import keys

EVENT = b"event"
IDENTIFY = b"identify"


def shard_of(any_id: str, shards: int) -> int:
    """The shard a producer should write an id's messages to (CRC-32 of the UTF-8 id, mod N).

    Any shard is correct (every consumer reads them all); keeping one id on
    one shard keeps its messages in order.
    """
    return zlib.crc32(any_id.encode()) % shards


def _ms(message_id: str | bytes) -> int:
    text = message_id.decode() if isinstance(message_id, bytes) else message_id
    return int(text.split("-", 1)[0])


class RedisStreamSource:
    """`engine.intake.source.Source` over Redis Streams (a Redis or a Redis Cluster)."""

    def __init__(
        self,
        redis: Any,
        *,
        shards: int = 1,
        group: str = "arbiter",
        consumer: str = "consumer-1",
        claim_idle_ms: int = 30_000,
        block_ms: int = 200,
        trim_every_s: float = 5.0,
        dead_letter_maxlen: int = 100_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """`redis`: an asyncio client with bytes replies; the rest as the module says."""
        if shards < 1:
            raise ValueError("shards must be at least 1")
        self.redis = redis
        self.streams = [keys.intake_stream(k) for k in range(shards)]
        self.group, self.consumer = group, consumer
        self.claim_idle_ms, self.block_ms = claim_idle_ms, block_ms
        self.trim_every_s, self.dead_letter_maxlen = trim_every_s, dead_letter_maxlen
        self.clock = clock
        # Streams where this consumer's own pending messages may remain (after a restart).
        self._own_pending = set(self.streams)
        self._claim_cursor = dict.fromkeys(self.streams, "0-0")
        self._last_claim = float("-inf")
        self._last_trim = clock()
        self._turn = 0
        self._ready = False

    async def setup(self) -> None:
        """Create the consumer group on every shard (and the streams), if missing."""
        for stream in self.streams:
            try:
                await self.redis.xgroup_create(stream, self.group, id="0", mkstream=True)
            except ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise
        self._ready = True

    async def read(self, count: int) -> list[Delivery]:
        """Own pending first, then claimed, then new messages; blocks briefly when idle."""
        if not self._ready:
            await self.setup()
        out = await self._read_own_pending(count)
        if not out and self.clock() - self._last_claim >= self.claim_idle_ms / 2000:
            self._last_claim = self.clock()
            out = await self._claim(count)
        if not out:
            out = await self._read_new(count, block=False)
        if not out:
            # Nothing anywhere: wait on one shard (in turn), briefly, so a producer's
            # next message is seen at once without spinning.
            stream = self.streams[self._turn % len(self.streams)]
            self._turn += 1
            out = await self._read_new(count, block=True, only=stream)
        if self.clock() - self._last_trim >= self.trim_every_s:
            self._last_trim = self.clock()
            await self.trim()
        return out

    def rewind(self) -> None:
        """Re-read this consumer's own pending messages first on the next `read`."""
        self._own_pending = set(self.streams)

    async def _read_own_pending(self, count: int) -> list[Delivery]:
        if not self._own_pending:
            return []
        out: list[Delivery] = []
        for stream in sorted(self._own_pending):
            reply = await self.redis.xreadgroup(
                self.group, self.consumer, {stream: "0"}, count=count
            )
            entries = reply[0][1] if reply else []
            if not entries:
                self._own_pending.discard(stream)
            out += self._deliveries(stream, entries, redelivered=True)
        return out

    async def _claim(self, count: int) -> list[Delivery]:
        out: list[Delivery] = []
        for stream in self.streams:
            reply = await self.redis.xautoclaim(
                stream,
                self.group,
                self.consumer,
                self.claim_idle_ms,
                start_id=self._claim_cursor[stream],
                count=count,
            )
            cursor, entries = reply[0], reply[1]
            self._claim_cursor[stream] = cursor.decode() if isinstance(cursor, bytes) else cursor
            out += self._deliveries(stream, entries, redelivered=True)
        return out

    async def _read_new(
        self, count: int, *, block: bool, only: str | None = None
    ) -> list[Delivery]:
        streams = [only] if only is not None else self.streams
        per_stream = max(1, -(-count // len(streams)))
        if block:
            reply = await self.redis.xreadgroup(
                self.group, self.consumer, {streams[0]: ">"}, count=per_stream, block=self.block_ms
            )
            return self._deliveries(streams[0], reply[0][1], False) if reply else []
        # One XREADGROUP per shard (a cluster refuses several slots in one command),
        # all in one pipeline: one round trip per node.
        pipe = self.redis.pipeline(transaction=False)
        for stream in streams:
            pipe.xreadgroup(self.group, self.consumer, {stream: ">"}, count=per_stream)
        out: list[Delivery] = []
        for stream, reply in zip(streams, await pipe.execute(), strict=True):
            if reply:
                out += self._deliveries(stream, reply[0][1], False)
        return out

    def _deliveries(
        self, stream: str | bytes, entries: Sequence[Any], redelivered: bool
    ) -> list[Delivery]:
        name = stream.decode() if isinstance(stream, bytes) else stream
        out = []
        for message_id, fields in entries:
            mid = message_id.decode() if isinstance(message_id, bytes) else message_id
            # A message trimmed or deleted while pending comes back without fields.
            out.append(Delivery(name, mid, fields or {}, redelivered))
        return out

    async def ack(self, deliveries: Sequence[Delivery]) -> None:
        """XACK, one per shard, in one pipeline."""
        by_stream: dict[str, list[str]] = {}
        for d in deliveries:
            by_stream.setdefault(d.stream, []).append(d.message_id)
        if not by_stream:
            return
        pipe = self.redis.pipeline(transaction=False)
        for stream, ids in by_stream.items():
            pipe.xack(stream, self.group, *ids)
        await pipe.execute()

    async def dead_letter(self, delivery: Delivery, reason: str) -> None:
        """XADD to `arb:in:dead`: the reason, where the message came from, its fields."""
        fields: dict[bytes | str, bytes | str] = {
            "reason": reason,
            "stream": delivery.stream,
            "message_id": delivery.message_id,
        }
        for name, value in delivery.fields.items():
            fields[b"field:" + name] = value
        await self.redis.xadd(
            keys.INTAKE_DEAD_LETTERS, fields, maxlen=self.dead_letter_maxlen, approximate=True
        )

    async def trim(self) -> None:
        """Drop acknowledged messages: below the oldest pending one, or all delivered ones."""
        for stream in self.streams:
            group = await self._group_info(stream)
            if group is None:
                continue
            bound = group["last-delivered-id"]
            if int(group["pending"]) > 0:
                summary = await self.redis.xpending(stream, self.group)
                bound = summary["min"] or bound
            bound = bound.decode() if isinstance(bound, bytes) else str(bound)
            if bound != "0-0":
                # MINID keeps `bound` itself and everything after it.
                await self.redis.xtrim(stream, minid=bound, approximate=True)

    async def _group_info(self, stream: str) -> Mapping[str, Any] | None:
        for group in await self.redis.xinfo_groups(stream):
            name = group["name"]
            if (name.decode() if isinstance(name, bytes) else name) == self.group:
                return dict(group)
        return None

    async def lag(self) -> list[Lag]:
        """Per shard: age of the oldest undelivered message, pending count, length."""
        out = []
        now_ms = int(time.time() * 1000)
        for stream in self.streams:
            try:
                group = await self._group_info(stream)
            except ResponseError:  # no stream yet
                out.append(Lag(stream, 0.0, 0, 0, False))
                continue
            length = int(await self.redis.xlen(stream))
            if group is None:
                out.append(Lag(stream, 0.0, 0, length, length > 0))
                continue
            delivered = group["last-delivered-id"]
            delivered = delivered.decode() if isinstance(delivered, bytes) else str(delivered)
            first = await self.redis.xrange(stream, min=f"({delivered}", count=1)
            seconds = max(0.0, (now_ms - _ms(first[0][0])) / 1000) if first else 0.0
            out.append(Lag(stream, seconds, int(group["pending"]), length, bool(first)))
        return out

    async def publish(self, messages: Sequence[tuple[str, bytes, bytes]]) -> list[bytes]:
        """Append (id used for the shard, field, JSON) messages, in one pipeline (tests, tools)."""
        pipe = self.redis.pipeline(transaction=False)
        for shard_key, field, payload in messages:
            stream = self.streams[shard_of(shard_key, len(self.streams))]
            pipe.xadd(stream, {field: payload})
        replies: list[bytes] = await pipe.execute()
        return replies


async def wait_drained(source: RedisStreamSource, timeout_s: float) -> bool:
    """True once every shard has nothing unread and nothing pending (tests, tools)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not any(x.pending or x.unread for x in await source.lag()):
            return True
        await asyncio.sleep(0.1)
    return False

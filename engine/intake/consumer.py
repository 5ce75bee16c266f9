"""The intake consumer: messages from a `Source` into the windows, acknowledged after the write.

A batch is read, each message checked (`engine.intake.messages`), events
written with `ProfileStore.add_events` (the same scripts as `POST
/v1/events`) and identifies run with `Identities.identify`, in message order;
then the whole batch is acknowledged. If the process dies before the
acknowledgement, the batch is delivered again and nothing counts twice:
every event has an id (its own `event_id`, else the message's stream and
id), and the store counts an id once per customer; an identify is
idempotent. A message that can never be processed (bad JSON, a missing or
mistyped field, an identify refused with a 409) goes to the source's dead
letters with the reason, and is acknowledged. Redis failing is not the
message's fault: nothing is acknowledged, the batch comes back.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field

from redis.exceptions import RedisError

from arbiter.dsl.nodes import TriggerDecl
from arbiter.engine.intake import messages
from arbiter.engine.intake.messages import EventSchema, Identify, InvalidMessage
from arbiter.engine.intake.redis_streams import EVENT, IDENTIFY
from arbiter.engine.intake.source import Delivery, Source
from arbiter.engine.store.identity import IdentityConflict
from arbiter.engine.store.profiles import Event, ProfileStore
from arbiter.engine.triggers.schedule import schedule_triggers

log = logging.getLogger("arbiter.intake")


@dataclass
class IntakeStats:
    """What a consumer did since it started."""

    messages: int = 0
    counted: int = 0
    duplicates: int = 0
    identified: int = 0
    dead: int = 0
    failures: int = 0
    started: float = field(default_factory=time.monotonic)

    def rate(self) -> float:
        """Messages per second since the start."""
        return self.messages / max(time.monotonic() - self.started, 1e-9)

    def line(self) -> str:
        """One progress line for people."""
        return (
            f"{self.messages} messages ({self.rate():,.0f}/s): {self.counted} counted, "
            f"{self.duplicates} duplicates, {self.identified} identifies, {self.dead} dead letters"
        )


class IntakeConsumer:
    """Reads a source batch by batch into the store until stopped."""

    def __init__(
        self,
        source: Source,
        store: ProfileStore,
        *,
        schema: Callable[[], EventSchema],
        actions: Callable[[], Sequence[str]],
        batch: int = 500,
        clock: Callable[[], float] = time.time,
        on_count: Callable[[str, int], None] | None = None,
        outcomes: Callable[[], Collection[str]] = frozenset,
        triggers: Callable[[], Sequence[tuple[str, TriggerDecl]]] = tuple,
        grouped: Callable[[], Collection[str]] = frozenset,
        trigger_shards: int = 1,
    ) -> None:
        """`schema` and `actions` are asked per batch, so hot-swapped rulesets apply at once.

        So are `outcomes` (event types a live ruleset rewards or measures: they also
        go to the outcome stream, as from `POST /v1/events`) and `triggers` (the live
        `trigger` declarations, by ruleset: events schedule their firings, over
        `trigger_shards` schedule shards) and `grouped` (`"<event>.<prop>"` a live
        ruleset counts per value).

        `on_count(outcome, n)` is told of every outcome as it happens ('counted',
        'duplicate', 'identify', 'dead_letter'): the server feeds its metrics so.
        """
        self.source, self.store = source, store
        self.trigger_shards = trigger_shards
        self.schema, self.actions = schema, actions
        self.batch, self.clock = batch, clock
        self.on_count = on_count or (lambda outcome, n: None)
        self.outcomes, self.triggers, self.grouped = outcomes, triggers, grouped
        self.stats = IntakeStats()

    async def run(self, stop: asyncio.Event) -> None:
        """Consume until `stop` is set; Redis failures back off and retry, never stop it."""
        backoff = 0.05
        while not stop.is_set():
            try:
                await self.run_once()
                backoff = 0.05
            except (RedisError, OSError) as exc:
                self.stats.failures += 1
                log.warning("intake: Redis failed (%s); retrying in %.2fs", exc, backoff)
                # The failed batch is still ours, unacknowledged: read it again first.
                self.source.rewind()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), backoff)
                backoff = min(backoff * 2, 2.0)

    async def run_once(self) -> int:
        """Read, process and acknowledge one batch; the number of messages in it."""
        deliveries = await self.source.read(self.batch)
        if deliveries:
            await self.process(deliveries)
        return len(deliveries)

    async def process(self, deliveries: Sequence[Delivery]) -> None:
        """Apply a batch in order, then acknowledge it whole."""
        now = self.clock()
        schema = self.schema()
        events: list[Event] = []
        for delivery in deliveries:
            try:
                item = self._parse(delivery, now, schema)
                if isinstance(item, Identify):
                    await self._write(events, now)  # what came before it, first
                    await self.store.identities.identify(
                        item.anonymous_id, item.customer_id, self.actions(), now
                    )
                    self.stats.identified += 1
                    self.on_count("identify", 1)
                else:
                    events.append(item)
            except (InvalidMessage, IdentityConflict) as exc:
                await self.source.dead_letter(delivery, str(exc))
                self.stats.dead += 1
                self.on_count("dead_letter", 1)
        await self._write(events, now)
        await self.source.ack(deliveries)
        self.stats.messages += len(deliveries)

    def _parse(self, delivery: Delivery, now: float, schema: EventSchema) -> Event | Identify:
        fields = delivery.fields
        if not fields:
            raise InvalidMessage(
                None, "the message is gone from the stream (trimmed before it was processed)"
            )
        if len(fields) != 1 or not (EVENT in fields or IDENTIFY in fields):
            names = sorted(k.decode("utf-8", "replace") for k in fields)
            raise InvalidMessage(
                None, f"a message has one field, 'event' or 'identify' (got {names})"
            )
        if IDENTIFY in fields:
            return messages.parse_identify(messages.decode_json(fields[IDENTIFY]))
        event = messages.parse_event(messages.decode_json(fields[EVENT]), now, schema)
        if event.event_id is None:
            # The message's own name: a redelivery of it is recognised as a duplicate.
            event = dataclasses.replace(event, event_id=delivery.origin)
        return event

    async def _write(self, events: list[Event], now: float) -> None:
        if not events:
            return
        counted = await self.store.add_events(
            events, now=now, outcomes=self.outcomes(), grouped=self.grouped()
        )
        specs = self.triggers()
        if specs:
            await schedule_triggers(
                self.store.redis, specs, events, now, shards=self.trigger_shards
            )
        self.stats.counted += counted
        self.stats.duplicates += len(events) - counted
        self.on_count("counted", counted)
        self.on_count("duplicate", len(events) - counted)
        events.clear()

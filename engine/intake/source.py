"""The small interface between the intake consumer and where messages come from.

A source hands out batches of `Delivery`s, takes acknowledgements and dead
letters, and reports how far behind it is. `engine.intake.redis_streams` is
the Redis Streams source; a Kafka source would implement the same four
methods (commit offsets for `ack`, a dead-letter topic), and the consumer and
the window code would not change.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True)
class Delivery:
    """One message as delivered: where from (`stream`, `message_id`) and its fields."""

    stream: str
    message_id: str
    fields: Mapping[bytes, bytes]
    redelivered: bool = False  # claimed from another consumer or read again after a restart

    @property
    def origin(self) -> str:
        """A name unique to this message in this source (the default event id)."""
        return f"{self.stream}/{self.message_id}"


@dataclass(frozen=True, slots=True)
class Lag:
    """How far one stream (or partition) is behind."""

    stream: str
    seconds: float  # age of the newest message not yet delivered to the group, or 0
    pending: int  # delivered, not yet acknowledged
    length: int  # messages held in the stream (unread, pending, not yet trimmed)
    unread: bool  # some message has not been delivered to the group yet


class Source(Protocol):
    """Where the consumer reads from."""

    async def read(self, count: int) -> list[Delivery]:
        """Up to `count` messages: this consumer's own unacknowledged ones first, then
        those of dead consumers, then new ones; waits a little when there are none."""
        ...

    def rewind(self) -> None:
        """Deliver this consumer's unacknowledged messages again on the next read."""
        ...

    async def ack(self, deliveries: Sequence[Delivery]) -> None:
        """Mark messages processed; they are never delivered again."""
        ...

    async def dead_letter(self, delivery: Delivery, reason: str) -> None:
        """Keep an unprocessable message, with the reason, where people can look."""
        ...

    async def lag(self) -> list[Lag]:
        """How far behind each stream is."""
        ...

"""Copy decision records from the Redis stream to files, by time range.

Stream entry ids start with the millisecond the record was appended (a few
ms after the decision, since the log writes behind the response), so a time
range is an id range and costs no scan of what lies outside it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from arbiter.engine.log.files import RotatingFiles
from arbiter.engine.store.compression import plain_records_sync

__all__ = ["export_stream", "stream_count"]

BATCH = 1000


def _bounds(since_ms: int | None, until_ms: int | None) -> tuple[str, str]:
    # An id of bare milliseconds means "ms-0" as a minimum and "ms-<max>" as a maximum;
    # `until` is exclusive, so the maximum is the millisecond before it.
    low = "-" if since_ms is None else str(since_ms)
    high = "+" if until_ms is None else str(until_ms - 1)
    return low, high


def stream_count(redis: Any, stream: str) -> int:
    """How many entries the stream holds (an upper bound for a range's count)."""
    return int(redis.xlen(stream))


def export_stream(
    redis: Any,
    stream: str,
    files: RotatingFiles,
    *,
    since_ms: int | None = None,
    until_ms: int | None = None,
    progress: Callable[[int], None] | None = None,
) -> int:
    """Append the stream's records with ids in [since, until) to ``files``; how many.

    ``redis`` is a synchronous client. ``progress`` is called with each
    batch's size. The files are left open (the caller closes them).
    """
    low, high = _bounds(since_ms, until_ms)
    written = 0
    while True:
        batch = redis.xrange(stream, min=low, max=high, count=BATCH)
        if not batch:
            return written
        # JSON in the files, whatever the stream holds (engine.store.compression).
        plain = plain_records_sync(redis, [fields[b"r"] for _entry_id, fields in batch])
        readable = [
            (blob, int(entry_id.split(b"-")[0]) / 1000)
            for blob, (entry_id, _fields) in zip(plain, batch, strict=True)
            if blob is not None
        ]
        files.write([blob for blob, _ in readable], [ts for _, ts in readable])
        written += len(batch)
        if progress is not None:
            progress(len(batch))
        if len(batch) < BATCH:
            return written
        low = "(" + batch[-1][0].decode()

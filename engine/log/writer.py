"""The decision log: records written behind the response, in batches.

`DecisionLog.submit` never blocks and never fails a decision: it puts the
record on a bounded queue. A background task drains the queue in batches of
plain commands (`engine.store.raw_commands`): the record under
`keys.decision(id)` (for joining feedback, with a TTL) and an entry on the
decision stream; then, once the stream ids are known, the customer's
contact-cap counters, an index entry per customer so that erasure can find
their log entries, and the reward exposures the decision opened
(`engine.learning.attribution`). Those customer writes ride on the next
batch's round trip (one round trip a batch instead of two: every round trip
costs Redis more than the commands in it, `benchmarks/RESULTS.md`, "Where
Redis CPU goes"), or go alone one linger later when no batch follows;
`flush` and `flush_through` write them too. When Redis fails the batch is retried with backoff;
when the queue is full (the sink stalled) the *oldest* waiting record is
dropped and counted, never one being written and never the decision itself.
A failing file sink (a full disk) is counted and logged, and does not hold
back the Redis writes: the stream is the log of record.

Both copies in Redis are compressed with a zstd dictionary shared through Redis
(`engine.store.compression`: about six times smaller); the files get JSON.
The stream is capped (``stream_maxlen``, trimmed approximately, oldest first).
Records also go, after Redis took them, to a single JSON-lines file
(``file_path``) and/or to rotating files (``files``, see `engine.log.files`);
`arbiter logs export` copies a time range of the stream to such files.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from redis.exceptions import NoScriptError

from arbiter.engine.learning.attribution import Exposure, exposure_commands
from arbiter.engine.log.files import RotatingFiles
from arbiter.engine.records import ENCODER, DecisionRecord
from arbiter.engine.store import keys, raw_commands
from arbiter.engine.store.compression import RecordCompressor
from arbiter.engine.store.identity import redirect_of
from arbiter.engine.store.profiles import AFTER_DECISION_LUA, ProfileStore

log = logging.getLogger("arbiter.decision_log")

BATCH_MAX = 256
LINGER_SECONDS = 0.005
WRITE_TIMEOUT_SECONDS = 5.0
COMPRESSION_RETRY_SECONDS = 5
#: A customer's index list outlives its newest entry's record by up to this much, and a
#: worker refreshes its expiry at most this often: the `EXPIRE` after every index entry
#: was one command in nine of a decision's Redis work.
INDEX_REFRESH_SECONDS = 3600
#: Index lists a worker remembers refreshing (least recently refreshed forgotten first).
INDEX_REFRESH_REMEMBERED = 100_000
_STREAM = keys.DECISION_STREAM


@dataclass(slots=True)
class _Entry:
    record: DecisionRecord
    contacts: Sequence[tuple[str, int]]
    exposures: Sequence[Exposure] = ()
    # Set once the record is on the stream: a retry of the batch must not append it
    # again, or erasure (which follows the index to this id) would miss the copy.
    stream_id: bytes | None = None


@dataclass(slots=True)
class _Owed:
    """Customer writes of a batch whose records are stored, sent with the next round trip."""

    entries: list[_Entry]
    stream_ids: list[bytes]
    extra: list[tuple[Any, ...]]  # exposures, and index expiries found missing

    @property
    def pending(self) -> bool:
        """Whether anything is owed."""
        return bool(self.entries or self.extra)


_NOTHING_OWED = _Owed([], [], [])


class DecisionLog:
    """Write-behind decision log (Redis stream + optional JSONL file)."""

    def __init__(
        self,
        redis: Any,
        store: ProfileStore,
        *,
        ttl_seconds: int = 7 * 86400,
        stream_maxlen: int = 1_000_000,
        queue_max: int = 50_000,
        file_path: str | Path | None = None,
        files: RotatingFiles | None = None,
        records: bool = True,
        compression: RecordCompressor | None = None,
    ) -> None:
        """`records=False` writes no decision records (stream, record key, index): caps only.
        `compression` shrinks the records stored in Redis (`engine.store.compression`; by
        default with a dictionary shared through Redis)."""
        self.redis = redis
        self.store = store
        self.ttl = ttl_seconds
        self.maxlen = stream_maxlen
        self.queue_max = queue_max
        self.file_path = Path(file_path) if file_path else None
        self.files = files
        self.records = records
        self.compression = compression if compression is not None else RecordCompressor()
        self._compression_retry_at = 0.0
        self._queue: deque[_Entry] = deque()
        self._wake = asyncio.Event()
        self.pending: dict[str, DecisionRecord] = {}
        self.dropped = 0
        self.written = 0
        self.failures = 0
        self.file_failures = 0
        # The first `_in_flight` queue entries are being written: never dropped.
        self._in_flight = 0
        self._owed = _NOTHING_OWED
        # Index key -> when this worker last set its expiry (time.monotonic).
        self._index_refreshed: OrderedDict[str, float] = OrderedDict()
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        # flush() from a request (erasure) and the background task must not write one batch twice.
        self._lock = asyncio.Lock()

    def start(self) -> None:
        """Start the background writer on the running event loop."""
        self._task = asyncio.get_running_loop().create_task(self._run(), name="decision-log")

    def submit(
        self,
        record: DecisionRecord,
        contacts: Sequence[tuple[str, int]] = (),
        exposures: Sequence[Exposure] = (),
    ) -> bool:
        """Queue a record (the contacts it counts against caps, the reward exposures it
        opens); False if dropped.

        A full queue drops its oldest record not being written (the newest
        decisions matter most to feedback and learning); only when every
        queued record is in flight is this one dropped instead.
        """
        if len(self._queue) >= self.queue_max:
            self.dropped += 1
            if len(self._queue) <= self._in_flight:
                return False
            oldest = self._queue[self._in_flight]
            del self._queue[self._in_flight]
            self.pending.pop(oldest.record.decision_id, None)
        self._queue.append(_Entry(record, contacts, exposures))
        self.pending[record.decision_id] = record
        self._wake.set()
        return True

    async def flush(self) -> None:
        """Write everything queued now (used by tests, shutdown and the CLI)."""
        while self._queue or self._owed.pending:
            await self._write_batch()

    async def flush_through(self, decision_id: str) -> None:
        """Write queued batches until ``decision_id``'s record is stored (or was never queued).

        Bounded, unlike `flush` under load: the queue is first in, first out,
        so this stops with the batch holding that record, however many
        records arrive meanwhile.
        """
        while decision_id in self.pending:
            await self._write_batch()
        if any(e.record.decision_id == decision_id for e in self._owed.entries):
            await self._write_batch()  # its contacts and index entry too

    async def close(self) -> None:
        """Flush what can be flushed and stop the writer."""
        self._closing = True
        self._wake.set()
        if self._task is not None:
            try:
                await asyncio.wait_for(self._task, timeout=5)
            except (TimeoutError, asyncio.CancelledError):
                self._task.cancel()
        try:
            await asyncio.wait_for(self.flush(), timeout=5)
        except Exception as exc:
            log.warning(
                "decision log: %d records not written at shutdown: %s", len(self._queue), exc
            )
        if self.files is not None:
            await asyncio.to_thread(self.files.close)

    async def _run(self) -> None:
        backoff = 0.05
        while not self._closing:
            if not self._queue and not self._owed.pending:
                self._wake.clear()
                await self._wake.wait()
                continue
            if len(self._queue) < BATCH_MAX:
                # Linger briefly so that one pipeline carries many records.
                await asyncio.sleep(LINGER_SECONDS)
            if self.compression.due and time.monotonic() >= self._compression_retry_at:
                await self._settle_compression()
            try:
                await self._write_batch()
                backoff = 0.05
            except Exception as exc:
                self.failures += 1
                log.warning("decision log write failed (%s); retrying in %.2fs", exc, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 2.0)

    async def _settle_compression(self) -> None:
        """A first look for the deployment's dictionary, or training one (~30 ms in a
        thread) once enough records went by plainly; retried next batch if Redis fails."""
        try:
            await self.compression.settle(self.redis)
        except Exception as exc:
            self._compression_retry_at = time.monotonic() + COMPRESSION_RETRY_SECONDS
            log.warning(
                "decision log: record compression not set up yet (%s); next try in %d s",
                exc,
                COMPRESSION_RETRY_SECONDS,
            )

    async def _write_batch(self) -> None:
        async with self._lock:
            if self._queue or self._owed.pending:
                await self._write_locked()

    async def _write_locked(self) -> None:
        batch = [self._queue[i] for i in range(min(BATCH_MAX, len(self._queue)))]
        self._in_flight = len(batch)
        try:
            await self._write_entries(batch)
        finally:
            self._in_flight = 0
        for _ in batch:
            self._queue.popleft()
        for entry in batch:
            self.pending.pop(entry.record.decision_id, None)
        self.written += len(batch)

    async def _write_entries(self, batch: list[_Entry]) -> None:
        blobs = [ENCODER.encode(e.record) for e in batch]
        async with asyncio.timeout(WRITE_TIMEOUT_SECONDS):
            unwritten = [(e, b) for e, b in zip(batch, blobs, strict=True) if e.stream_id is None]
            # Plain commands in one write (`raw_commands`): redis-py's pipeline cost the
            # worker more per command than the record's encoding.
            commands: list[tuple[Any, ...]] = []
            if self.records:
                ttl, maxlen = self.ttl, self.maxlen
                for entry, blob in unwritten:
                    kept = self.compression.compress(blob)
                    commands.append(
                        ("SET", keys.decision(entry.record.decision_id), kept, "EX", ttl)
                    )
                    commands.append(("XADD", _STREAM, "MAXLEN", "~", maxlen, "*", b"r", kept))
            else:
                unwritten = []

            def stored(results: Sequence[Any]) -> None:
                for r in results:
                    if isinstance(r, Exception):
                        raise r
                # Stream ids are known only now; the customer-side writes need them for erasure.
                for (entry, _), sid in zip(unwritten, results[1::2], strict=True):
                    entry.stream_id = sid

            # The previous batch's customer writes, then these records, in one round trip.
            owed = self._owed
            expiries = await self._customer_writes(
                owed.entries, owed.stream_ids, owed.extra, ride=commands, on_ride=stored
            )
            # This batch's customer writes are owed to the next round trip. They come after
            # its records (a reward attributed to an exposure must find its record).
            self._owed = _Owed(
                list(batch),
                [e.stream_id or b"" for e in batch],
                [c for e in batch if e.exposures for c in exposure_commands(e.exposures, self.ttl)]
                + expiries,
            )
        if not blobs:
            return
        if self.file_path is not None:
            try:
                await asyncio.to_thread(self._append_file, blobs)
            except OSError as exc:
                self.file_failures += 1
                log.warning(
                    "decision log file %s: %d records not appended (%s); they are on the stream",
                    self.file_path,
                    len(blobs),
                    exc,
                )
        if self.files is not None:
            try:
                await asyncio.to_thread(self.files.write, blobs)
            except OSError as exc:
                self.file_failures += 1
                log.warning(
                    "decision log files: %d records not written (%s); they are on the stream",
                    len(blobs),
                    exc,
                )

    async def _customer_writes(
        self,
        batch: Sequence[_Entry],
        stream_ids: Sequence[bytes],
        extra: Sequence[tuple[Any, ...]] = (),
        *,
        ride: Sequence[tuple[Any, ...]] = (),
        on_ride: Callable[[Sequence[Any]], None] | None = None,
    ) -> list[tuple[Any, ...]]:
        """Index entries and contact counters: one script call per decision that counted a
        contact, one or two plain commands for one that did not; scripts retried if
        unloaded. Returns the `EXPIRE`s owed to index lists found new (see below).
        `ride` commands (the next batch's records) go last in the first round trip, and
        `on_ride` gets their replies before these are looked at.

        Only contacts need the script: caps must be counted on the customer an id is
        linked to, atomically. An index entry alone goes to the id the decision read with
        plain `RPUSH`/`EXPIRE` (a fifth of the script's Redis time): if that id was linked
        since (a race of milliseconds), the entry stays on the linked id, where erasure of
        the person still finds it (it erases every linked id) and a repeated identify
        moves it to the customer. `extra` commands (the exposures) go with the first
        round trip, after these.

        An index list expires `INDEX_REFRESH_SECONDS` after its newest record would, and
        this worker sets that expiry at most once per `INDEX_REFRESH_SECONDS` per list.
        A list it skipped that turns out new (`RPUSH` answers 2: erased or expired
        since) gets its `EXPIRE` with the next round trip, so no list is left to live
        forever.
        """
        # The customer a linked anonymous id resolved to when the decision read it.
        owners = [e.record.inputs.resolved_id or e.record.request.customer_id for e in batch]
        reloads = redirects = 0
        sha = self.store.after_decision_sha
        index_ttl = self.ttl + INDEX_REFRESH_SECONDS
        owed: list[tuple[Any, ...]] = []
        now = time.monotonic()
        while True:
            commands: list[tuple[Any, ...]] = []
            scripted: list[int] = []  # batch positions
            script_at: list[int] = []  # their commands' positions
            refreshed: list[str] = []  # index lists whose expiry these commands set
            unexpired: list[tuple[int, str]] = []  # (RPUSH position, list) without EXPIRE
            for i, (entry, sid, owner) in enumerate(zip(batch, stream_ids, owners, strict=True)):
                rec = entry.record
                index = keys.decision_index(owner)
                if not entry.contacts:
                    if sid:  # nothing to write when the record was not logged
                        commands.append(
                            ("RPUSH", index, b"s:" + sid, b"d:" + rec.decision_id.encode())
                        )
                        if self._index_expiry_due(index, now):
                            commands.append(("EXPIRE", index, index_ttl))
                            refreshed.append(index)
                        else:
                            unexpired.append((len(commands) - 1, index))
                    continue
                key_list, args = self.store.after_decision_command(
                    owner, sid, rec.decision_id, index_ttl, entry.contacts, rec.ts
                )
                script_at.append(len(commands))
                commands.append(("EVALSHA", sha, len(key_list), *key_list, *args))
                scripted.append(i)
                if sid:
                    refreshed.append(index)
            commands += extra
            extra = ()
            if not commands and not ride:
                return owed
            replies = await raw_commands.send(self.redis, [*commands, *ride])
            if ride:
                ridden, replies = replies[len(commands) :], replies[: len(commands)]
                ride = ()
                if on_ride is not None:
                    on_ride(ridden)
            for r in replies:
                if isinstance(r, Exception) and not isinstance(r, NoScriptError):
                    raise r
            results = [replies[k] for k in script_at]
            # Remembered only once written: a failed batch is sent again with its EXPIREs.
            self._remember_refreshed(refreshed, now)
            owed += [("EXPIRE", index, index_ttl) for k, index in unexpired if replies[k] == 2]
            if any(isinstance(r, NoScriptError) for r in results):
                if reloads == 1:
                    raise NoScriptError("after-decision script could not be loaded")
                # A new or restarted Redis has no scripts: only the scripts are sent again
                # (the plain commands ran; the scripts did not, and are idempotent).
                reloads += 1
                await self.redis.script_load(AFTER_DECISION_LUA)
                again = scripted
                owners = [owners[i] for i in again]
            else:
                # An id linked to a customer since its decision read it: write for the customer.
                moved = {i: redirect_of(r) for i, r in zip(scripted, results, strict=True)}
                redirected = {i: target for i, target in moved.items() if target is not None}
                if not redirected or redirects == 1:  # links are one level deep
                    return owed
                redirects += 1
                again = list(redirected)
                owners = [redirected[i] for i in again]
            batch = [batch[i] for i in again]
            stream_ids = [stream_ids[i] for i in again]

    def _index_expiry_due(self, index: str, now: float) -> bool:
        """Whether this worker has not set ``index``'s expiry in `INDEX_REFRESH_SECONDS`."""
        last = self._index_refreshed.get(index)
        return last is None or now - last >= INDEX_REFRESH_SECONDS

    def _remember_refreshed(self, indexes: Sequence[str], now: float) -> None:
        remembered = self._index_refreshed
        for index in indexes:
            remembered[index] = now
            remembered.move_to_end(index)
        while len(remembered) > INDEX_REFRESH_REMEMBERED:
            remembered.popitem(last=False)

    def _append_file(self, blobs: list[bytes]) -> None:
        assert self.file_path is not None
        with self.file_path.open("ab") as fh:
            fh.write(b"".join(b + b"\n" for b in blobs))

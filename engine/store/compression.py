"""Decision records in Redis, compressed with a zstd dictionary shared through Redis.

Every decision's record is stored twice: on the decision stream (the log,
capped by count, a million records by default) and under
``keys.decision(id)`` for a week (``ARBITER_DECISION_TTL_S``) so that
feedback, the learner and triggers can join it. Together they were most of
the log's Redis memory and most of the bytes Redis reads per decision
(two copies of ~1.5 KB of JSON). Records of one deployment are alike (the same fields,
actions, payloads and aggregate names), so a zstd dictionary trained on a few
hundred of them shrinks one about six times (1,492 → ~250 bytes on the
reference workload's records; ~130 with a dictionary of unscrubbed records,
which would hold customer values) at ~2 µs to compress and ~1 µs to
decompress, where zstd without a dictionary halves it at ~7 µs.

How the dictionary is shared:

- The writer (`RecordCompressor`) stores records plainly until it has seen
  `TRAIN_ON` of them, trains a dictionary from them in a thread, stores it
  under ``keys.log_dictionary(id)`` (no expiry) and offers it as
  ``keys.LOG_DICTIONARY`` (``SET NX``): the first worker's offer wins, and the
  others (and every later start) adopt the dictionary named there.
- A compressed record is a zstd frame that names its dictionary's id.
  Readers (`plain_records`) fetch a dictionary they have not seen by that id
  and keep it for the process; a plain record (JSON, which starts with
  ``{``) is returned as is, so stores written before this, or with
  ``ARBITER_DECISION_LOG_COMPRESSION=off``, read the same.
- The samples are scrubbed before training (`scrubbed`): the customer's ids,
  the request's context, the profile, the aggregates and the bandits'
  features lose their values, so a dictionary holds the records' structure
  and the ruleset's vocabulary, and no personal data that erasure could not
  reach.

Both copies hold the same compressed bytes; files (``ARBITER_DECISION_LOG_FILE``,
``ARBITER_DECISION_LOG_DIR``, ``arbiter logs export``) always get JSON.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Sequence
from typing import Any, Final

import zstandard

from arbiter.engine.records import ENCODER, RECORD_DECODER
from arbiter.engine.store import keys

log = logging.getLogger("arbiter.decision_log")

ZSTD_MAGIC: Final = b"\x28\xb5\x2f\xfd"
#: Records seen before a dictionary is trained (~30 ms of one core for 500).
TRAIN_ON = 500
#: Past this many samples without a dictionary, records stay plain.
MAX_TRAIN_ON: Final = 64_000
DICTIONARY_BYTES: Final = 16 * 1024
LEVEL: Final = 1
# zstd reserves ids below 32,768 for registered dictionaries and 2^31 and above.
_FIRST_ID, _LAST_ID = 32_768, (1 << 31) - 1

_DECOMPRESSORS: dict[int, zstandard.ZstdDecompressor] = {}


def scrubbed(blob: bytes) -> bytes:
    """``blob`` (a record's JSON) with every value about the customer blanked: ids, the
    request's context, the profile, the aggregates and the bandits' features. Names stay."""
    record = RECORD_DECODER.decode(blob)
    record.request.customer_id = ""
    record.request.context = dict.fromkeys(record.request.context)
    record.inputs.resolved_id = None
    record.inputs.profile = dict.fromkeys(record.inputs.profile)
    record.inputs.aggregates = dict.fromkeys(record.inputs.aggregates)
    for choice in record.bandits:
        choice.shared = dict.fromkeys(choice.shared)
        choice.arm_features = [dict.fromkeys(f) for f in choice.arm_features]
    return ENCODER.encode(record)


def train(samples: Sequence[bytes]) -> zstandard.ZstdCompressionDict:
    """A dictionary for records like ``samples`` (plain JSON), with a fresh random id.

    Raises `zstandard.ZstdError` when the samples are too few or too alike to train on.
    """
    scrubbed_samples: list[bytes | bytearray | memoryview] = [scrubbed(s) for s in samples]
    # zstd wants ~10x the dictionary's size in samples; short records get a smaller one.
    size = max(1024, min(DICTIONARY_BYTES, sum(map(len, scrubbed_samples)) // 10))
    return zstandard.train_dictionary(
        size, scrubbed_samples, dict_id=_FIRST_ID + secrets.randbelow(_LAST_ID - _FIRST_ID)
    )


class RecordCompressor:
    """The writer's side: plain until a dictionary is adopted, then compressed."""

    def __init__(self, enabled: bool = True, train_on: int | None = None) -> None:
        """``enabled=False`` stores every record plainly (and trains nothing); ``train_on``
        records are seen before training (`TRAIN_ON` by default)."""
        self.enabled = enabled
        self.train_on = TRAIN_ON if train_on is None else train_on
        self.dictionary_id: int | None = None
        self._compressor: zstandard.ZstdCompressor | None = None
        self._samples: list[bytes] = []
        self._looked = False

    def compress(self, blob: bytes) -> bytes:
        """The bytes to store for a record's JSON ``blob``."""
        if self._compressor is not None:
            return self._compressor.compress(blob)
        if self.enabled and len(self._samples) < self.train_on:
            self._samples.append(blob)
        return blob

    @property
    def due(self) -> bool:
        """Whether `settle` has work: a first look in Redis, or enough samples to train."""
        if not self.enabled or self._compressor is not None:
            return False
        return not self._looked or len(self._samples) >= self.train_on

    async def settle(self, redis: Any) -> None:
        """Adopt the deployment's dictionary, training and offering one if there is none."""
        if not self.due:
            return
        if not self._looked:
            current = await redis.get(keys.LOG_DICTIONARY)
            self._looked = True
            if current is not None:
                await self._adopt(redis, int(current))
                return
        if len(self._samples) < self.train_on:
            return
        samples, self._samples = self._samples, []
        try:
            data = await asyncio.to_thread(train, samples)
        except zstandard.ZstdError as exc:
            # Too few distinct records (a quiet test deployment): try again on more.
            self.train_on *= 2
            if self.train_on > MAX_TRAIN_ON:
                self.enabled = False
            log.info(
                "decision log: no dictionary from %d records (%s); %s",
                len(samples),
                exc,
                f"next try after {self.train_on}" if self.enabled else "records stay plain",
            )
            return
        ours = data.dict_id()
        await redis.set(keys.log_dictionary(ours), data.as_bytes())
        if not await redis.set(keys.LOG_DICTIONARY, ours, nx=True):
            # Another worker offered one first: everyone uses that one, if it is there.
            offered = await redis.get(keys.LOG_DICTIONARY)
            if offered is not None and await self._adopt(redis, int(offered)):
                await redis.delete(keys.log_dictionary(ours))
                return
            # The offered one was deleted: offer ours instead (a worker that adopted the
            # old one keeps it; records name their dictionary, so both read back).
            await redis.set(keys.LOG_DICTIONARY, ours)
        await self._adopt(redis, ours)

    async def _adopt(self, redis: Any, dict_id: int) -> bool:
        """Compress with dictionary ``dict_id`` from now on; False if it is not in Redis."""
        data = await redis.get(keys.log_dictionary(dict_id))
        if data is None:
            log.warning("decision log: dictionary %d is missing from Redis", dict_id)
            return False
        dictionary = zstandard.ZstdCompressionDict(data)
        self._compressor = zstandard.ZstdCompressor(
            level=LEVEL, dict_data=dictionary, write_checksum=False, write_content_size=True
        )
        self.dictionary_id = dict_id
        self._samples = []
        log.info("decision log: records in Redis compressed with dictionary %d", dict_id)
        return True


def dictionary_of(raw: bytes) -> int | None:
    """The id of the dictionary a stored record was compressed with (None: plain)."""
    if not raw.startswith(ZSTD_MAGIC):
        return None
    try:
        return int(zstandard.get_frame_parameters(raw).dict_id)
    except zstandard.ZstdError:
        return 0  # not a frame: no dictionary reads it


async def plain_records(redis: Any, raws: Sequence[bytes | None]) -> list[bytes | None]:
    """Stored records as JSON, in order; fetches the dictionaries not seen yet.

    A record that cannot be read (its dictionary was deleted from Redis, or it is
    corrupt) comes back as None, as an expired one would, with a warning logged.
    """
    for dict_id in _unseen(raws):
        _remember(dict_id, await redis.get(keys.log_dictionary(dict_id)))
    return [_plain(raw) for raw in raws]


def plain_records_sync(redis: Any, raws: Sequence[bytes | None]) -> list[bytes | None]:
    """`plain_records` with a synchronous client (tools and benchmarks)."""
    for dict_id in _unseen(raws):
        _remember(dict_id, redis.get(keys.log_dictionary(dict_id)))
    return [_plain(raw) for raw in raws]


def _unseen(raws: Sequence[bytes | None]) -> set[int]:
    """Ids of the dictionaries ``raws`` name that this process has not loaded."""
    wanted = {d for raw in raws if raw is not None for d in [dictionary_of(raw)] if d}
    return wanted - _DECOMPRESSORS.keys()


def _remember(dict_id: int, data: bytes | None) -> None:
    if data is not None:  # a missing one is reported per record, by `_plain`
        _DECOMPRESSORS[dict_id] = zstandard.ZstdDecompressor(
            dict_data=zstandard.ZstdCompressionDict(data)
        )


async def plain_record(redis: Any, raw: bytes | None) -> bytes | None:
    """One stored record as JSON (see `plain_records`)."""
    (out,) = await plain_records(redis, [raw])
    return out


def _plain(raw: bytes | None) -> bytes | None:
    if raw is None:
        return None
    dict_id = dictionary_of(raw)
    if dict_id is None:
        return raw
    decompressor = _DECOMPRESSORS.get(dict_id)
    if dict_id == 0:
        log.warning("decision record is not a zstd frame: treated as expired")
        return None
    if decompressor is None:
        log.warning(
            "decision record compressed with dictionary %d, which is not in Redis (%s): "
            "treated as expired",
            dict_id,
            keys.log_dictionary(dict_id),
        )
        return None
    try:
        out: bytes = decompressor.decompress(raw)
    except zstandard.ZstdError as exc:
        log.warning("decision record not readable (%s): treated as expired", exc)
        return None
    return out


__all__ = [
    "RecordCompressor",
    "dictionary_of",
    "plain_record",
    "plain_records",
    "plain_records_sync",
    "scrubbed",
    "train",
]

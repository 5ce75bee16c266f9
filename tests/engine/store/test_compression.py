"""The record copy kept for feedback, compressed with a dictionary shared through Redis.

Records are stored plainly until the writer has seen enough of them to train
a dictionary; then compressed with it, naming it, and read back to the same
bytes by anyone who fetches the dictionary. Workers that train at the same
time end on one dictionary. Dictionaries hold no value about a customer.
A record whose dictionary is gone reads as expired. Through the server:
feedback joins a compressed record, and erasure removes it.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from support.server import ADMIN, settings
from support.store import run, shop_plan, web_record

from arbiter.engine.log.experiment_reads import read_decisions
from arbiter.engine.log.export import export_stream
from arbiter.engine.log.files import RotatingFiles
from arbiter.engine.log.parallel import chunks_from_stream
from arbiter.engine.log.replay import read_stream
from arbiter.engine.log.writer import DecisionLog
from arbiter.engine.records import ENCODER, DecisionRecord
from arbiter.engine.store import compression, keys
from arbiter.engine.store.client import connect_sync
from arbiter.engine.store.compression import (
    ZSTD_MAGIC,
    RecordCompressor,
    dictionary_of,
    plain_records,
)
from arbiter.engine.store.profiles import ProfileStore
from arbiter.server.app import create_app
from arbiter.server.settings import Settings, SettingsError

SECRET = "person-4711@mail.example"


async def _records(s: ProfileStore, n: int, first: int = 0) -> list[DecisionRecord]:
    """``n`` web decisions of the shop ruleset, for customers with telling ids and visits."""
    plan = shop_plan()
    now = time.time()
    out = []
    for i in range(first, first + n):
        customer = f"{SECRET}-{i}"
        await s.put_profile(customer, {"visits": 700_000 + i})
        out.append(await web_record(s, plan, customer, f"d-{i}", now))
    return out


async def _logged(s: ProfileStore) -> list[DecisionRecord]:
    """30 records through a `DecisionLog`: the first 20 plainly, the dictionary trained on
    them, the last 10 compressed."""
    log = DecisionLog(s.redis, s, compression=RecordCompressor(train_on=20))
    await log.compression.settle(s.redis)  # nothing offered yet: it will train
    records = await _records(s, 30)
    for part in (records[:20], records[20:]):
        for record in part:
            log.submit(record)
        await log.flush()
        await log.compression.settle(s.redis)
    return records


async def _trained(s: ProfileStore, blobs: list[bytes]) -> RecordCompressor:
    """A compressor that looked for a dictionary, saw ``blobs`` and trained on them."""
    compressor = RecordCompressor(train_on=len(blobs))
    await compressor.settle(s.redis)
    for blob in blobs:
        compressor.compress(blob)
    await compressor.settle(s.redis)
    return compressor


@pytest.mark.parametrize("where", ["redis_url", "redis_cluster_url"])
def test_plain_until_trained_then_compressed_and_read_back_the_same(
    where: str, request: pytest.FixtureRequest
) -> None:
    redis_url: str = request.getfixturevalue(where)

    async def body(s: ProfileStore) -> tuple[list[bytes], list[bytes | None], bytes, list[bytes]]:
        records = await _logged(s)
        stored = [await s.redis.get(keys.decision(r.decision_id)) for r in records]
        dict_id = int(await s.redis.get(keys.LOG_DICTIONARY))
        dictionary = await s.redis.get(keys.log_dictionary(dict_id))
        return (
            stored,
            await plain_records(s.redis, stored),
            dictionary,
            [ENCODER.encode(r) for r in records],
        )

    stored, plain, dictionary, expected = run(redis_url, body)
    assert all(not b.startswith(ZSTD_MAGIC) for b in stored[:20])
    assert all(b.startswith(ZSTD_MAGIC) for b in stored[20:])
    assert plain == expected
    # Several times smaller, even for these short records of the shop ruleset.
    assert sum(map(len, stored[20:])) * 3 < sum(map(len, expected[20:]))
    # The dictionary holds names, not the customers' ids or profile values.
    assert b"mail.example" not in dictionary and b"person-" not in dictionary
    assert b"7000" not in dictionary
    assert b"customer_id" in dictionary


def test_workers_training_at_once_end_on_one_dictionary(redis_url: str) -> None:
    async def body(s: ProfileStore) -> tuple[list[int | None], int, list[bytes]]:
        records = [ENCODER.encode(r) for r in await _records(s, 12)]
        workers = [RecordCompressor(train_on=12) for _ in range(3)]
        for w in workers:
            await w.settle(s.redis)  # each looks first: nothing is offered yet
            for blob in records:
                w.compress(blob)
        await asyncio.gather(*(w.settle(s.redis) for w in workers))
        offered = int(await s.redis.get(keys.LOG_DICTIONARY))
        kept = [k async for k in s.redis.scan_iter(match=keys.log_dictionary(0)[:-1] + "*")]
        return [w.dictionary_id for w in workers], offered, kept

    ids, offered, kept = run(redis_url, body)
    assert ids == [offered] * 3
    assert kept == [keys.log_dictionary(offered).encode()]


def test_a_later_worker_adopts_the_dictionary_without_training(redis_url: str) -> None:
    async def body(s: ProfileStore) -> tuple[int | None, int | None, bytes]:
        blobs = [ENCODER.encode(r) for r in await _records(s, 10)]
        first = await _trained(s, blobs)
        later = RecordCompressor(train_on=10_000)
        await later.settle(s.redis)
        return first.dictionary_id, later.dictionary_id, later.compress(blobs[0])

    first, later, blob = run(redis_url, body)
    assert first is not None and later == first
    assert dictionary_of(blob) == first


def test_off_keeps_records_plain(redis_url: str) -> None:
    async def body(s: ProfileStore) -> tuple[bool, bytes | None]:
        off = RecordCompressor(enabled=False, train_on=1)
        blob = ENCODER.encode((await _records(s, 1))[0])
        for _ in range(3):
            assert off.compress(blob) == blob
        due = off.due
        await off.settle(s.redis)
        return due, await s.redis.get(keys.LOG_DICTIONARY)

    assert run(redis_url, body) == (False, None)


def test_a_record_whose_dictionary_is_gone_reads_as_expired(
    redis_url: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    async def body(s: ProfileStore) -> tuple[list[bytes], list[bytes | None]]:
        blobs = [ENCODER.encode(r) for r in await _records(s, 8)]
        w = await _trained(s, blobs)
        assert w.dictionary_id is not None
        packed = w.compress(blobs[0])
        await s.redis.delete(keys.log_dictionary(w.dictionary_id))
        # A fresh process: no dictionary in memory either.
        monkeypatch.setattr(compression, "_DECOMPRESSORS", {})
        junk = ZSTD_MAGIC + b" not a frame"
        return blobs, await plain_records(s.redis, [packed, blobs[1], None, junk])

    blobs, got = run(redis_url, body)
    assert got == [None, blobs[1], None, None]
    assert "not in Redis" in caplog.text and "treated as expired" in caplog.text


def test_feedback_joins_a_compressed_record_and_erasure_removes_it(
    redis_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(compression, "TRAIN_ON", 5)
    redis = connect_sync(redis_url)
    with TestClient(create_app(settings(redis_url, tmp_path))) as client:
        client.put("/v1/profiles/c1", json={"visits": 3}, headers=ADMIN)
        give_up = time.monotonic() + 30
        stored = b""
        while not stored.startswith(ZSTD_MAGIC):
            assert time.monotonic() < give_up, "records were never compressed"
            r = client.post("/v1/decide", json={"customer_id": "c1", "context": {"channel": "web"}})
            decision = r.json()
            time.sleep(0.05)  # the write-behind's linger
            stored = redis.get(keys.decision(decision["decision_id"])) or b""
        action = decision["actions"][0]["action"]
        fb = {"decision_id": decision["decision_id"], "action": action, "reward": 1}
        assert client.post("/v1/feedback", json=fb).json() == {"accepted": True, "duplicate": False}
        bad = {**fb, "action": "not_offered"}
        assert client.post("/v1/feedback", json=bad).status_code == 409
        assert client.delete("/v1/profiles/c1", headers=ADMIN).status_code == 200
    try:
        assert redis.get(keys.decision(decision["decision_id"])) is None
        assert redis.get(keys.feedback_seen(decision["decision_id"], action)) is None
    finally:
        redis.close()


def test_every_reader_of_the_stream_gets_the_json_back(redis_url: str, tmp_path: Path) -> None:
    """Replay, `arbiter logs export`, the parallel replay's chunks and experiment reports
    read compressed stream entries as the JSON that was logged."""

    async def body(s: ProfileStore) -> tuple[list[bytes], list[bytes], list[DecisionRecord]]:
        records = await _logged(s)
        stream = [f[b"r"] for _, f in await s.redis.xrange(keys.DECISION_STREAM)]
        reported = await read_decisions(s.redis, records[0].ruleset.name)
        return stream, [ENCODER.encode(r) for r in records], reported

    stream, expected, reported = run(redis_url, body)
    assert sum(b.startswith(ZSTD_MAGIC) for b in stream) == 10
    redis = connect_sync(redis_url)
    try:
        replayed = [ENCODER.encode(r) for r in read_stream(redis, keys.DECISION_STREAM)]
        chunked = [blob for _, chunk in chunks_from_stream(redis, keys.DECISION_STREAM)
                   for _, blob in chunk]  # fmt: skip
        files = RotatingFiles(tmp_path / "out")
        exported = export_stream(redis, keys.DECISION_STREAM, files)
        files.close()
    finally:
        redis.close()
    assert replayed == expected
    assert chunked == expected
    assert [ENCODER.encode(r) for r in reported] == expected
    assert exported == 30
    lines = [
        line.rstrip(b"\n")
        for path in sorted((tmp_path / "out").iterdir())
        for line in path.read_bytes().splitlines(keepends=True)
    ]
    assert lines == expected


def test_a_deleted_dictionary_is_replaced_by_the_next_one_trained(redis_url: str) -> None:
    async def body(s: ProfileStore) -> tuple[int | None, int, bytes | None]:
        blobs = [ENCODER.encode(r) for r in await _records(s, 10)]
        first = await _trained(s, blobs)
        assert first.dictionary_id is not None
        await s.redis.delete(keys.log_dictionary(first.dictionary_id))  # by hand
        later = await _trained(s, blobs)  # finds the offered one gone: trains its own
        offered = int(await s.redis.get(keys.LOG_DICTIONARY))
        return later.dictionary_id, offered, await s.redis.get(keys.log_dictionary(offered))

    adopted, offered, stored = run(redis_url, body)
    assert adopted == offered and stored is not None


def test_the_setting_is_checked() -> None:
    with pytest.raises(SettingsError, match="ARBITER_DECISION_LOG_COMPRESSION"):
        Settings.from_env({"ARBITER_DECISION_LOG_COMPRESSION": "lz4"}, env_file=None)


@pytest.mark.parametrize("setting", ["zstd", "off"])
def test_the_server_compresses_unless_told_off(
    setting: str, redis_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(compression, "TRAIN_ON", 5)
    redis = connect_sync(redis_url)
    app = create_app(settings(redis_url, tmp_path, decision_log_compression=setting))
    try:
        with TestClient(app) as client:
            ids = []
            for i in range(40):
                body = {"customer_id": f"c{i}", "context": {"channel": "web"}}
                ids.append(client.post("/v1/decide", json=body).json()["decision_id"])
                time.sleep(0.01)  # the write-behind's linger: the writer settles between
            client.portal.call(app.state.arbiter.log.flush)  # type: ignore[attr-defined]
        stored = [redis.get(keys.decision(i)) for i in ids]
        compressed = [b is not None and b.startswith(ZSTD_MAGIC) for b in stored]
        if setting == "off":
            assert not any(compressed) and redis.get(keys.LOG_DICTIONARY) is None
        else:
            assert compressed[-1] and redis.get(keys.LOG_DICTIONARY) is not None
    finally:
        redis.close()

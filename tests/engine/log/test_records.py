"""The decision record: what it holds, what it leaves out, and that old formats still read.

`tests/cases/records/v1.jsonl` is a committed log in record format v1; it
must decode and replay exactly under every later version.
"""

from __future__ import annotations

import json
from pathlib import Path

import msgspec
import pytest
from fastapi.testclient import TestClient
from support.paths import CASES_DIR
from support.server import ADMIN, settings

from arbiter.engine.codegen.compiler import compile_plan
from arbiter.engine.log.compare import first_difference
from arbiter.engine.log.replay import read_jsonl, replay
from arbiter.engine.plan import Plan
from arbiter.engine.records import ENCODER, RECORD_DECODER, RECORD_VERSION, DecisionRecord
from arbiter.server.app import create_app

RECORDS = CASES_DIR / "records"
RETAIL = RECORDS / "retail_v1.rules"


@pytest.fixture(scope="module")
def retail() -> Plan:
    from arbiter import dsl

    return compile_plan(dsl.load_checked(RETAIL))


def test_v1_fixture_reads_and_replays_exactly(retail: Plan) -> None:
    records = list(read_jsonl(RECORDS / "v1.jsonl"))
    assert len(records) == 40
    assert {r.v for r in records} == {1}
    # The fixture exercises what a v1 record can hold, so the check below is not vacuous.
    assert sum(1 for r in records if r.bandits) >= 5
    assert sum(1 for r in records if r.scores) >= 20
    assert any(r.holdout for r in records)
    for record in records:
        assert record.candidates == {} and record.probabilities == [] and record.timings == {}
        result = replay(retail, record)
        assert result.difference is None, f"{record.decision_id}: {result.difference}"
        assert result.identical


def _decide_over_http(redis_url: str, tmp_path: Path, n: int) -> list[DecisionRecord]:
    log = tmp_path / "decisions.jsonl"
    app = create_app(
        settings(redis_url, tmp_path, rules_path=str(RETAIL), decision_log_file=str(log))
    )
    profile = {
        "lifetime_value": 2500,
        "orders_90d": 4,
        "visits_30d": 7,
        "loyalty_tier": "gold",
        "consents": ["email"],
        "last_purchase_at": 1.76e9,
        # Stored with the profile, declared by no rule: personal data the plan never reads.
        "home_address": "1 Private Road",
    }
    with TestClient(app) as c:
        for i in range(n):
            assert c.put(f"/v1/profiles/c{i}", json=profile, headers=ADMIN).status_code < 300
            context = {"channel": "web", "page": "/", "device": "mobile", "cart_value": 45}
            r = c.post("/v1/decide", json={"customer_id": f"c{i}", "context": context, "limit": 2})
            assert r.status_code == 200, r.text
    return list(read_jsonl(log))


def test_new_records_hold_what_replay_and_evaluation_need(
    redis_url: str, tmp_path: Path, retail: Plan
) -> None:
    records = _decide_over_http(redis_url, tmp_path, 12)
    assert len(records) == 12
    served = [r for r in records if r.holdout is None]
    assert served, "every customer fell in the 5% holdout"
    for record in records:
        assert record.v == RECORD_VERSION == 2
        raw = json.loads(ENCODER.encode(record))
        assert raw["v"] == 2
        assert "home_address" not in record.inputs.profile
        assert set(record.inputs.profile) <= set(retail.needs.profile_fields)
        assert set(record.timings) == {"fetch", "decide"}
        assert len(record.probabilities) == len(record.actions)
        assert replay(retail, record).difference is None
    for record in served:
        # Every eligible candidate is scored before arbitration, not only the returned ones.
        assert set(a.action for a in record.actions) <= set(record.candidates)
        assert len(record.candidates) > len(record.actions)
        assert "vip" in record.segments
        for action, p in zip(record.actions, record.probabilities, strict=True):
            assert p == (1.0 if action.probability is None else action.probability)
        hero = [b for b in record.bandits if b.bandit == "homepage_hero"]
        assert hero and hero[0].chosen in record.candidates
        assert hero[0].probability in hero[0].pmf


def _tweak(record: DecisionRecord, **changes: object) -> DecisionRecord:
    raw = msgspec.to_builtins(record)
    for path, value in changes.items():
        target = raw
        *head, last = path.split("__")
        for part in head:
            target = target[int(part)] if part.isdigit() else target[part]
        target[int(last) if last.isdigit() else last] = value
    return RECORD_DECODER.decode(msgspec.json.encode(raw))


def test_first_difference_names_the_field(retail: Plan) -> None:
    record = next(r for r in read_jsonl(RECORDS / "v1.jsonl") if r.bandits)
    same = replay(retail, record).recomputed
    assert same is not None and first_difference(record, same) is None
    score = record.actions[0].score
    bumped = _tweak(same, actions__0__score=score + 2**-40)
    assert first_difference(record, bumped) == (
        f"actions[0].score: {score!r} logged, {score + 2**-40!r} replayed"
    )
    pmf = list(record.bandits[0].pmf)
    pmf[0] = pmf[0] / 2
    assert first_difference(record, _tweak(same, bandits__0__pmf=pmf)).startswith(
        "bandits[0].pmf[0]: "
    )
    assert first_difference(record, _tweak(same, trace=record.trace[:-1])) == (
        f"trace: {len(record.trace)} logged, {len(record.trace) - 1} replayed"
    )
    # -0.0 and 0.0 are equal as numbers but not as bits.
    zero = _tweak(record, actions__0__score=0.0)
    assert first_difference(zero, _tweak(zero, actions__0__score=-0.0)) == (
        "actions[0].score: 0.0 logged, -0.0 replayed"
    )

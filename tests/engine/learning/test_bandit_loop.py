"""The bandit learning loop end to end, in process, on real Redis and real VW.

A small synthetic site (tests/cases/bandit/sim.rules): three banners, each
device prefers one. Decisions and feedback go through the HTTP API of a
`TestClient` app whose in-process learner publishes every 50 ms; the app's
registry hot-swaps the published versions. The slow, two-worker version of
this is benchmarks/bandit_simulation.py.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
from fastapi.testclient import TestClient
from support.paths import CASES_DIR, ROOT_DIR
from support.server import settings

from arbiter import dsl
from arbiter.engine.codegen.compiler import compile_plan
from arbiter.engine.decision.decide import decide
from arbiter.engine.decision.oracle import LiveOracle
from arbiter.engine.learning.bandit import BanditModel
from arbiter.engine.learning.bandit_store import bandit_keys, exploration_of, publish
from arbiter.engine.log.replay import replay
from arbiter.engine.records import RECORD_DECODER, DecideRequest, DecisionRecord, Inputs
from arbiter.engine.store import keys
from arbiter.engine.store.client import connect, connect_sync
from arbiter.engine.store.compression import plain_records
from arbiter.server.app import create_app
from arbiter.server.cli.main import main as cli_main
from arbiter.server.state import AppState

ROOT = ROOT_DIR
RULES = CASES_DIR / "bandit" / "sim.rules"
RULESET, BANDIT = "sim", "hero"
DEVICES = ("mobile", "desktop", "tablet")
PAGES = ("home", "product", "cart")
BEST = {"mobile": "banner_app", "desktop": "banner_new", "tablet": "banner_sale"}
HIT, MISS = 0.75, 0.10
UNIFORM = (HIT + 2 * MISS) / 3  # expected reward of a uniformly random banner


def click_probability(device: str, arm: str) -> float:
    """The site's true click probability: high for the device's preferred banner."""
    return HIT if arm == BEST[device] else MISS


def make_app(redis_url: str, tmp_path: Path, **overrides: object) -> TestClient:
    """A test app serving sim.rules; in-process learner and 50 ms publish/reload by default."""
    values: dict[str, object] = {"rules_path": str(RULES), "reload_interval_ms": 50}
    values.update(overrides)
    return TestClient(create_app(settings(redis_url, tmp_path, **values)))


def app_state(client: TestClient) -> AppState:
    """The running app's state (the lifespan has run inside `with client`)."""
    state: AppState = client.app.state.arbiter  # type: ignore[attr-defined]
    return state


def post_decide(client: TestClient, i: int, device: str, page: str) -> dict[str, Any]:
    """One `POST /v1/decide` for visitor ``i``; the JSON answer."""
    body = {"customer_id": f"v{i}", "context": {"device": device, "page": page}}
    r = client.post("/v1/decide", json=body)
    assert r.status_code == 200, r.text
    answer: dict[str, Any] = r.json()
    return answer


def post_feedback(client: TestClient, decision_id: str, action: str, reward: float) -> None:
    """One `POST /v1/feedback`, which must be accepted."""
    body = {"decision_id": decision_id, "action": action, "reward": reward}
    r = client.post("/v1/feedback", json=body)
    assert r.status_code == 202, r.text


def serve_visitors(
    client: TestClient, n: int, seed: int, *, start: int = 0
) -> list[tuple[str, str, float]]:
    """Play ``n`` visitors: decide, then send reward 1 (click) or 0 (shown, no click).

    Returns (decision id, device, true click probability of the shown arm) per visitor.
    """
    rng = random.Random(seed)
    out = []
    for i in range(start, start + n):
        device, page = rng.choice(DEVICES), rng.choice(PAGES)
        answer = post_decide(client, i, device, page)
        arm = answer["actions"][0]["action"]
        p = click_probability(device, arm)
        post_feedback(client, answer["decision_id"], arm, 1.0 if rng.random() < p else 0.0)
        out.append((answer["decision_id"], device, p))
    return out


def published(redis_url: str) -> tuple[int, int]:
    """(publish counter, rewards learned) of the bandit's stored model; (0, 0) if none."""
    client = connect_sync(redis_url)
    try:
        version, examples = client.hmget(
            bandit_keys(RULESET, BANDIT).model, ["version", "examples"]
        )
    finally:
        client.close()
    return int(version or 0), int(examples or 0)


def wait_until(condition: Callable[[], bool], timeout: float = 10.0) -> bool:
    """Poll ``condition`` every 20 ms until it holds or ``timeout`` seconds pass."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return condition()


def records(client: TestClient, redis_url: str, ids: list[str]) -> list[DecisionRecord]:
    """The stored decision records of ``ids`` (the app's log flushed first)."""
    client.portal.call(app_state(client).log.flush)  # type: ignore[union-attr]

    async def read() -> list[bytes | None]:
        # Stored compressed once the log has trained its dictionary (engine.store.compression).
        redis = connect(redis_url)
        try:
            return await plain_records(redis, [await redis.get(keys.decision(i)) for i in ids])
        finally:
            await redis.aclose()

    raw = asyncio.run(read())
    out = []
    for blob in raw:
        assert isinstance(blob, bytes), "a decision record is missing"
        out.append(RECORD_DECODER.decode(blob))
    return out


def settle(client: TestClient, redis_url: str, rewards: int) -> int:
    """Wait until all ``rewards`` are published and the app serves that version; returns it."""
    assert wait_until(lambda: published(redis_url)[1] == rewards), published(redis_url)
    version = published(redis_url)[0]
    registry = app_state(client).rulesets.registry
    assert registry is not None
    assert wait_until(lambda: registry.versions(RULESET).get(BANDIT) == version)
    return version


def publish_trained_model(redis_url: str, decisions: int = 600) -> BanditModel:
    """Train the bandit in process on the synthetic site and publish it, as a learner would."""
    plan = compile_plan(dsl.load_checked(RULES))
    model = BanditModel(BANDIT, exploration_of(plan.checked.bandits[BANDIT]))
    oracle = LiveOracle({}, {BANDIT: model})
    rng = random.Random(11)
    for i in range(decisions):
        device, page = rng.choice(DEVICES), rng.choice(PAGES)
        request = DecideRequest(f"t{i}", {"device": device, "page": page})
        answer, record = decide(
            plan, request, Inputs(), decision_id=f"train-{i}", now=1.7e9, oracle=oracle
        )
        arm = answer.actions[0].action
        reward = 1.0 if rng.random() < click_probability(device, arm) else 0.0
        choice = record.bandits[0]
        model.learn(
            choice.shared, choice.arm_features, choice.arms.index(arm), reward, choice.probability
        )

    async def store() -> None:
        client = connect(redis_url, socket_timeout=5.0)
        try:
            await publish(client, RULESET, BANDIT, model)
        finally:
            await client.aclose()

    asyncio.run(store())
    return model


@pytest.fixture
def trained_app(redis_url: str, tmp_path: Path) -> Iterator[TestClient]:
    """An app serving a bandit already trained (published before the app starts); no learner,
    so the model cannot move under the test."""
    publish_trained_model(redis_url)
    with make_app(redis_url, tmp_path, learner="off") as client:
        yield client


# --- the loop learns --------------------------------------------------------------


def test_served_loop_learns_well_above_uniform(redis_url: str, tmp_path: Path) -> None:
    with make_app(redis_url, tmp_path) as client:
        served = serve_visitors(client, 800, seed=1)
        version = settle(client, redis_url, len(served))
        first = records(client, redis_url, [served[0][0]])[0]
        last = records(client, redis_url, [served[-1][0]])[0]

    # Nothing learned at the start (uniform), every reward learned at the end.
    assert first.bandits[0].version == 0
    assert first.bandits[0].pmf == [1 / 3] * 3
    assert published(redis_url)[1] == len(served)
    # Many versions were published while serving, and the app swapped them in as it
    # went: the last decision used a model that had learned most of the rewards.
    assert version >= 5
    assert last.bandits[0].version >= len(served) - 300
    # The expected reward of what was served (the shown arms' true click
    # probabilities, free of click noise) over the second half is far above
    # uniform's 0.32 and close to epsilon-greedy's ceiling of 0.71.
    second_half = statistics.fmean(p for _, _, p in served[len(served) // 2 :])
    assert second_half > UNIFORM + 0.25, second_half


# --- probabilities, replay, restart ---------------------------------------------------


def test_probability_is_the_pmf_entry_of_the_chosen_arm(
    trained_app: TestClient, redis_url: str
) -> None:
    client = trained_app
    registry = app_state(client).rulesets.registry
    assert registry is not None
    live_model = registry.bandits(RULESET)[BANDIT]
    answers = [post_decide(client, i, d, p) for i, (d, p) in enumerate(_contexts())]
    recs = records(client, redis_url, [a["decision_id"] for a in answers])
    for answer, record in zip(answers, recs, strict=True):
        (choice,) = record.bandits
        chosen = answer["actions"][0]
        assert chosen["action"] == choice.chosen
        assert chosen["probability"] == choice.probability
        assert choice.probability == choice.pmf[choice.arms.index(choice.chosen)]
        # The recorded pmf is the live model's, bit for bit, and it is learned, not uniform.
        assert choice.pmf == live_model.pmf(choice.shared, choice.arm_features)
        assert choice.version == live_model.version > 0
        assert max(choice.pmf) > 0.9
        greedy = choice.arms[choice.pmf.index(max(choice.pmf))]
        assert greedy == BEST[record.request.context["device"]]


def _contexts() -> list[tuple[str, str]]:
    return [(d, p) for d in DEVICES for p in PAGES]


def test_replay_is_bit_identical_including_the_exploration_draw(
    trained_app: TestClient, redis_url: str
) -> None:
    client = trained_app
    contexts = _contexts() * 25
    answers = [post_decide(client, i, d, p) for i, (d, p) in enumerate(contexts)]
    recs = records(client, redis_url, [a["decision_id"] for a in answers])
    live = app_state(client).rulesets.get(RULESET)
    assert live is not None

    explored = [r for r in recs if r.bandits[0].chosen != BEST[r.request.context["device"]]]
    assert explored, "no exploratory choice among the decisions: the draw was not exercised"
    for record in recs:
        result = replay(live.plan, record)
        assert result.same_plan and result.identical, result.describe()

    # The draw really comes from the decision id: with another id (another seed),
    # some replays choose differently, so "identical" above is not vacuous.
    changed = [
        r
        for r in recs
        if not replay(
            live.plan, msgspec.structs.replace(r, decision_id=r.decision_id + "x")
        ).identical
    ]
    assert changed


def test_learned_state_survives_an_app_restart(redis_url: str, tmp_path: Path) -> None:
    context = {"device": "mobile", "page": "cart"}
    with make_app(redis_url, tmp_path) as client:
        served = serve_visitors(client, 400, seed=2)
        version = settle(client, redis_url, len(served))
        before = post_decide(client, 10_000, **context)
        (choice_before,) = records(client, redis_url, [before["decision_id"]])[0].bandits
    assert published(redis_url)[0] == version  # nothing new published at shutdown

    with make_app(redis_url, tmp_path) as client:
        registry = app_state(client).rulesets.registry
        assert registry is not None and registry.versions(RULESET) == {BANDIT: version}
        after = post_decide(client, 10_001, **context)
        (choice_after,) = records(client, redis_url, [after["decision_id"]])[0].bandits

    assert choice_before.pmf != [1 / 3] * 3  # learned, so the comparison means something
    assert choice_after.pmf == choice_before.pmf
    assert choice_after.version == choice_before.version == len(served)


# --- arbiter learn ------------------------------------------------------------------


def test_arbiter_learn_publishes_and_stops_on_sigterm(redis_url: str, tmp_path: Path) -> None:
    # Servers without a learner of their own, as beside `arbiter learn`.
    with make_app(redis_url, tmp_path, learner="off") as client:
        served = serve_visitors(client, 200, seed=3)
        client.portal.call(app_state(client).log.flush)  # type: ignore[union-attr]
    assert published(redis_url) == (0, 0)

    env = {
        **os.environ,
        "ARBITER_REDIS_URL": redis_url,
        "ARBITER_DATA_DIR": str(tmp_path / "learn-data"),
    }
    argv = [sys.executable, "-m", "arbiter.server.cli", "learn", "--rules", str(RULES)]
    proc = subprocess.Popen(
        [*argv, "--publish-interval", "0.05"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert wait_until(lambda: published(redis_url)[1] == len(served), timeout=20), published(
            redis_url
        )
        assert proc.poll() is None
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    assert "learner stopped" in out
    assert "is active" in err  # the learner took the lease and said so
    redis = connect_sync(redis_url)
    try:
        # The lease was released on the way out, so another learner could take over at once.
        assert redis.exists(bandit_keys(RULESET, BANDIT).leader) == 0
    finally:
        redis.close()


def test_arbiter_learn_without_bandits_is_an_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["learn", "--rules", str(ROOT / "tests/cases/server/shop.rules")]) == 1
    assert "no bandits declared" in capsys.readouterr().err

"""Off-policy evaluation: the estimators against an independent NumPy implementation, and
coverage of the truth on a simulated site.

The simulated site: visitors with a device and a page, uniformly; the true
click probability of each banner depends on both (`click_probability`). The
logging policy is tests/cases/bandit/sim.rules, whose bandit is served by an
epsilon-greedy policy that prefers `banner_sale` everywhere (the
simulator's own policy, standing in for a VW model of known pmf). The
candidate is tests/cases/bandit/sim_by_device.rules: one banner per device
(on a tablet, per page). Its true value is the mean click probability of the
banners it chooses, computed from the simulator; each run logs decisions
through the engine's `decide`, draws clicks, and evaluates the candidate from
the log alone.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from support.paths import CASES_DIR

from arbiter import dsl
from arbiter.engine.codegen.compiler import compile_plan
from arbiter.engine.decision.decide import decide
from arbiter.engine.decision.oracle import LiveOracle
from arbiter.engine.log.estimators import OffPolicyData, dr, estimate_all, ips, snips
from arbiter.engine.log.evaluate import all_actions, collect, cross_fitted_q, evaluate
from arbiter.engine.log.policy import action_distribution
from arbiter.engine.plan import Plan
from arbiter.engine.records import ENCODER, DecideRequest, DecisionRecord, Inputs
from arbiter.server.cli.main import main

LOGGING = CASES_DIR / "bandit" / "sim.rules"
CANDIDATE = CASES_DIR / "bandit" / "sim_by_device.rules"
DEVICES = ("mobile", "desktop", "tablet")
PAGES = ("home", "product", "cart")
ARMS = ("banner_sale", "banner_app", "banner_new")
BASE = {
    "mobile": {"banner_sale": 0.10, "banner_app": 0.45, "banner_new": 0.15},
    "desktop": {"banner_sale": 0.30, "banner_app": 0.05, "banner_new": 0.20},
    "tablet": {"banner_sale": 0.20, "banner_app": 0.10, "banner_new": 0.35},
}
PAGE_BONUS = {"home": 0.0, "product": 0.05, "cart": 0.10}
EPSILON = 0.3


def click_probability(device: str, page: str, arm: str) -> float:
    return BASE[device][arm] + PAGE_BONUS[page]


def candidate_choice(device: str, page: str) -> str:
    """What sim_by_device.rules serves: the simulator's independent statement of it."""
    if device == "mobile":
        return "banner_app"
    if device == "desktop":
        return "banner_sale"
    return "banner_sale" if page == "cart" else "banner_new"


TRUE_VALUE = float(
    np.mean(
        [
            click_probability(d, p, candidate_choice(d, p))
            for d, p in itertools.product(DEVICES, PAGES)
        ]
    )
)


class EpsilonGreedy:
    """The logging bandit: 1 - epsilon on banner_sale, epsilon spread evenly."""

    version = 7

    def pmf(self, shared: Any, actions: Any) -> list[float]:
        n = len(actions)
        greedy = [i for i, a in enumerate(actions) if a.get("action") == "banner_sale"] or [0]
        return [(1 - EPSILON) * (i == greedy[0]) + EPSILON / n for i in range(n)]


@pytest.fixture(scope="module")
def plans() -> tuple[Plan, Plan]:
    return (
        compile_plan(dsl.load_checked(LOGGING)),
        compile_plan(dsl.load_checked(CANDIDATE)),
    )


def simulate(
    plan: Plan, n: int, seed: int
) -> tuple[list[DecisionRecord], dict[tuple[str, str], float]]:
    """``n`` logged decisions of the logging policy and the clicks they got."""
    rng = np.random.default_rng(seed)
    oracle = LiveOracle({}, {"hero": EpsilonGreedy()})
    records, rewards = [], {}
    for i in range(n):
        device, page = DEVICES[rng.integers(3)], PAGES[rng.integers(3)]
        request = DecideRequest(f"v{i}", {"device": device, "page": page})
        _, record = decide(
            plan, request, Inputs(), decision_id=f"s{seed}-{i}", now=1.8e9, oracle=oracle
        )
        arm = record.actions[0].action
        click = float(rng.random() < click_probability(device, page, arm))
        rewards[(record.decision_id, arm)] = click
        records.append(record)
    return records, rewards


def test_arm_features_carry_the_action_name(plans: tuple[Plan, Plan]) -> None:
    # EpsilonGreedy recognises banner_sale by its arm features; make sure it can.
    logging, _ = plans
    assert any(f.get("action") == "banner_sale" for f in logging.arm_features)


def test_the_logging_ruleset_evaluated_on_its_own_log_is_its_mean_reward(
    plans: tuple[Plan, Plan],
) -> None:
    logging, _ = plans
    records, rewards = simulate(logging, 300, seed=1)
    for record in records[:20]:
        view = action_distribution(logging, record)
        assert view.probabilities == pytest.approx(
            dict(zip(record.bandits[0].arms, record.bandits[0].pmf, strict=True)), abs=1e-12
        )
    rounds, counts = collect({"sim": logging}, records, rewards)
    result = evaluate(rounds, counts, resamples=50)
    ips_, snips_, _ = result.estimates
    mean = float(np.mean([rewards[(r.decision_id, r.actions[0].action)] for r in records]))
    assert ips_.value == pytest.approx(mean, abs=1e-12) == result.logged_value
    assert snips_.value == pytest.approx(mean, abs=1e-12)
    assert result.unsupported_rounds == 0 and result.bandit_fallbacks == 0


def reference_estimates(
    reward: np.ndarray,
    action: np.ndarray,
    pscore: np.ndarray,
    action_dist: np.ndarray,
    q_hat: np.ndarray,
    clip: float | None,
) -> dict[str, float]:
    """IPS, SNIPS and DR as obp.ope.estimators defines them (one slot), from scratch."""
    n = len(reward)
    iw = action_dist[np.arange(n), action] / pscore
    if clip is not None:
        iw = np.minimum(iw, clip)
    q_factual = q_hat[np.arange(n), action]
    return {
        "IPS": float((reward * iw).mean()),
        "SNIPS": float((reward * iw / iw.mean()).mean()),
        "DR": float(((action_dist * q_hat).sum(axis=1) + iw * (reward - q_factual)).mean()),
    }


@pytest.mark.parametrize("clip", [None, 4.0])
def test_estimators_match_an_independent_implementation(
    plans: tuple[Plan, Plan], clip: float | None
) -> None:
    logging, candidate = plans
    records, rewards = simulate(logging, 600, seed=2)
    rounds, counts = collect({"sim": candidate}, records, rewards)
    result = evaluate(rounds, counts, clip=clip, resamples=20)
    actions = all_actions(rounds)
    assert actions == sorted(ARMS)
    column = {a: j for j, a in enumerate(actions)}
    # The test's own statement of everything but the reward model.
    logged = np.array([column[r.actions[0].action] for r in records])
    pscore = np.array([r.bandits[0].probability for r in records])
    reward = np.array([rewards[(r.decision_id, r.actions[0].action)] for r in records])
    dist = np.zeros((len(records), len(actions)))
    for i, r in enumerate(records):
        dist[
            i, column[candidate_choice(r.request.context["device"], r.request.context["page"])]
        ] = 1
    q_hat = cross_fitted_q(rounds, 5, actions)
    expected = reference_estimates(reward, logged, pscore, dist, q_hat, clip)
    got = {e.name: e.value for e in result.estimates}
    assert got == pytest.approx(expected, abs=1e-9, rel=0)
    # Random inputs too, including weights far above any clip.
    rng = np.random.default_rng(5)
    n, k = 500, 4
    dist = rng.dirichlet(np.ones(k), n)
    pscore = rng.uniform(0.02, 1.0, n)
    action = rng.integers(0, k, n)
    reward = rng.normal(1.0, 2.0, n)
    q_hat = rng.normal(1.0, 1.0, (n, k))
    data = OffPolicyData(
        reward, pscore, dist[np.arange(n), action], q_hat[np.arange(n), action],
        (dist * q_hat).sum(axis=1),
    )  # fmt: skip
    expected = reference_estimates(reward, action, pscore, dist, q_hat, clip)
    got = {"IPS": ips(data, clip), "SNIPS": snips(data, clip), "DR": dr(data, clip)}
    assert got == pytest.approx(expected, abs=1e-9, rel=0)


def test_reward_model_is_cross_fitted(plans: tuple[Plan, Plan]) -> None:
    logging, candidate = plans
    records, rewards = simulate(logging, 200, seed=3)
    rounds, _ = collect({"sim": candidate}, records, rewards)
    actions = all_actions(rounds)
    before = cross_fitted_q(rounds, 5, actions)
    rounds[0].reward += 100.0  # a round's own reward never reaches its own estimate
    after = cross_fitted_q(rounds, 5, actions)
    assert np.array_equal(before[0], after[0])
    assert not np.array_equal(before, after)


def test_dr_interval_covers_the_true_value_in_at_least_90_of_100_runs(
    plans: tuple[Plan, Plan],
) -> None:
    """Bounded: 100 seeded runs of 400 decisions, 200 bootstrap resamples each."""
    logging, candidate = plans
    covered = 0
    errors = []
    for seed in range(100):
        records, rewards = simulate(logging, 400, seed=1000 + seed)
        rounds, counts = collect({"sim": candidate}, records, rewards)
        data = evaluate(rounds, counts, resamples=1, seed=seed).data
        assert data is not None
        by_name = {e.name: e for e in estimate_all(data, resamples=200, seed=seed)}
        covered += by_name["DR"].low <= TRUE_VALUE <= by_name["DR"].high
        errors.append(by_name["DR"].value - TRUE_VALUE)
    assert covered >= 90, (covered, TRUE_VALUE)
    # And no visible bias: the mean error of 100 runs within 3 standard errors of 0.
    assert abs(float(np.mean(errors))) < 3 * float(np.std(errors)) / 10


def test_arbiter_evaluate_cli(
    plans: tuple[Plan, Plan], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    logging, _ = plans
    records, rewards = simulate(logging, 1500, seed=4)
    log = tmp_path / "log.jsonl"
    log.write_bytes(b"".join(ENCODER.encode(r) + b"\n" for r in records))
    reward_file = tmp_path / "rewards.jsonl"
    lines = [
        json.dumps({"decision_id": d, "action": a, "reward": r})
        for (d, a), r in list(rewards.items())[:-100]  # 100 decisions got no reward
    ]
    reward_file.write_text("\n".join(lines) + "\n")
    argv = ["evaluate", str(log), "--rules", str(CANDIDATE), "--rewards", str(reward_file)]
    assert main([*argv, "--format", "json", "--resamples", "200"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["decisions"] == 1500 and report["missing_rewards"] == 100
    dr_ = next(e for e in report["estimates"] if e["name"] == "DR")
    assert dr_["low"] < dr_["value"] < dr_["high"]
    assert report["unsupported"]["decisions"] == 0
    assert {"IPS", "SNIPS", "DR"} == {e["name"] for e in report["uniform_baseline"]}
    assert main([*argv, "--resamples", "100"]) == 0
    text = capsys.readouterr().out
    assert "DR " in text and "logged policy (observed)" in text and "uniform random" in text


def test_rewards_from_the_redis_reward_stream(
    plans: tuple[Plan, Plan], redis_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from arbiter.engine.store import keys
    from arbiter.engine.store.client import connect_sync
    from arbiter.server.cli.evaluate import read_rewards

    logging, _ = plans
    records, rewards = simulate(logging, 200, seed=6)
    client = connect_sync(redis_url)
    try:
        for (decision_id, action), reward in rewards.items():
            # What POST /v1/feedback writes.
            fields = {b"decision_id": decision_id, b"action": action, b"reward": repr(reward)}
            client.xadd(keys.REWARD_STREAM, fields)  # type: ignore[arg-type]
        client.xadd(
            keys.REWARD_STREAM,
            {b"decision_id": "s6-0", b"action": records[0].actions[0].action, b"reward": "2.0"},
        )  # type: ignore[arg-type]
    finally:
        client.close()
    got = read_rewards([redis_url])
    first = (records[0].decision_id, records[0].actions[0].action)
    assert got[first] == rewards[first] + 2.0  # a second reward for one decision adds up
    assert {k: v for k, v in got.items() if k != first} == {
        k: v for k, v in rewards.items() if k != first
    }
    log = tmp_path / "log.jsonl"
    log.write_bytes(b"".join(ENCODER.encode(r) + b"\n" for r in records))
    argv = ["evaluate", str(log), "--rules", str(CANDIDATE), "--rewards", redis_url, "-q"]
    assert main([*argv, "--format", "json", "--resamples", "50"]) == 0
    assert json.loads(capsys.readouterr().out)["missing_rewards"] == 0


def test_evaluate_gives_the_same_numbers_with_two_jobs(
    plans: tuple[Plan, Plan], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Rounds collected by workers from pieces of the log, resamples computed in blocks:
    every number the same as one process's, to the bit."""
    from arbiter.engine.log.evaluate_jobs import EvaluatePool, EvaluateSetup
    from arbiter.engine.log.parallel import chunks_from_files, split_logs

    logging, _ = plans
    records, rewards = simulate(logging, 400, seed=8)
    log = tmp_path / "log.jsonl"
    log.write_bytes(b"".join(ENCODER.encode(r) + b"\n" for r in records))
    setup = EvaluateSetup((str(CANDIDATE),), rewards)
    results = []
    for jobs, tasks, method in (
        (1, list(chunks_from_files([log], size=150)), None),
        (2, split_logs([log], jobs=2, piece_bytes=20_000), "fork"),
        (2, split_logs([log], jobs=2, piece_bytes=100_000), "spawn"),
    ):
        with EvaluatePool(setup, jobs, method=method) as pool:
            assert pool.start_method == (method or "none")
            seen: list[int] = []
            rounds, counts, notes = pool.collect(tasks, progress=seen.append)
            assert sum(seen) == len(records) == len(rounds) and notes == []
            result = evaluate(rounds, counts, resamples=300, seed=4, resampler=pool.bootstrap)
        results.append(
            (
                [r.decision_id for r in rounds],
                result.estimates,
                result.uniform,
                result.logged_value,
                result.unsupported_rounds,
            )
        )
    assert results[0] == results[1] == results[2]
    assert results[0][0] == [r.decision_id for r in records]  # rounds in log order

    # The command: the same JSON with --jobs 1 and --jobs 2.
    reward_file = tmp_path / "rewards.jsonl"
    reward_file.write_text(
        "".join(
            json.dumps({"decision_id": d, "action": a, "reward": r}) + "\n"
            for (d, a), r in rewards.items()
        )
    )
    argv = ["evaluate", str(log), "--rules", str(CANDIDATE), "--rewards", str(reward_file)]
    outputs = []
    for count in ("1", "2"):
        assert main([*argv, "-q", "--format", "json", "--resamples", "200", "-j", count]) == 0
        outputs.append(capsys.readouterr().out)
    assert outputs[0] == outputs[1]

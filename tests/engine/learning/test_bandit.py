"""engine.learning.bandit, engine.decision.sampling and engine.learning.features against the real Vowpal Wabbit."""

from __future__ import annotations

import hashlib
import math
import os
import random
import subprocess
import sys
from collections import Counter
from collections.abc import Sequence

import pytest
import vowpal_wabbit_next as vw

from arbiter.engine.decision.sampling import _splitmix64 as splitmix64
from arbiter.engine.decision.sampling import sample, seed_from_decision_id
from arbiter.engine.learning.bandit import (
    BanditError,
    BanditModel,
    BanditStateError,
    Exploration,
    Features,
)
from arbiter.engine.learning.features import format_example

ARMS: list[Features] = [{"id": "arm0"}, {"id": "arm1"}, {"id": "arm2"}]
BEST_ARM = {"mobile": 2, "desktop": 0}
EXPLORATIONS = [
    Exploration("epsilon", 0.1),
    Exploration("softmax", 5.0),
    Exploration("squarecb", 10.0),
]


def reward_probability(device: str, arm: int) -> float:
    """The synthetic world: the best arm pays 0.8 of the time, the others 0.3."""
    return 0.8 if arm == BEST_ARM[device] else 0.3


def train(model: BanditModel, rounds: int, seed: int = 7) -> float:
    """Run the full loop (pmf -> sample -> reward -> learn); return the mean reward."""
    world = random.Random(seed)
    total = 0.0
    for round_ in range(rounds):
        device = world.choice(["mobile", "desktop"])
        shared: Features = {"device": device}
        pmf = model.pmf(shared, ARMS)
        chosen = sample(pmf, round_)
        reward = 1.0 if world.random() < reward_probability(device, chosen) else 0.0
        total += reward
        model.learn(shared, ARMS, chosen, reward, pmf[chosen])
    return total / rounds


def argmax(values: Sequence[float]) -> int:
    return max(range(len(values)), key=values.__getitem__)


# --- exploration --------------------------------------------------------------


def test_exploration_vw_args() -> None:
    assert Exploration("epsilon", 0.1).vw_args() == ["--epsilon", "0.1"]
    assert Exploration("softmax", 2).vw_args() == ["--softmax", "--lambda", "2.0"]
    assert Exploration("squarecb", 10.0).vw_args() == ["--squarecb", "--gamma_scale", "10.0"]


@pytest.mark.parametrize(
    ("kind", "rate"),
    [
        ("epsilon", -0.1),
        ("epsilon", 1.5),
        ("epsilon", math.nan),
        ("softmax", 0.0),
        ("squarecb", -1.0),
        ("squarecb", math.inf),
        ("greedy", 0.1),
        ("epsilon", True),
    ],
)
def test_exploration_rejects_bad_values(kind: str, rate: float) -> None:
    with pytest.raises(ValueError):
        Exploration(kind, rate)  # type: ignore[arg-type]


@pytest.mark.parametrize("exploration", EXPLORATIONS, ids=lambda e: e.kind)
def test_every_exploration_kind_gives_valid_pmfs(exploration: Exploration) -> None:
    model = BanditModel("offers", exploration)
    train(model, 300)
    for device in BEST_ARM:
        pmf = model.pmf({"device": device}, ARMS)
        assert len(pmf) == len(ARMS)
        assert all(0.0 < p <= 1.0 for p in pmf)
        assert math.fsum(pmf) == pytest.approx(1.0, abs=1e-12)


# --- pmf: order, cold start, determinism -------------------------------------


def test_pmf_is_in_input_order() -> None:
    model = BanditModel("offers", Exploration("epsilon", 0.1))
    train(model, 500)
    shared: Features = {"device": "mobile"}
    pmf = model.pmf(shared, ARMS)
    assert argmax(pmf) == BEST_ARM["mobile"]
    # VW sorts its answer by probability; the pmf must follow the input order.
    reordered = [ARMS[2], ARMS[0], ARMS[1]]
    assert model.pmf(shared, reordered) == [pmf[2], pmf[0], pmf[1]]


@pytest.mark.parametrize("exploration", EXPLORATIONS, ids=lambda e: e.kind)
@pytest.mark.parametrize("count", [1, 2, 3, 5, 7, 50])
def test_cold_start_is_exactly_uniform(exploration: Exploration, count: int) -> None:
    model = BanditModel("offers", exploration)
    actions: list[Features] = [{"id": f"arm{i}"} for i in range(count)]
    assert model.version == 0
    assert model.pmf({"device": "mobile"}, actions) == [1.0 / count] * count


def test_pmf_needs_an_action() -> None:
    with pytest.raises(ValueError, match="at least one action"):
        BanditModel("offers", Exploration("epsilon", 0.1)).pmf({}, [])


@pytest.mark.parametrize("exploration", EXPLORATIONS, ids=lambda e: e.kind)
def test_same_state_same_input_same_pmf_bit_for_bit(exploration: Exploration) -> None:
    model = BanditModel("offers", exploration)
    train(model, 200)
    shared: Features = {"device": "desktop", "visits": 3, "vip": True}
    first = model.pmf(shared, ARMS)
    assert model.pmf(shared, ARMS) == first  # predicting leaves the state alone

    # Feature order in the mapping does not matter: the encoding is canonical.
    assert model.pmf({"vip": True, "visits": 3, "device": "desktop"}, ARMS) == first

    restored = BanditModel.deserialize("offers", model.serialize())
    assert restored.version == model.version == 200
    assert restored.exploration == exploration
    assert restored.pmf(shared, ARMS) == first

    # The restored model keeps VW's learning state too: the same update on
    # both gives the same model again.
    model.learn(shared, ARMS, 1, 1.0, first[1])
    restored.learn(shared, ARMS, 1, 1.0, first[1])
    assert restored.pmf(shared, ARMS) == model.pmf(shared, ARMS)
    assert restored.version == model.version == 201


def test_independently_trained_models_agree_bit_for_bit() -> None:
    one = BanditModel("offers", Exploration("squarecb", 10.0))
    two = BanditModel("offers", Exploration("squarecb", 10.0))
    train(one, 150)
    train(two, 150)
    assert one.pmf({"device": "mobile"}, ARMS) == two.pmf({"device": "mobile"}, ARMS)


# --- learning -----------------------------------------------------------------


def test_learns_the_best_arm_per_context() -> None:
    model = BanditModel("offers", Exploration("epsilon", 0.1))
    mean_reward = train(model, 2000)
    assert model.version == 2000
    for device, best in BEST_ARM.items():
        pmf = model.pmf({"device": device}, ARMS)
        assert argmax(pmf) == best, (device, pmf)
        # epsilon-greedy: the greedy arm gets 1 - eps + eps/n, the others eps/n.
        assert pmf[best] == pytest.approx(1 - 0.1 + 0.1 / 3, abs=1e-6)
    uniform_reward = sum(reward_probability("mobile", arm) for arm in range(3)) / 3  # ~0.47
    best_possible = 0.8 * (1 - 0.1 + 0.1 / 3) + 0.3 * (0.1 * 2 / 3)  # ~0.77
    assert mean_reward > uniform_reward + 0.2
    assert mean_reward < best_possible + 0.05


def test_learn_uses_cost_minus_reward() -> None:
    # One positive reward on arm 1 makes it the greedy choice; a negative
    # reward (cost > 0) on arm 1 makes it the one to avoid.
    for reward, expect_greedy in [(1.0, True), (-1.0, False)]:
        model = BanditModel("offers", Exploration("epsilon", 0.1))
        model.learn({"device": "mobile"}, ARMS, 1, reward, 1 / 3)
        pmf = model.pmf({"device": "mobile"}, ARMS)
        assert (argmax(pmf) == 1) is expect_greedy, (reward, pmf)


@pytest.mark.parametrize(
    ("chosen", "reward", "probability", "message"),
    [
        (3, 1.0, 0.5, "out of range"),
        (-1, 1.0, 0.5, "out of range"),
        (0, math.nan, 0.5, "reward must be finite"),
        (0, 1.0, 0.0, "probability"),
        (0, 1.0, 1.5, "probability"),
    ],
)
def test_learn_rejects_bad_feedback(
    chosen: int, reward: float, probability: float, message: str
) -> None:
    model = BanditModel("offers", Exploration("epsilon", 0.1))
    with pytest.raises(ValueError, match=message):
        model.learn({"device": "mobile"}, ARMS, chosen, reward, probability)
    assert model.version == 0


# --- serialization ------------------------------------------------------------


def test_serialized_framing() -> None:
    model = BanditModel("offers", Exploration("epsilon", 0.25))
    model.learn({"device": "mobile"}, ARMS, 0, 1.0, 0.5)
    data = model.serialize()
    assert data[:4] == b"ARBB"
    assert data[4] == 1
    length = int.from_bytes(data[5:9], "big")
    metadata = data[9 : 9 + length]
    assert metadata == (
        b'{"exploration":{"kind":"epsilon","rate":0.25},"version":1,"vw_version":"'
        + vw.VW_VERSION.encode()
        + b'"}'
    )
    # The rest is a plain VW model that VW loads on its own.
    workspace = vw.Workspace(model_data=data[9 + length :])
    assert workspace.prediction_type == vw.PredictionType.ActionProbs


@pytest.mark.parametrize(
    ("mangle", "message"),
    [
        (lambda d: d[:5], "truncated"),
        (lambda d: b"XXXX" + d[4:], "magic"),
        (lambda d: d[:4] + b"\x02" + d[5:], "framing version 2"),
        (lambda d: d[:5] + (10**6).to_bytes(4, "big") + d[9:], "truncated"),
        (lambda d: d[:9] + b"!" + d[10:], "metadata is invalid"),
        (lambda d: d[:120] + b"garbage", "VW could not load"),
    ],
)
def test_deserialize_rejects_bad_state(mangle: object, message: str) -> None:
    data = BanditModel("offers", Exploration("epsilon", 0.1)).serialize()
    assert callable(mangle)
    with pytest.raises(BanditStateError, match=message) as caught:
        BanditModel.deserialize("offers", mangle(data))
    assert caught.value.code == "bandit_state_invalid"


def test_metadata_with_bad_version_is_rejected() -> None:
    metadata = b'{"exploration":{"kind":"epsilon","rate":0.1},"version":-3,"vw_version":"x"}'
    data = b"ARBB\x01" + len(metadata).to_bytes(4, "big") + metadata
    with pytest.raises(BanditStateError, match="version"):
        BanditModel.deserialize("offers", data)


def test_loading_with_a_new_epsilon_keeps_the_weights() -> None:
    model = BanditModel("offers", Exploration("epsilon", 0.1))
    train(model, 500)
    reloaded = BanditModel("offers", Exploration("epsilon", 0.4), model.serialize())
    pmf = reloaded.pmf({"device": "mobile"}, ARMS)
    assert argmax(pmf) == BEST_ARM["mobile"]
    assert pmf[BEST_ARM["mobile"]] == pytest.approx(1 - 0.4 + 0.4 / 3, abs=1e-6)
    # ...and the new rate is what gets saved from then on.
    again = BanditModel.deserialize("offers", reloaded.serialize())
    assert again.exploration == Exploration("epsilon", 0.4)
    assert again.pmf({"device": "mobile"}, ARMS) == pmf


@pytest.mark.parametrize(
    ("saved", "wanted"),
    [
        (Exploration("epsilon", 0.1), Exploration("softmax", 1.0)),
        (Exploration("softmax", 1.0), Exploration("epsilon", 0.1)),
        (Exploration("squarecb", 10.0), Exploration("epsilon", 0.1)),
        (Exploration("squarecb", 10.0), Exploration("squarecb", 100.0)),
    ],
)
def test_loading_with_an_incompatible_exploration_is_refused(
    saved: Exploration, wanted: Exploration
) -> None:
    model = BanditModel("offers", saved)
    train(model, 20)
    with pytest.raises(BanditStateError, match="start a new model"):
        BanditModel("offers", wanted, model.serialize())


# --- sampling -----------------------------------------------------------------


def test_splitmix64_matches_the_reference() -> None:
    # First output of SplitMix64 from state 0, as in Vigna's splitmix64.c.
    assert splitmix64(0) == 0xE220A8397B1DCDAF


def test_sample_is_deterministic_per_seed() -> None:
    pmf = [0.2, 0.5, 0.3]
    draws = [sample(pmf, seed) for seed in range(200)]
    assert draws == [sample(pmf, seed) for seed in range(200)]
    assert set(draws) == {0, 1, 2}
    # Pinned: a change here would break replay of every logged decision.
    assert draws[:12] == [2, 1, 1, 0, 1, 1, 2, 1, 1, 1, 0, 1]


def test_sample_frequencies_match_the_pmf() -> None:
    pmf = [0.5, 0.3, 0.15, 0.05, 0.0]
    draws = 20_000
    counts = Counter(sample(pmf, seed) for seed in range(draws))
    assert counts[4] == 0
    chi_square = sum((counts[i] - draws * p) ** 2 / (draws * p) for i, p in enumerate(pmf) if p > 0)
    assert chi_square < 16.27  # 3 degrees of freedom, p = 0.001


def _seed_for(output: int) -> int:
    """The seed whose SplitMix64 output is ``output`` (the mix is a bijection)."""
    mask = (1 << 64) - 1

    def undo_xorshift(y: int, shift: int) -> int:
        x = y
        for _ in range(64 // shift + 1):
            x = y ^ (x >> shift)
        return x & mask

    z = undo_xorshift(output, 31)
    z = z * pow(0x94D049BB133111EB, -1, 1 << 64) & mask
    z = undo_xorshift(z, 27)
    z = z * pow(0xBF58476D1CE4E5B9, -1, 1 << 64) & mask
    z = undo_xorshift(z, 30)
    return (z - 0x9E3779B97F4A7C15) & mask


def test_sample_handles_round_off_at_the_end() -> None:
    top = _seed_for((1 << 64) - 1)  # u = 1 - 2**-53, the largest draw
    bottom = _seed_for(0)  # u = 0
    assert splitmix64(top) == (1 << 64) - 1
    # Ten 0.1s add up to 0.9999999999999999 one at a time, short of the exact
    # sum 1.0 that the draw is scaled by: the largest draw falls off the end.
    assert sample([0.1] * 10, top) == 9
    # A trailing zero is never chosen, even by the largest draw.
    assert sample([0.5, 0.5, 0.0], top) == 1
    assert sample([0.0, 0.5, 0.5], bottom) == 1
    # pmfs that do not quite sum to 1 are scaled, not truncated.
    assert sample([0.3, 0.3, 0.3999999], top) == 2


@pytest.mark.parametrize("pmf", [[], [0.0, 0.0], [0.5, -0.1], [math.nan, 1.0], [math.inf]])
def test_sample_rejects_invalid_pmfs(pmf: list[float]) -> None:
    with pytest.raises(ValueError):
        sample(pmf, 1)


def test_seed_from_decision_id() -> None:
    seed = seed_from_decision_id("d-0001")
    assert seed == int.from_bytes(hashlib.blake2b(b"d-0001", digest_size=8).digest(), "big")
    assert 0 <= seed < 2**64
    assert seed == seed_from_decision_id("d-0001")
    assert seed != seed_from_decision_id("d-0002")
    assert 0 <= seed_from_decision_id("\ud800 lone surrogate") < 2**64


def test_seed_and_draw_do_not_depend_on_hash_randomisation() -> None:
    code = (
        "from arbiter.engine.decision.sampling import sample, seed_from_decision_id as s;"
        "print(s('abc'), sample([0.25] * 4, s('abc')))"
    )
    outputs = set()
    for hash_seed in ("1", "2", "random"):
        env = {**os.environ, "PYTHONHASHSEED": hash_seed}
        result = subprocess.run(
            [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
        )
        outputs.add(result.stdout)
    seed = seed_from_decision_id("abc")
    assert outputs == {f"{seed} {sample([0.25] * 4, seed)}\n"}


# --- feature encoding -----------------------------------------------------------

HOSTILE = [
    "| shared x:1",
    "x |s device=mobile",
    "\n|s device=mobile",
    "a b\tc\rd\ne",
    "x:1:2",
    "nan",
    ":",
    "|",
    "%7C",
    "%",
    "=",
    "",
    "\x00\x01\x7f",
    "\ud800",
    "shared",
    "'tag",
    "é 😀\u00a0\u2028",
]


def parse_features(lines: Sequence[str]) -> list[dict[str, int]]:
    """Feature count per namespace letter of each line, as VW parses them."""
    parser = vw.TextFormatParser(vw.Workspace(["--cb_explore_adf", "--quiet"]))
    return [
        {chr(group.feat_group_index): len(group.indices) for group in parser.parse_line(line)}
        for line in lines
    ]


@pytest.mark.parametrize("hostile", HOSTILE, ids=repr)
def test_hostile_strings_cannot_inject_features(hostile: str) -> None:
    shared: Features = {"device": "desktop", "note": hostile, hostile: "v", "n": 2.5}
    action: Features = {"id": "arm0", "label": hostile, hostile + "x": 1.5}
    lines = format_example(shared, [action])
    assert len(lines) == 2
    assert all("\n" not in line and "\r" not in line for line in lines)
    assert parse_features(lines) == [{"s": 4}, {"a": 3}]


def test_hostile_values_do_not_change_the_pmf() -> None:
    model = BanditModel("offers", Exploration("epsilon", 0.1))
    train(model, 1000)
    innocuous = model.pmf({"note": "hello"}, ARMS)
    # What "x |s device=mobile" would smuggle in if it were not escaped is
    # visible in the pmf, so an injection would fail the comparison below.
    assert model.pmf({"note": "x", "device": "mobile"}, ARMS) != innocuous
    for hostile in HOSTILE:
        assert model.pmf({"note": hostile}, ARMS) == innocuous, hostile
        arms = [{**arm, "label": hostile} for arm in ARMS]
        assert model.pmf({"note": "hello"}, arms) == innocuous, hostile
    # And VW still parses ordinary lines afterwards (a rejected line would
    # have broken the namespace for the rest of the process).
    assert parse_features(["|a x=1", "shared |s x=1"]) == [{"a": 1}, {"s": 1}]


def test_encoding_of_values() -> None:
    shared: Features = {
        "b": True,
        "f": False,
        "i": 3,
        "x": 0.5,
        "tiny": 1e-5,
        "none": None,
        "nan": math.nan,
        "inf": -math.inf,
        "huge_float": 1e300,
        "huge_int": 10**400,
        "a=b": "c",
        "a": "b=c",
        "": 1,
    }
    assert format_example(shared, []) == [
        "shared |s %:1.0 a=b=c a%3Db=c b=true f=false i:3.0 tiny:1e-05 x:0.5"
    ]
    # Distinct inputs stay distinct features after escaping.
    parsed = vw.TextFormatParser(vw.Workspace(["--cb_explore_adf", "--quiet", "--hash", "all"]))
    example = parsed.parse_line(format_example(shared, [])[0])
    assert len(set(next(iter(example)).indices)) == 8


def test_unsupported_feature_types_are_refused() -> None:
    with pytest.raises(TypeError, match="unsupported type list"):
        format_example({"tags": ["a", "b"]}, [])  # type: ignore[dict-item]
    with pytest.raises(TypeError, match="feature names must be strings"):
        format_example({1: "a"}, [])  # type: ignore[dict-item]
    # The model checks its input even at cold start, when VW is not asked,
    # and on action lines, which it caches.
    model = BanditModel("offers", Exploration("epsilon", 0.1))
    bad: Features = {"id": "arm0", "tags": ["a"]}  # type: ignore[dict-item]
    for _ in range(2):
        with pytest.raises(TypeError, match="unsupported type list"):
            model.pmf({"device": "mobile"}, [bad])
        with pytest.raises(TypeError, match="unsupported type list"):
            model.pmf({"tags": ["a"]}, ARMS)  # type: ignore[dict-item]


def test_cached_action_lines_match_the_encoder() -> None:
    model = BanditModel("offers", Exploration("epsilon", 0.1))
    shared: Features = {"device": "mobile"}
    # True == 1 == 1.0 in Python, but they are different features.
    actions: list[Features] = [
        {"id": "a", "flag": True},
        {"id": "a", "flag": 1},
        {"id": "a", "flag": 1.0},
        {"id": "a", "flag": "1"},
        {"flag": True, "id": "a"},
        {"id": "a", "flag": math.nan},
    ]
    expected = format_example(shared, actions)
    assert expected[1:4] == ["|a flag=true id=a", "|a flag:1.0 id=a", "|a flag:1.0 id=a"]
    for _ in range(3):  # cold, then cached
        assert model._lines(shared, actions) == expected


def _fresh_pmf(model: BanditModel, shared: Features, actions: list[Features]) -> list[float]:
    """The pmf from examples parsed afresh, as before examples were reused."""
    parser = vw.TextFormatParser(model._workspace)
    scored = model._workspace.predict_one(
        [parser.parse_line(x) for x in format_example(shared, actions)]
    )
    probabilities = [0.0] * len(actions)
    for index, probability in scored:
        probabilities[index] = probability
    total = math.fsum(probabilities)
    return [p / total for p in probabilities]


@pytest.mark.parametrize("exploration", EXPLORATIONS, ids=lambda e: e.kind)
def test_reused_action_examples_predict_as_fresh_ones(exploration: Exploration) -> None:
    # pmf reuses parsed action examples across calls; VW must leave them as it
    # found them, for every exploration kind, between learning steps too.
    model = BanditModel("offers", exploration)
    world = random.Random(3)
    train(model, 100)
    actions: list[Features] = [*ARMS, {"id": "arm1"}]  # a repeated action too
    for round_ in range(300):
        shared: Features = {"device": world.choice(["mobile", "desktop"]), "x": world.random()}
        assert model.pmf(shared, actions) == _fresh_pmf(model, shared, actions)
        if round_ % 3 == 0:
            model.learn(shared, ARMS, round_ % 3, world.random(), 0.5)
    assert len(model._action_examples) == 3


def test_action_line_cache_is_bounded() -> None:
    model = BanditModel("offers", Exploration("epsilon", 0.1))
    for i in range(10_000):
        action: Features = {"id": f"arm{i}"}
        assert model._lines({}, [action])[1] == f"|a id=arm{i}"
    assert len(model._action_lines) <= 4096


def test_error_hierarchy() -> None:
    assert issubclass(BanditStateError, BanditError)
    assert issubclass(BanditStateError, ValueError)


def test_empty_feature_sets_are_valid_lines() -> None:
    model = BanditModel("offers", Exploration("epsilon", 0.2))
    actions: list[Features] = [{}, {"id": "b", "gone": None}]
    assert format_example({}, actions) == ["shared |s ", "|a ", "|a id=b"]
    model.learn({}, actions, 1, 1.0, 0.5)
    assert model.pmf({}, actions) == pytest.approx([0.1, 0.9], abs=1e-6)

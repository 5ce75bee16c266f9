"""Contextual bandits on Vowpal Wabbit (``cb_explore_adf``): pmf, learning, saved state.

The engine asks a :class:`BanditModel` for one probability per candidate action
(:meth:`BanditModel.pmf`), draws the action itself with
:func:`engine.decision.sampling.sample` seeded from the decision id
(:func:`engine.decision.sampling.seed_from_decision_id`), records the probability,
and later feeds the observed reward back through :meth:`BanditModel.learn`.
Nothing here touches Redis, the clock or a global RNG: the same model state and
the same input give the same pmf, bit for bit, which with the seeded draw is
what makes a logged decision replayable.

Features reach VW as text-format lines (encoded by :mod:`engine.learning.features`),
one ``shared |s ...`` line for the request context and one ``|a ...`` line per
action, with the quadratic
interaction ``s x a`` so that the best action can depend on the context.
Callers should include something that identifies the action (``{"id": "..."}``)
among its features, or every action looks alike to the model.

A :class:`BanditModel` is not thread-safe (a VW workspace is not); give each
thread or worker its own, which is cheap.
"""

from __future__ import annotations

import json
import math
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final, Literal, cast

import vowpal_wabbit_next as vw

from arbiter.dsl.errors import ArbiterError
from arbiter.engine.learning.features import (
    ACTION_NAMESPACE,
    SHARED_NAMESPACE,
    Features,
    FeatureValue,
    action_line,
    shared_line,
)

__all__ = [
    "BanditError",
    "BanditModel",
    "BanditStateError",
    "Exploration",
    "ExplorationKind",
    "FeatureValue",
    "Features",
]

ExplorationKind = Literal["epsilon", "softmax", "squarecb"]

# --hash all: VW otherwise uses an all-digit feature name as the weight index
# itself instead of hashing it, so "123" and a hashed name could collide in ways
# that depend on the data. --interactions sa: without the shared x action
# cross, shared features add the same score to every action and the model
# cannot learn that the best action depends on the context.
_BASE_ARGS: Final = (
    "--cb_explore_adf",
    "--quiet",
    "--hash",
    "all",
    "--interactions",
    SHARED_NAMESPACE + ACTION_NAMESPACE,
)


class BanditError(ArbiterError):
    """Base class of bandit errors; ``code`` is stable and safe to show to users."""

    code = "bandit_error"


class BanditStateError(BanditError, ValueError):
    """Serialized bandit state that cannot be loaded (framing, metadata or VW model)."""

    code = "bandit_state_invalid"


@dataclass(frozen=True, slots=True)
class Exploration:
    """How a bandit explores; ``rate`` means something different for each kind.

    - ``epsilon``: probability mass spread uniformly over the non-greedy
      actions, in [0, 1]. Larger explores more.
    - ``softmax``: VW's ``--lambda``, the inverse temperature of a softmax over
      the predicted rewards, > 0. Larger is greedier.
    - ``squarecb``: VW's ``--gamma_scale`` (SquareCB, Foster & Rakhlin 2020),
      > 0; VW's default is 10. Larger is greedier.
    """

    kind: ExplorationKind
    rate: float

    def __post_init__(self) -> None:
        if self.kind not in ("epsilon", "softmax", "squarecb"):
            raise ValueError(f"unknown exploration kind {self.kind!r}")
        rate = self.rate
        if isinstance(rate, bool) or not isinstance(rate, int | float) or not math.isfinite(rate):
            raise ValueError(f"exploration rate must be a finite number, got {rate!r}")
        if self.kind == "epsilon" and not 0.0 <= rate <= 1.0:
            raise ValueError(f"epsilon must be in [0, 1], got {rate!r}")
        if self.kind != "epsilon" and rate <= 0.0:
            raise ValueError(f"{self.kind} rate must be > 0, got {rate!r}")

    def vw_args(self) -> list[str]:
        """VW command-line options selecting this exploration under ``--cb_explore_adf``."""
        rate = repr(float(self.rate))
        if self.kind == "epsilon":
            return ["--epsilon", rate]
        if self.kind == "softmax":
            return ["--softmax", "--lambda", rate]
        return ["--squarecb", "--gamma_scale", rate]


# --- serialization ----------------------------------------------------------
#
# serialize() framing, all integers big-endian:
#
#   offset 0   4 bytes  magic b"ARBB"
#   offset 4   1 byte   framing version, currently 1
#   offset 5   4 bytes  unsigned length N of the metadata
#   offset 9   N bytes  metadata, UTF-8 JSON with sorted keys:
#                       {"exploration": {"kind": str, "rate": float},
#                        "version": int, "vw_version": str}
#   offset 9+N ...      the VW model exactly as Workspace.serialize() returns it
#                       (with VW's save_resume state, so learning can continue)
_MAGIC: Final = b"ARBB"
_FRAMING_VERSION: Final = 1
_HEADER: Final = struct.Struct(">4sBI")

# Kinds whose rate VW lets us override when loading a saved model (checked
# against this VW: the loaded model then predicts as if trained with the new
# rate). Changing squarecb's gamma_scale fails to load, and switching kinds
# either fails or silently keeps the old kind, so those are refused.
_RATE_CHANGE_ON_LOAD: Final = frozenset({"epsilon", "softmax"})


def _frame(exploration: Exploration, version: int, model: bytes) -> bytes:
    metadata = json.dumps(
        {
            "exploration": {"kind": exploration.kind, "rate": float(exploration.rate)},
            "version": version,
            "vw_version": vw.VW_VERSION,
        },
        sort_keys=True,
        separators=(",", ":"),
    ).encode()
    return _HEADER.pack(_MAGIC, _FRAMING_VERSION, len(metadata)) + metadata + model


def _unframe(data: bytes) -> tuple[Exploration, int, bytes]:
    """Split framed state into (saved exploration, version, VW model bytes)."""
    if len(data) < _HEADER.size:
        raise BanditStateError("bandit state is truncated (shorter than its header)")
    magic, framing, length = _HEADER.unpack_from(data)
    if magic != _MAGIC:
        raise BanditStateError(f"not bandit state: magic {magic!r}, expected {_MAGIC!r}")
    if framing != _FRAMING_VERSION:
        raise BanditStateError(f"unsupported bandit state framing version {framing}")
    end = _HEADER.size + length
    if end > len(data):
        raise BanditStateError("bandit state is truncated (metadata runs past the end)")
    try:
        metadata = json.loads(data[_HEADER.size : end])
        explored = metadata["exploration"]
        exploration = Exploration(kind=explored["kind"], rate=explored["rate"])
        version = metadata["version"]
    except (ValueError, KeyError, TypeError) as exc:
        raise BanditStateError(f"bandit state metadata is invalid: {exc}") from exc
    if isinstance(version, bool) or not isinstance(version, int) or version < 0:
        raise BanditStateError(f"bandit state version must be an int >= 0, got {version!r}")
    return exploration, version, data[end:]


# --- the model ----------------------------------------------------------------

_ActionKey = tuple[tuple[tuple[str, FeatureValue], ...], tuple[type, ...]]
_ACTION_CACHE_SIZE: Final = 4096


class BanditModel:
    """One contextual bandit: a VW ``cb_explore_adf`` workspace plus a version counter.

    ``version`` counts the examples learned over the model's whole life (it is
    saved by :meth:`serialize`), so a decision can record which state produced
    its pmf.

    Cold start: while ``version == 0`` :meth:`pmf` returns exactly ``1/n`` for
    each action without asking VW. An untrained VW already gives a near-uniform
    pmf for all three kinds (every score ties at 0), but SquareCB's comes out
    as e.g. 0.33333331/0.33333334 in float32; being explicit makes cold start
    exact, independent of the exploration kind, and free.
    """

    __slots__ = (
        "_action_examples",
        "_action_lines",
        "_parser",
        "_version",
        "_workspace",
        "exploration",
        "name",
    )

    def __init__(self, name: str, exploration: Exploration, state: bytes | None = None) -> None:
        """A fresh model, or one restored from ``state`` (bytes from :meth:`serialize`).

        When restoring, ``exploration`` may change the rate of an ``epsilon`` or
        ``softmax`` model (the learned weights are kept); any other difference
        from the saved exploration raises :class:`BanditStateError`.
        """
        self.name = name
        self.exploration = exploration
        args = [*_BASE_ARGS, *exploration.vw_args()]
        if state is None:
            self._version = 0
            self._workspace = vw.Workspace(args)
        else:
            saved, self._version, model = _unframe(state)
            if saved != exploration and (
                saved.kind != exploration.kind or saved.kind not in _RATE_CHANGE_ON_LOAD
            ):
                raise BanditStateError(
                    f"bandit {name!r} was saved with {saved.kind} {saved.rate} and cannot be "
                    f"loaded as {exploration.kind} {exploration.rate}; start a new model"
                )
            try:
                self._workspace = vw.Workspace(args, model_data=model)
            except RuntimeError as exc:
                raise BanditStateError(
                    f"bandit {name!r}: VW could not load the model: {exc}"
                ) from exc
        # Built once per workspace: a parser is bound to its workspace's hashing.
        self._parser = vw.TextFormatParser(self._workspace)
        # Encoded action lines by content. The candidate actions of a plan
        # repeat on every decision while the context does not, so only action
        # lines are worth keeping; a hit costs ~0.4 us against ~1.4 us to encode.
        self._action_lines: dict[_ActionKey, str] = {}
        # Parsed action examples by line, for predictions only. VW's prediction
        # leaves an unlabelled action example as it found it (pinned for every
        # exploration kind in tests/engine/learning/test_bandit.py), and parsing
        # was half of a pmf's cost (14.6 -> 7.9 us for three actions). Learning
        # parses its own: it sets a label on the chosen action's example.
        self._action_examples: dict[str, vw.Example] = {}

    @property
    def version(self) -> int:
        """Number of examples this model has learned from, across serialize/deserialize."""
        return self._version

    def _lines(self, shared: Features, actions: Sequence[Features]) -> list[str]:
        """What :func:`engine.learning.features.format_example` returns, with action lines served from the cache."""
        lines = [shared_line(shared)]
        cache = self._action_lines
        for action in actions:
            # The value types are part of the key because True == 1 == 1.0 in
            # Python while True encodes as "x=true" and 1 as "x:1.0".
            key = (tuple(action.items()), tuple(map(type, action.values())))
            try:
                line = cache.get(key)
            except TypeError:  # an unhashable value: the encoder reports it properly
                line = action_line(action)
            if line is None:
                line = action_line(action)
                if len(cache) >= _ACTION_CACHE_SIZE:
                    cache.clear()  # bounded, and cheaper than tracking recency
                cache[key] = line
            lines.append(line)
        return lines

    def _examples(self, lines: list[str]) -> list[vw.Example]:
        """Parsed examples for a prediction: the shared line fresh, action lines from the cache."""
        parse = self._parser.parse_line
        cache = self._action_examples
        examples = [parse(lines[0])]
        used: set[str] = set()
        for line in lines[1:]:
            example = cache.get(line)
            if example is None or line in used:
                # A line repeated within one call gets its own object: one VW
                # multi-example never holds the same example twice.
                example = parse(line)
                if line not in used:
                    if len(cache) >= _ACTION_CACHE_SIZE:
                        cache.clear()
                    cache[line] = example
            used.add(line)
            examples.append(example)
        return examples

    def pmf(self, shared: Features, actions: Sequence[Features]) -> list[float]:
        """One probability per action, in the order given, summing to 1.

        Deterministic: the same model state and the same input give the same
        list bit for bit. Raises ``ValueError`` when ``actions`` is empty.
        """
        count = len(actions)
        if count == 0:
            raise ValueError("pmf needs at least one action")
        # Encoded even at cold start, so that a bad feature fails the same way
        # on a fresh model as on a trained one.
        lines = self._lines(shared, actions)
        if self._version == 0:
            return [1.0 / count] * count
        scored = cast(list[tuple[int, float]], self._workspace.predict_one(self._examples(lines)))
        # VW returns (action index, probability) sorted by probability; put
        # them back in input order.
        probabilities = [0.0] * count
        for index, probability in scored:
            probabilities[index] = probability
        # VW computes in float32, so the sum is 1 only to ~1e-7; renormalise in
        # double so that the recorded probabilities and the sampler agree.
        total = math.fsum(probabilities)
        if not math.isfinite(total) or total <= 0.0:
            raise BanditError(f"bandit {self.name!r} produced an invalid pmf {probabilities!r}")
        return [p / total for p in probabilities]

    def learn(
        self,
        shared: Features,
        actions: Sequence[Features],
        chosen: int,
        reward: float,
        probability: float,
    ) -> None:
        """Learn from one logged decision: ``actions[chosen]`` was shown with ``probability``.

        VW minimises cost, Arbiter's rewards are better when larger, so the
        label is ``cost = -reward``. Only the chosen action carries a label;
        ``probability`` is the one recorded at decision time (the propensity VW
        uses for its off-policy correction), in (0, 1].
        """
        if not 0 <= chosen < len(actions):
            raise ValueError(f"chosen index {chosen} is out of range for {len(actions)} actions")
        if not math.isfinite(reward):
            raise ValueError(f"reward must be finite, got {reward!r}")
        if not 0.0 < probability <= 1.0:
            raise ValueError(f"probability must be in (0, 1], got {probability!r}")
        parse = self._parser.parse_line
        examples = [parse(line) for line in self._lines(shared, actions)]
        examples[1 + chosen].set_label(vw.CBLabel(label=(-float(reward), float(probability))))
        self._workspace.learn_one(examples)
        self._version += 1

    def serialize(self) -> bytes:
        """The model as bytes: VW model plus our metadata (see the framing above)."""
        return _frame(self.exploration, self._version, self._workspace.serialize())

    @classmethod
    def deserialize(cls, name: str, data: bytes) -> BanditModel:
        """Restore a model from :meth:`serialize` bytes, with the exploration it was saved with."""
        exploration, _, _ = _unframe(data)
        return cls(name, exploration, data)

    def __repr__(self) -> str:
        return f"BanditModel({self.name!r}, {self.exploration!r}, version={self._version})"

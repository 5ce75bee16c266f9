"""Micro benchmark: bandit pmf() and learn() latency with 5, 20 and 50 actions.

Run from the repository root::

    python -m benchmarks.bandit_predict [--repeat 15] [--number 500] [--kind epsilon]

The model is trained first (``pmf`` of an untrained model is the uniform
shortcut and never reaches VW). For each action count, prints the median (over
``--repeat`` timeit runs of ``--number`` calls each), in microseconds, of:

- ``encode``: ``format_example`` alone, i.e. encoding with no cache;
- ``vw only``: parsing already-encoded lines and ``predict_one`` (the VW floor);
- ``pmf``: ``BanditModel.pmf``, what the engine pays per decision (the same
  candidate actions every call, as in serving, so action lines come from the
  model's cache and only the shared line is encoded);
- ``learn``: ``BanditModel.learn``, what the learner pays per reward;

then the cost per action and the ratio to the 5-action figure.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import timeit
from collections.abc import Callable, Sequence
from functools import partial

import vowpal_wabbit_next as vw

from arbiter.engine.decision.sampling import sample
from arbiter.engine.learning.bandit import (
    BanditModel,
    Exploration,
    Features,
)
from arbiter.engine.learning.features import format_example

ACTION_COUNTS = (5, 20, 50)
TRAINING_ROUNDS = 500

# A request context of the size the example rulesets read: a few segments,
# RFM numbers and flags.
SHARED: Features = {
    "device": "mobile",
    "segment": "high_intent",
    "country": "DE",
    "visits_30d": 7,
    "orders_90d": 2,
    "lifetime_value": 412.5,
    "days_since_last_purchase": 12,
    "vip": False,
}


def actions(count: int) -> list[Features]:
    """``count`` offers with an id, a category and a price, like a ruleset's catalogue."""
    return [
        {"id": f"offer_{i}", "category": f"cat_{i % 4}", "discount": 5.0 + i % 3 * 5}
        for i in range(count)
    ]


def median_seconds(call: Callable[[], object], repeat: int, number: int) -> float:
    """Median wall time of one ``call()``, timeit-style (GC off during each run)."""
    runs = timeit.Timer(call).repeat(repeat=repeat, number=number)
    return statistics.median(runs) / number


def trained_model(exploration: Exploration, count: int) -> BanditModel:
    model = BanditModel("bench", exploration)
    offers = actions(count)
    for round_ in range(TRAINING_ROUNDS):
        pmf = model.pmf(SHARED, offers)
        chosen = sample(pmf, round_)
        model.learn(SHARED, offers, chosen, float(chosen % 2), pmf[chosen])
    return model


def vw_only(model: BanditModel, lines: list[str]) -> object:
    """The floor: VW parsing pre-encoded lines and predicting, nothing of ours."""
    workspace = model._workspace  # benchmark only: reach past the API for the floor
    parse = model._parser.parse_line
    return workspace.predict_one([parse(line) for line in lines])


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--repeat", type=int, default=15, help="timeit runs per figure")
    parser.add_argument("--number", type=int, default=500, help="calls per timeit run")
    parser.add_argument(
        "--kind", choices=("epsilon", "softmax", "squarecb"), default="epsilon", help="exploration"
    )
    parser.add_argument("--rate", type=float, default=None, help="exploration rate")
    args = parser.parse_args(argv)
    rate = args.rate if args.rate is not None else {"epsilon": 0.1}.get(args.kind, 10.0)
    exploration = Exploration(args.kind, rate)

    print(
        f"VW {vw.VW_VERSION} (vowpal-wabbit-next {vw.__version__}), "
        f"Python {platform.python_version()}, {platform.machine()}; {exploration}; "
        f"{len(SHARED)} shared + 3 per-action features; "
        f"median of {args.repeat} x {args.number} calls; microseconds"
    )
    header = (
        f"{'actions':>7} {'encode':>8} {'vw only':>8} {'pmf':>8} {'learn':>8} "
        f"{'pmf/action':>11} {'learn/action':>13} {'pmf vs 5':>9} {'learn vs 5':>11}"
    )
    print(header)
    print("-" * len(header))
    base_pmf = base_learn = 0.0
    for count in ACTION_COUNTS:
        model = trained_model(exploration, count)
        offers = actions(count)
        lines = format_example(SHARED, offers)
        probability = model.pmf(SHARED, offers)[1]
        number = max(1, args.number * 5 // count)

        encode = median_seconds(partial(format_example, SHARED, offers), args.repeat, number)
        floor = median_seconds(partial(vw_only, model, lines), args.repeat, number)
        pmf = median_seconds(partial(model.pmf, SHARED, offers), args.repeat, number)
        learn = median_seconds(
            partial(model.learn, SHARED, offers, 1, 1.0, probability), args.repeat, number
        )
        if count == ACTION_COUNTS[0]:
            base_pmf, base_learn = pmf, learn
        print(
            f"{count:>7} {encode * 1e6:8.1f} {floor * 1e6:8.1f} {pmf * 1e6:8.1f} "
            f"{learn * 1e6:8.1f} {pmf / count * 1e6:11.2f} {learn / count * 1e6:13.2f} "
            f"{pmf / base_pmf:8.1f}x {learn / base_learn:10.1f}x"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Micro benchmark: ONNX propensity scoring latency, one row versus a batch of 20.

Run from the repository root::

    python -m benchmarks.model_scoring [--repeat 15] [--number 2000]

For each committed model in ``models/``, prints the median (over ``--repeat``
timeit runs of ``--number`` calls each) of:

- ``raw 1``: a bare ``InferenceSession.run`` on one prepared float32 row (the floor);
- ``1 row``: ``OnnxModel.score_one`` on a Python list (what the engine pays);
- ``20 batched``: one ``OnnxModel.score`` call with 20 rows;
- ``20 x 1``: twenty ``score_one`` calls;

then the batched cost per row and how many times cheaper batching is than
twenty single calls.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import timeit
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path

import numpy as np
import onnxruntime as ort

from arbiter.engine.scoring.onnx import OnnxModel
from models.synthetic import make_customers
from models.train import MODELS

REPO_ROOT = Path(__file__).resolve().parents[1]

BATCH = 20


def median_seconds(call: Callable[[], object], repeat: int, number: int) -> float:
    """Median wall time of one ``call()``, timeit-style (GC off during each run)."""
    runs = timeit.Timer(call).repeat(repeat=repeat, number=number)
    return statistics.median(runs) / number


def raw_session(path: Path) -> ort.InferenceSession:
    """A session configured like OnnxModel's, to show what the wrapper itself costs."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=15, help="timeit runs per figure")
    parser.add_argument("--number", type=int, default=2000, help="calls per timeit run")
    args = parser.parse_args(argv)

    data = make_customers(1_000, seed=2024)
    print(
        f"onnxruntime {ort.__version__}, numpy {np.__version__}, "
        f"Python {platform.python_version()}, {platform.machine()}; "
        f"median of {args.repeat} x {args.number} calls; microseconds"
    )
    header = (
        f"{'model':<12} {'raw 1':>7} {'1 row':>7} {'20 batched':>11} {'20 x 1':>8} "
        f"{'batched/row':>12} {'20x1 / batched':>15}"
    )
    print(header)
    print("-" * len(header))
    for spec in MODELS:
        path = REPO_ROOT / "models" / f"{spec.name}.onnx"
        model = OnnxModel.load(path)
        matrix = data.matrix(spec.inputs)
        one_row = matrix[0].tolist()
        rows = matrix[:BATCH].tolist()
        session = raw_session(path)
        prepared = {model.input_name: matrix[:1]}
        outputs = [model.output_name]

        def raw_one(
            session: ort.InferenceSession = session,
            outputs: list[str] = outputs,
            prepared: dict[str, np.ndarray] = prepared,
        ) -> object:
            return session.run(outputs, prepared)

        def twenty_singles(model: OnnxModel = model, rows: list[list[float]] = rows) -> None:
            for row in rows:
                model.score_one(row)

        raw = median_seconds(raw_one, args.repeat, args.number)
        single = median_seconds(partial(model.score_one, one_row), args.repeat, args.number)
        batched = median_seconds(partial(model.score, rows), args.repeat, args.number)
        singles = median_seconds(twenty_singles, args.repeat, max(1, args.number // BATCH))
        print(
            f"{spec.name:<12} {raw * 1e6:7.1f} {single * 1e6:7.1f} {batched * 1e6:11.1f} "
            f"{singles * 1e6:8.1f} {batched / BATCH * 1e6:12.2f} {singles / batched:14.1f}x"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

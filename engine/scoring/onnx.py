"""Propensity scoring with ONNX models in onnxruntime.

A model is loaded once (per Plan) and then scores every candidate of a decision
in one batched ``session.run``. Serving needs only onnxruntime and numpy; the
models are trained and exported by ``models/train.py``.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

import numpy as np
import numpy.typing as npt
import onnxruntime as ort

from arbiter.dsl.errors import ArbiterError

__all__ = ["ModelLoadError", "OnnxModel"]

# Only the element types a propensity model's feature tensor can sensibly have.
_INPUT_DTYPES: Final[dict[str, type[np.floating[Any]]]] = {
    "tensor(float)": np.float32,
    "tensor(double)": np.float64,
}
_PROBABILITY_TYPES: Final = frozenset(_INPUT_DTYPES)
# skl2onnx names the class-probability output so; preferred when several outputs fit.
_PREFERRED_OUTPUT: Final = "probabilities"
# Batches up to this many rows are scored through a prepared binding (see `_Binding`).
_BOUND_BATCH_MAX: Final = 16


class _Binding:
    """Input and output buffers for batches of one size, bound to a session once.

    ``session.run`` builds an input tensor from the feed, allocates every output
    and converts it back to numpy on each call: for the small models a decision
    scores that was most of the call (7.1 -> 4.0 µs for one row of the
    reference models, measured side by side). Here the rows are copied into a
    buffer the input tensor already wraps, and the probabilities land in a
    buffer read in place; other outputs (a classifier's labels) are still
    allocated by onnxruntime.
    """

    __slots__ = ("binding", "inputs", "probabilities")

    def __init__(self, model: OnnxModel, rows: int) -> None:
        session = model._session
        self.inputs = np.zeros((rows, model.n_inputs), dtype=model._dtype)
        self.probabilities = np.zeros((rows, model._width), dtype=model._output_dtype)
        self.binding = session.io_binding()
        self.binding.bind_ortvalue_input(
            model.input_name, ort.OrtValue.ortvalue_from_numpy(self.inputs)
        )
        self.binding.bind_ortvalue_output(
            model.output_name, ort.OrtValue.ortvalue_from_numpy(self.probabilities)
        )
        for node in session.get_outputs():
            if node.name != model.output_name:
                self.binding.bind_output(node.name, "cpu")


class ModelLoadError(ArbiterError):
    """A model file could not be loaded; the message names the path and the problem."""

    code = "model-load"

    def __init__(self, path: Path, problem: str) -> None:
        super().__init__(f"cannot load model {str(path)!r}: {problem}")
        self.path = path
        self.problem = problem

    def __reduce__(self) -> tuple[type[ModelLoadError], tuple[Path, str]]:
        # Rebuild from (path, problem), not from the formatted message, so the
        # error survives pickling across worker processes.
        return (type(self), (self.path, self.problem))


class OnnxModel:
    """A binary classifier in ONNX form that scores P(class 1) for rows of features.

    The graph must take one 2-D float tensor ``[batch, n_inputs]`` with a fixed
    ``n_inputs`` and produce a probability tensor ``[batch, 2]`` (column 1 is
    used) or ``[batch, 1]``, as skl2onnx does with ``zipmap`` off.
    """

    name: str
    path: Path
    version: str
    n_inputs: int
    input_name: str
    input_type: str
    output_name: str

    def __init__(
        self,
        session: ort.InferenceSession,
        *,
        path: Path,
        version: str,
    ) -> None:
        """Wrap a ready session; use :meth:`load` rather than calling this directly."""
        self._session = session
        self.path = path
        self.name = path.stem
        self.version = version
        self.input_name, self.input_type, self.n_inputs = _describe_input(session, path)
        self.output_name, probability_width = _find_probability_output(session, path)
        # Everything the per-call path needs is fixed here, once.
        self._dtype = _INPUT_DTYPES[self.input_type]
        output_type = next(str(o.type) for o in session.get_outputs() if o.name == self.output_name)
        self._output_dtype = _INPUT_DTYPES[output_type]
        self._output_names = [self.output_name]
        self._width = probability_width
        self._column = probability_width - 1
        # Buffers are per thread: a binding's buffers are written on every call.
        self._local = threading.local()

    @classmethod
    def load(cls, path: str | Path) -> OnnxModel:
        """Load an ONNX model file into a single-threaded onnxruntime session.

        Raises :class:`ModelLoadError` if the file is missing or unreadable, is not
        a valid ONNX model, or does not have the input and output shapes above.
        """
        path = Path(path)
        if not path.is_file():
            problem = "is a directory, not a file" if path.is_dir() else "no such file"
            raise ModelLoadError(path, problem)
        try:
            content = path.read_bytes()
        except OSError as exc:
            raise ModelLoadError(path, f"unreadable ({exc.strerror or exc})") from exc
        if not content:
            raise ModelLoadError(path, "empty file, not an ONNX model")
        try:
            # From the bytes already read, so that `version` is the hash of exactly
            # what runs, even if the file is replaced meanwhile.
            session = ort.InferenceSession(
                content, sess_options=_session_options(), providers=["CPUExecutionProvider"]
            )
        # onnxruntime's exceptions (InvalidProtobuf, InvalidGraph, Fail, ...) derive
        # directly from Exception, with no common base to catch instead.
        except Exception as exc:
            raise ModelLoadError(path, f"not a valid ONNX model or corrupt ({exc})") from exc
        version = hashlib.sha256(content).hexdigest()[:12]
        return cls(session, path=path, version=version)

    def score(self, rows: Sequence[Sequence[float]] | npt.NDArray[np.floating[Any]]) -> list[float]:
        """Return P(class 1) for each row, all rows in one batched ``session.run``.

        Each row holds ``n_inputs`` numbers in the model's input order. Raises
        ``ValueError`` if the rows are not ``[batch, n_inputs]``.
        """
        count = len(rows)
        width = self.n_inputs
        # Widths checked first: numpy would broadcast a one-number row across the buffer.
        if 0 < count <= _BOUND_BATCH_MAX and (
            rows.shape[1:] == (width,)
            if isinstance(rows, np.ndarray)
            else all(len(row) == width for row in rows)
        ):
            bound = self._bound(count)
            try:
                bound.inputs[:] = rows
            except (ValueError, TypeError):
                pass  # not [count, n_inputs] numbers: the general path names the problem
            else:
                self._session.run_with_iobinding(bound.binding)
                scores: list[float] = bound.probabilities[:, self._column].tolist()
                return scores
        features = np.asarray(rows, dtype=self._dtype)
        if features.ndim != 2 or features.shape[1] != self.n_inputs:
            if features.size == 0:
                return []
            raise ValueError(
                f"model {self.name!r} takes rows of {self.n_inputs} numbers, "
                f"got an array of shape {features.shape}"
            )
        if features.shape[0] == 0:
            return []
        probabilities = self._session.run(self._output_names, {self.input_name: features})[0]
        scores = probabilities[:, self._column].tolist()
        return scores

    def _bound(self, rows: int) -> _Binding:
        bindings: dict[int, _Binding] | None = getattr(self._local, "bindings", None)
        if bindings is None:
            bindings = self._local.bindings = {}
        bound = bindings.get(rows)
        if bound is None:
            bound = bindings[rows] = _Binding(self, rows)
        return bound

    def score_one(self, row: Sequence[float]) -> float:
        """Return P(class 1) for a single row of ``n_inputs`` numbers."""
        return self.score((row,))[0]

    def __repr__(self) -> str:
        return (
            f"OnnxModel(name={self.name!r}, version={self.version!r}, "
            f"n_inputs={self.n_inputs}, path={str(self.path)!r})"
        )


def _session_options() -> ort.SessionOptions:
    options = ort.SessionOptions()
    # Workers run one process per core and a decision scores a handful of rows:
    # a thread pool would only add hand-off latency and contend with the others.
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return options


def _describe_input(session: ort.InferenceSession, path: Path) -> tuple[str, str, int]:
    inputs = session.get_inputs()
    if len(inputs) != 1:
        names = ", ".join(str(node.name) for node in inputs)
        raise ModelLoadError(
            path, f"expected exactly one input tensor, found {len(inputs)}: {names}"
        )
    node = inputs[0]
    name, element_type, shape = str(node.name), str(node.type), list(node.shape)
    if element_type not in _INPUT_DTYPES:
        raise ModelLoadError(
            path, f"input {name!r} is {element_type}, expected tensor(float) or tensor(double)"
        )
    # The batch dimension is symbolic (None or a name); the width must be a fixed int.
    if len(shape) != 2 or not isinstance(shape[1], int) or shape[1] <= 0:
        raise ModelLoadError(
            path, f"unsupported input shape {shape} for {name!r}, expected [batch, n] with fixed n"
        )
    return name, element_type, shape[1]


def _find_probability_output(session: ort.InferenceSession, path: Path) -> tuple[str, int]:
    candidates: list[tuple[str, int]] = []
    for node in session.get_outputs():
        shape = list(node.shape)
        if str(node.type) in _PROBABILITY_TYPES and len(shape) == 2 and shape[1] in (1, 2):
            candidates.append((str(node.name), int(shape[1])))
    if not candidates:
        found = ", ".join(f"{node.name} {node.type} {node.shape}" for node in session.get_outputs())
        raise ModelLoadError(
            path,
            "no probability output (a float tensor [batch, 2] or [batch, 1]); "
            f"outputs are: {found}. Export classifiers with zipmap disabled",
        )
    for candidate in candidates:
        if candidate[0] == _PREFERRED_OUTPUT:
            return candidate
    return candidates[0]

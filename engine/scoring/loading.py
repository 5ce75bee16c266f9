"""Loading a plan's ONNX models, checked against their declarations.

    models = load_models(plan, base_dir)       # dict: model name -> OnnxModel
    oracle = LiveOracle(models, bandits)

A `model` declaration names a file and lists its inputs; the ONNX graph says
how many numbers it really takes. The two are compared here, when the plan is
loaded, so that a mismatch is a `.rules` error at the declaration's line
(`model-inputs`) instead of a failed score on every decision. A missing or
corrupt file is a `model-load` error.

`load_models` raises before returning anything: the caller swaps the new plan
in only after it returns, so a reload with a broken model leaves the old plan
and its models serving. `check_models` reports the same problems as
diagnostics, for `arbiter check`.

Model paths are relative to the directory of the `.rules` file that declares
them, so an included file's models are found next to it. The declaring file
is the one its spans name (as `dsl.load` opened it, relative to the working
directory); when that is not a file on disk, as for text uploaded through the
API, ``base_dir`` stands for its directory.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from arbiter.dsl import CheckedRuleset, Diagnostic, RulesError
from arbiter.dsl import nodes as n
from arbiter.dsl.errors import sort_and_cap
from arbiter.engine.plan import Plan
from arbiter.engine.scoring.onnx import ModelLoadError, OnnxModel

__all__ = ["check_models", "load_models", "model_path"]


def model_path(decl: n.ModelDecl, base_dir: str | Path = ".") -> Path:
    """Where the file of a `model` declaration is: relative to the `.rules` file declaring it,
    or to ``base_dir`` when the declaration's text was not read from a file."""
    declared = Path(decl.path)
    if declared.is_absolute():
        return declared
    source = Path(decl.span.file)
    return (source.parent if source.is_file() else Path(base_dir)) / declared


def _load_all(
    checked: CheckedRuleset,
    base_dir: str | Path,
    load: Callable[[Path], OnnxModel] = OnnxModel.load,
) -> tuple[dict[str, OnnxModel], list[Diagnostic]]:
    """Load every declared model; collect every problem rather than stop at the first."""
    models: dict[str, OnnxModel] = {}
    diagnostics: list[Diagnostic] = []
    # Two declarations of one file share a session: it is immutable and the
    # inputs check is per declaration anyway.
    by_path: dict[Path, OnnxModel | ModelLoadError] = {}
    for name, decl in checked.models.items():
        path = model_path(decl, base_dir)
        key = path.resolve()
        loaded = by_path.get(key)
        if loaded is None:
            try:
                loaded = load(path)
            except ModelLoadError as exc:
                loaded = exc
            by_path[key] = loaded
        if isinstance(loaded, ModelLoadError):
            diagnostics.append(
                Diagnostic(
                    "model-load",
                    f"model {name}: cannot load {decl.path}: {loaded.problem}",
                    decl.span,
                    hint=f"looked for {path}",
                )
            )
            continue
        declared = len(decl.inputs)
        if declared != loaded.n_inputs:
            diagnostics.append(
                Diagnostic(
                    "model-inputs",
                    f"model {name} declares {declared} input{'s' if declared != 1 else ''} "
                    f"but {decl.path} takes {loaded.n_inputs}",
                    decl.span,
                    hint=f"the graph's input '{loaded.input_name}' is [batch, {loaded.n_inputs}]",
                )
            )
            continue
        models[name] = loaded
    return models, sort_and_cap(diagnostics)


def check_models(
    checked: CheckedRuleset,
    base_dir: str | Path = ".",
    load: Callable[[Path], OnnxModel] = OnnxModel.load,
) -> list[Diagnostic]:
    """Every problem with the ruleset's model files, as diagnostics (empty when all load).

    Loads each model once to read its graph; nothing is kept. ``base_dir``
    as for `load_models`; ``load`` opens a file (an editor checking on every
    keystroke passes one that remembers unchanged files).
    """
    return _load_all(checked, base_dir, load)[1]


def load_models(plan: Plan, base_dir: str | Path = ".") -> dict[str, OnnxModel]:
    """Load the plan's models, by declared name, each into one onnxruntime session.

    ``base_dir`` is the directory of the `.rules` file; it is used only when
    the ruleset's text was not read from a file (see `model_path`).

    Call once per plan (sessions are created here, never per decision) and
    hand the result to `engine.decision.oracle.LiveOracle`. Raises `dsl.RulesError`
    (codes `model-load`, `model-inputs`) with every problem found, before
    anything is returned, so the caller keeps serving its previous plan.
    Creating sessions takes milliseconds: call it off the event loop
    (``asyncio.to_thread``) in a server.
    """
    models, diagnostics = _load_all(plan.checked, base_dir)
    if diagnostics:
        raise RulesError(diagnostics, plan.checked.sources)
    return models

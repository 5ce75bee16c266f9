"""The check worker's memory between keystrokes: it answers exactly as a fresh check,
and a model file replaced on disk is read again."""

from __future__ import annotations

import shutil
from pathlib import Path

from support.paths import MODELS_DIR, RULESETS_DIR

from arbiter.dsl.diagnose import diagnose
from arbiter.engine.scoring.loading import check_models
from arbiter.server.studio import worker
from arbiter.server.studio.workbench import check_report

RETAIL = (RULESETS_DIR / "retail.rules").read_text(encoding="utf-8")


def fresh(path: Path, text: str) -> dict[str, object]:
    """What `arbiter check` would say: no memory of anything."""
    diagnosis = diagnose(path, text)
    if diagnosis.checked is not None:
        diagnosis.diagnostics += check_models(diagnosis.checked, path.parent)
    return check_report(diagnosis, str(path))


def test_keystroke_after_keystroke_the_answer_is_a_fresh_checks(tmp_path: Path) -> None:
    rules = tmp_path / "rules" / "retail.rules"
    rules.parent.mkdir()
    shutil.copytree(MODELS_DIR, tmp_path / "models")
    line = "segment vip = profile.lifetime_value > 1000 and profile.orders_90d >= 3"
    texts = [
        RETAIL,
        RETAIL.replace(line, line.replace("1000", "1001")),
        RETAIL.replace(line, line.replace("profile.orders_90d", "profile.orders_9d")),
        RETAIL.replace(line, line.replace(">= 3", ">=")),
        RETAIL,
    ]
    for text in texts:
        assert worker.check(str(rules), text) == fresh(rules, text)
    assert worker._REPARSER.reused > 0
    # A model file replaced under the same name is read again, not remembered.
    (tmp_path / "models" / "churn.onnx").write_bytes(b"not a model")
    answer = worker.check(str(rules), RETAIL)
    assert answer == fresh(rules, RETAIL)
    assert [d["code"] for d in answer["diagnostics"]] == ["model-load"]

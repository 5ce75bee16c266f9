"""Where the repository's files are, for tests at any depth of tests/."""

from pathlib import Path

ROOT_DIR = Path(__file__).resolve().parents[2]
CASES_DIR = ROOT_DIR / "tests" / "cases"
RULESETS_DIR = ROOT_DIR / "rulesets"
MODELS_DIR = ROOT_DIR / "models"

"""Building a test app on real Redis."""

from __future__ import annotations

from pathlib import Path

from arbiter.server.settings import Settings
from support.paths import CASES_DIR

CASES = CASES_DIR / "server"
ADMIN = {"Authorization": "Bearer admin-key"}


def settings(redis_url: str, tmp_path: Path, **overrides: object) -> Settings:
    """Settings for a test app: the shop ruleset, real Redis, an admin key, a loose deadline."""
    values: dict[str, object] = {
        "redis_url": redis_url,
        "admin_key": "admin-key",
        "rules_path": str(CASES / "shop.rules"),
        "data_dir": str(tmp_path / "data"),
        "reload_interval_ms": 50,
        # A read deadline far above a cold first read on a loaded 2-core machine (the
        # 50 ms default degraded decisions there): tests that are about the deadline
        # (tests/server/test_fault.py) set their own.
        "redis_timeout_ms": 5000,
    }
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]

"""What the `arbiter` commands share: finding rules files, compiling them, reaching Redis."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from arbiter import dsl
from arbiter.engine.codegen.compiler import compile_plan
from arbiter.engine.plan import Plan

__all__ = ["compile_rules", "redis_url", "rule_paths"]


def rule_paths(args_paths: Sequence[str]) -> list[Path]:
    """The .rules files named by, or found under, the command-line paths; exits if none."""
    from arbiter.server.rulesets import rule_files

    out: list[Path] = []
    for raw in args_paths:
        p = Path(raw)
        if not p.exists():
            raise SystemExit(f"arbiter: {raw}: no such file or directory")
        out.extend(rule_files(p))
    if not out:
        raise SystemExit(f"arbiter: no .rules files in {', '.join(args_paths)}")
    return out


def compile_rules(path: Path) -> Plan:
    """Load, check and compile one rules file (raises `dsl.RulesError`)."""
    return compile_plan(dsl.load_checked(path))


def trigger_shards() -> int:
    """ARBITER_TRIGGER_SHARDS: the trigger schedule's shard count, as the servers use it."""
    from arbiter.server.settings import Settings

    return Settings.from_env().trigger_shards


def redis_url() -> tuple[str, Any]:
    """ARBITER_REDIS_URL, or the embedded Redis of the data dir (started if not running)."""
    from arbiter.engine.store.embedded import EmbeddedRedis
    from arbiter.server.settings import Settings

    settings = Settings.from_env()
    if settings.redis_url:
        return settings.redis_url, None
    embedded = EmbeddedRedis.attach_or_start(Path(settings.data_dir) / "redis")
    return embedded.url, embedded

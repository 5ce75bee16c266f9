"""Live rulesets: loaded from files, versioned in Redis, swapped atomically.

Every version of a ruleset's text is kept in a Redis list; a pointer names the
live one. Each worker compiles the live version and polls the pointer, so a
`PUT` or a rollback on one worker reaches all of them within the reload
interval. A request keeps the `LiveRuleset` it started with, so a swap never
changes a decision half-way. A text that fails to parse, check, compile or
load its models is refused and the live version stays.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from arbiter import dsl
from arbiter.dsl.errors import ArbiterError
from arbiter.dsl.types import Type
from arbiter.engine.codegen.compiler import compile_plan
from arbiter.engine.learning.bandit_store import BanditRegistry
from arbiter.engine.plan import Plan
from arbiter.engine.store import keys

log = logging.getLogger("arbiter.rulesets")

#: Loads what a plan needs at run time (ONNX models, bandit policies) or raises RulesError.
Resources = Callable[[Plan, Path], Mapping[str, Any]]


@dataclass(frozen=True)
class LiveRuleset:
    """A compiled ruleset and the run-time resources it uses."""

    name: str
    plan: Plan
    text: str
    version_no: int  # 1-based position in the Redis version list
    path: Path
    models: Mapping[str, Any] = field(default_factory=dict)
    bandits: Mapping[str, Any] = field(default_factory=dict)

    @property
    def context_schema(self) -> Mapping[str, Type]:
        return self.plan.checked.context

    @property
    def profile_schema(self) -> Mapping[str, Type]:
        return self.plan.checked.profile


def rule_files(path: Path) -> list[Path]:
    """The `.rules` files a path names: the file itself, or every file in the folder."""
    if path.is_file():
        return [path]
    return sorted(p for p in path.glob("*.rules") if p.is_file())


def build(path: Path, text: str, version_no: int, resources: Resources | None) -> LiveRuleset:
    """Parse, check, compile and load resources; raises `dsl.RulesError` on any problem."""
    checked = dsl.load_checked(path, text)
    plan = compile_plan(checked)
    try:
        loaded = resources(plan, path.parent) if resources else {}
    except Exception as exc:
        exc.add_note("arbiter: while loading the models")
        raise
    return LiveRuleset(
        checked.name,
        plan,
        text,
        version_no,
        path,
        loaded.get("models", {}),
        loaded.get("bandits", {}),
    )


class RulesetManager:
    """Holds the live rulesets of this worker."""

    def __init__(
        self,
        redis: Any,
        rules_path: Path,
        resources: Resources | None = None,
        bandits: BanditRegistry | None = None,
        on_activate: Callable[[LiveRuleset], None] | None = None,
    ) -> None:
        self.redis = redis
        self.rules_path = rules_path
        self.resources = resources
        self.registry = bandits
        self.on_activate = on_activate
        self.live: dict[str, LiveRuleset] = {}
        self.default: str | None = None
        # Exported as metrics: versions made live, versions (and models) that failed to load.
        self.reloads = 0
        self.load_failures = 0
        self.model_failures = 0

    async def _activate(
        self, path: Path, text: str, version_no: int, name: str | None = None
    ) -> LiveRuleset:
        """Build a version and make it live; raises (and changes nothing) if it does not load."""
        built = await self._build(path, text, version_no)
        if name is not None and built.name != name:
            raise NameMismatch(name, built.name)
        prepared = await self.registry.prepare(built.plan) if self.registry else None
        if version_no == 0:
            version_no = await self._store_if_new(built.name, text)
        bandits = self.registry.install(prepared) if self.registry and prepared else {}
        live = LiveRuleset(built.name, built.plan, text, version_no, path, built.models, bandits)
        self.live[live.name] = live
        self.reloads += 1
        if self.on_activate is not None:
            self.on_activate(live)
        return live

    async def _build(self, path: Path, text: str, version_no: int) -> LiveRuleset:
        try:
            return await asyncio.to_thread(build, path, text, version_no, self.resources)
        except Exception as exc:
            self.load_failures += 1
            if "arbiter: while loading the models" in getattr(exc, "__notes__", ()):
                self.model_failures += 1
            raise

    def folder(self) -> Path:
        return self.rules_path if self.rules_path.is_dir() else self.rules_path.parent

    async def start(self, default: str | None = None) -> None:
        """Load every file; a file that differs from the stored live text becomes a new version."""
        files = rule_files(self.rules_path)
        for path in files:
            await self._activate(path, path.read_text(encoding="utf-8"), 0)
        if default is not None and default not in self.live:
            raise dsl.RulesError(
                [
                    dsl.Diagnostic(
                        "unknown-ruleset",
                        f"default ruleset '{default}' is not among {sorted(self.live)}",
                        dsl.nodes.Span(str(self.rules_path), 0, 0, 0, 0),
                    )
                ]
            )
        self.default = default or (next(iter(self.live)) if self.live else None)

    async def _store_if_new(self, name: str, text: str) -> int:
        versions = keys.ruleset_versions(name)
        pointer = await self.redis.get(keys.ruleset_live(name))
        if pointer is not None:
            current = await self.redis.lindex(versions, int(pointer) - 1)
            if current is not None and current.decode() == text:
                return int(pointer)
        count = int(await self.redis.rpush(versions, text.encode()))
        await self.redis.set(keys.ruleset_live(name), count)
        await self.redis.sadd(keys.RULESET_NAMES, name)
        return count

    def get(self, name: str | None) -> LiveRuleset | None:
        """The live ruleset by name, or the default one."""
        key = name if name is not None else self.default
        return self.live.get(key) if key is not None else None

    async def put(self, name: str, text: str, author: str | None = None) -> LiveRuleset:
        """Check and compile `text`; if good, store it as a new version and make it live.

        When and by whom (`author`, as the client names itself) go in the version's metadata.
        """
        path = self.live[name].path if name in self.live else self.folder() / f"{name}.rules"
        built = await self._build(path, text, 0)
        if built.name != name:
            raise NameMismatch(name, built.name)
        count = int(await self.redis.rpush(keys.ruleset_versions(name), text.encode()))
        meta = json.dumps({"at": time.time(), "author": author})
        await self.redis.hset(keys.ruleset_meta(name), str(count), meta)
        await self.redis.sadd(keys.RULESET_NAMES, name)
        live = await self._activate(path, text, count, name)
        await self.redis.set(keys.ruleset_live(name), count)
        if self.default is None:
            self.default = name
        return live

    async def rollback(self, name: str) -> LiveRuleset:
        """Make the version before the live one live again."""
        current = self.live[name]
        if current.version_no <= 1:
            raise NoEarlierVersion(name)
        target = current.version_no - 1
        raw = await self.redis.lindex(keys.ruleset_versions(name), target - 1)
        live = await self._activate(current.path, raw.decode(), target, name)
        await self.redis.set(keys.ruleset_live(name), target)
        return live

    async def versions(self, name: str) -> int:
        return int(await self.redis.llen(keys.ruleset_versions(name)))

    async def refresh(self) -> None:
        """Adopt live versions another worker made live (PUT or rollback elsewhere)."""
        for name, current in list(self.live.items()):
            pointer = await self.redis.get(keys.ruleset_live(name))
            if pointer is None or int(pointer) == current.version_no:
                continue
            target = int(pointer)
            raw = await self.redis.lindex(keys.ruleset_versions(name), target - 1)
            if raw is None:
                continue
            try:
                await self._activate(current.path, raw.decode(), target, name)
            except dsl.RulesError as exc:
                log.error("ruleset %s version %d does not load here: %s", name, target, exc)

    async def watch(self, interval_s: float, stop: asyncio.Event) -> None:
        """Poll for versions made live elsewhere until `stop` is set."""
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=interval_s)
            if stop.is_set():
                return
            try:
                await self.refresh()
            except Exception as exc:
                log.warning("ruleset refresh failed: %s", exc)


class NameMismatch(ArbiterError):
    """A ruleset's text declares another name than the one it was sent to."""

    code = "ruleset-name-mismatch"

    def __init__(self, url_name: str, text_name: str) -> None:
        super().__init__(f"the text declares 'ruleset {text_name}' but was sent to '{url_name}'")


class NoEarlierVersion(ArbiterError):
    """A rollback asked of a ruleset that has only one version."""

    code = "no-earlier-version"

    def __init__(self, name: str) -> None:
        super().__init__(f"ruleset '{name}' has no earlier version to roll back to")

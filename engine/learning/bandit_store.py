"""Bandit model state in Redis, shared by every worker and machine.

One learner per bandit (see `engine.learning.learner`) publishes the model; every
server worker holds a `BanditRegistry` that loads the latest published state
and hot-swaps to newer versions without a restart.

Keys, per (ruleset, bandit), all under one hash tag so that a publish is one
atomic script even on Redis Cluster:

- ``arb:{bandit:<ruleset>:<bandit>}:model``: hash ``state`` (bytes of
  `BanditModel.serialize`), ``version`` (publish counter, 1, 2, ...),
  ``examples`` (examples learned, `BanditModel.version`);
- ``...:done``: sorted set of rewards already learned (member per
  (decision id, action), score = publish time), written in the same script as
  the state it went into, so a redelivered reward is recognised;
- ``...:leader``: the learner's lease (see `engine.learning.learner`).

Hot swap: each registry checks the published versions at most every
``check_interval_ms`` (default 1000): one pipelined ``HGET`` per bandit, and a
state fetch only for bandits whose version moved. Polling was chosen over
pub/sub because it needs no extra connection per worker, cannot miss a
message across a reconnect or a Cluster failover, and costs one round trip a
second per worker. The check runs in a background task (`BanditRegistry.watch`)
or through `BanditRegistry.refresh`, which returns at once (a timestamp
comparison) until the interval has passed; nothing Redis-related happens on
the request path.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final, cast

from redis.exceptions import RedisError

from arbiter.dsl import Diagnostic, RulesError
from arbiter.dsl import nodes as n
from arbiter.dsl.errors import ArbiterError
from arbiter.engine.learning.bandit import BanditModel, BanditStateError, Exploration
from arbiter.engine.plan import Plan
from arbiter.engine.store import keys
from arbiter.engine.store.client import AsyncRedisClient

__all__ = [
    "BanditRegistry",
    "PublishRejected",
    "PublishedState",
    "bandit_keys",
    "exploration_of",
    "load_published",
    "publish",
    "published_version",
]

log = logging.getLogger(__name__)

#: How long a "this reward was learned" marker is kept. Longer than the
#: decision record's TTL (7 days): after that a reward cannot be joined to its
#: decision at all, so a marker would never be consulted again.
DONE_RETENTION_SECONDS: Final = 8 * 24 * 3600


@dataclass(frozen=True, slots=True)
class BanditKeys:
    """The Redis keys of one (ruleset, bandit); they share a Cluster hash slot."""

    model: str
    done: str
    leader: str
    group: str  # consumer group name on keys.REWARD_STREAM (not a key)


def bandit_keys(ruleset: str, bandit: str) -> BanditKeys:
    """Key names for one bandit of one ruleset."""

    def safe(part: str) -> str:  # braces inside a name would move the hash tag
        return part.replace("{", "%7B").replace("}", "%7D")

    tag = f"{keys.PREFIX}:{{bandit:{safe(ruleset)}:{safe(bandit)}}}"
    return BanditKeys(
        model=f"{tag}:model",
        done=f"{tag}:done",
        leader=f"{tag}:leader",
        group=f"learner:{ruleset}:{bandit}",
    )


def exploration_of(decl: n.BanditDecl) -> Exploration:
    """The `Exploration` a bandit declaration asks for; `RulesError` if VW cannot do it."""
    try:
        return Exploration(kind=decl.exploration, rate=float(decl.rate))  # type: ignore[arg-type]
    except ValueError as exc:
        raise RulesError(
            [Diagnostic("bad-rate", f"bandit '{decl.name}': {exc}", decl.span)]
        ) from None


def done_member(decision_id: str, action: str) -> str:
    """The processed-set member of one reward: length-prefixed, so no two pairs collide."""
    return f"{len(decision_id)}:{decision_id}{action}"


# --- publishing -------------------------------------------------------------

# KEYS: model hash, done zset, leader lease.
# ARGV: state, examples, expected version ("" = any), lease token ("" = none),
#       now (seconds), retention (seconds), done members...
# Returns the new version, -1 if the lease is not ours, -2 if the stored
# version is not the expected one. Checking the lease inside the script is
# the fencing that keeps a learner that lost its lease (a long pause) from
# overwriting its successor's model.
_PUBLISH_LUA: Final = """
if ARGV[4] ~= '' and redis.call('GET', KEYS[3]) ~= ARGV[4] then
  return -1
end
local current = tonumber(redis.call('HGET', KEYS[1], 'version') or '0')
if ARGV[3] ~= '' and current ~= tonumber(ARGV[3]) then
  return -2
end
local version = current + 1
redis.call('HSET', KEYS[1], 'state', ARGV[1], 'version', version, 'examples', ARGV[2])
local now = tonumber(ARGV[5])
for i = 7, #ARGV do
  redis.call('ZADD', KEYS[2], now, ARGV[i])
end
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now - tonumber(ARGV[6]))
return version
"""


class PublishRejected(ArbiterError):
    """A conditional publish did not happen: the lease or the base version was not ours."""

    code = "publish-rejected"

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


async def publish(
    redis: AsyncRedisClient,
    ruleset: str,
    bandit: str,
    model: BanditModel,
    *,
    expected_version: int | None = None,
    lease_token: str | None = None,
    done: Iterable[tuple[str, str]] = (),
    now: float | None = None,
) -> int:
    """Store ``model`` as the bandit's state and bump its version, atomically; return it.

    With ``expected_version`` the publish happens only if the stored version
    is still that one; with ``lease_token`` only if that token holds the
    bandit's learner lease; otherwise `PublishRejected` is raised and nothing
    is written. ``done`` lists (decision id, action) pairs learned into this
    state; they are recorded in the same step.
    """

    k = bandit_keys(ruleset, bandit)
    members = [done_member(d, a) for d, a in done]
    args: list[str | bytes | int | float] = [
        model.serialize(),
        model.version,
        "" if expected_version is None else expected_version,
        lease_token or "",
        time.time() if now is None else now,
        DONE_RETENTION_SECONDS,
        *members,
    ]
    script = redis.register_script(_PUBLISH_LUA)
    result = int(await cast(Awaitable[Any], script(keys=[k.model, k.done, k.leader], args=args)))
    if result == -1:
        raise PublishRejected(f"bandit {ruleset}/{bandit}: the learner lease is not ours")
    if result == -2:
        raise PublishRejected(
            f"bandit {ruleset}/{bandit}: the published version moved past {expected_version}"
        )
    return result


@dataclass(frozen=True, slots=True)
class PublishedState:
    """What is stored for one bandit: its publish counter and model bytes."""

    version: int
    state: bytes


async def published_version(redis: AsyncRedisClient, ruleset: str, bandit: str) -> int:
    """The bandit's publish counter; 0 if nothing was ever published."""
    raw = await cast(Awaitable[Any], redis.hget(bandit_keys(ruleset, bandit).model, "version"))
    return int(raw) if raw is not None else 0


async def load_published(redis: AsyncRedisClient, ruleset: str, bandit: str) -> PublishedState:
    """The bandit's latest published state (version and state read together); version 0 and
    empty state if none."""
    raw = await cast(
        Awaitable[list[Any]],
        redis.hmget(bandit_keys(ruleset, bandit).model, ["version", "state"]),
    )
    if raw[0] is None or raw[1] is None:
        return PublishedState(0, b"")
    return PublishedState(int(raw[0]), bytes(raw[1]))


def build_model(name: str, exploration: Exploration, published: PublishedState) -> BanditModel:
    """A model from published state, or a fresh one (uniform pmf) if nothing was published."""
    if published.version == 0:
        return BanditModel(name, exploration)
    return BanditModel(name, exploration, published.state)


# --- the per-process registry -----------------------------------------------


@dataclass(slots=True)
class _Installed:
    """The bandits of one ruleset's live plan and the version each model came from."""

    explorations: dict[str, Exploration]
    models: dict[str, BanditModel]  # the very dict handed to LiveOracle; values swapped
    versions: dict[str, int]


@dataclass(frozen=True, slots=True)
class PlanBandits:
    """A plan's bandit models, ready to install; from `BanditRegistry.prepare`."""

    ruleset: str
    explorations: dict[str, Exploration]
    models: dict[str, BanditModel]
    versions: dict[str, int]


class BanditRegistry:
    """The bandit models one server process decides with, kept at the latest published version.

    Per plan (re)load::

        prepared = await registry.prepare(plan)   # raises RulesError; changes nothing
        registry.install(prepared)                # after the plan itself is swapped in
        ...
        oracle = LiveOracle(models, registry.bandits(plan.name))  # per decision, no I/O

    and one background task for the process: ``await registry.watch(stop)``.
    A model is not thread-safe: use a registry from one event loop thread.
    """

    def __init__(
        self,
        redis: AsyncRedisClient,
        *,
        check_interval_ms: float = 1000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """``clock`` (seconds, monotonic) is injectable so tests need not sleep."""
        self._redis = redis
        self._interval = check_interval_ms / 1000.0
        self._clock = clock
        self._installed: dict[str, _Installed] = {}
        self._next_check = clock() + self._interval
        self._lock = asyncio.Lock()

    async def prepare(self, plan: Plan) -> PlanBandits:
        """Build the plan's bandits from their latest published state, installing nothing.

        A bandit with no published state starts fresh (uniform pmf). Raises
        `RulesError` (code ``bandit-state``) at the bandit's declaration if the
        published state cannot be used with the declared exploration (a
        changed kind, say), and lets Redis errors through: the caller keeps
        its current plan either way.
        """
        explorations = {name: exploration_of(d) for name, d in plan.checked.bandits.items()}
        models: dict[str, BanditModel] = {}
        versions: dict[str, int] = {}
        problems: list[Diagnostic] = []
        for name, exploration in explorations.items():
            published = await load_published(self._redis, plan.name, name)
            try:
                models[name] = build_model(name, exploration, published)
            except BanditStateError as exc:
                decl = plan.checked.bandits[name]
                problems.append(
                    Diagnostic(
                        "bandit-state",
                        f"bandit '{name}' cannot use its published model: {exc}",
                        decl.span,
                        hint="rename the bandit to start a new model",
                    )
                )
                continue
            versions[name] = published.version
        if problems:
            raise RulesError(problems, plan.checked.sources)
        return PlanBandits(plan.name, explorations, models, versions)

    def install(self, prepared: PlanBandits) -> dict[str, BanditModel]:
        """Make ``prepared`` the ruleset's bandits, watched for new versions; returns the
        mapping `bandits` will return from now on."""
        self._installed[prepared.ruleset] = _Installed(
            dict(prepared.explorations), dict(prepared.models), dict(prepared.versions)
        )
        return self._installed[prepared.ruleset].models

    async def load(self, plan: Plan) -> dict[str, BanditModel]:
        """`prepare` then `install`, for callers with no plan swap to order against."""
        return self.install(await self.prepare(plan))

    def uninstall(self, ruleset: str) -> None:
        """Stop serving and watching a ruleset's bandits (the ruleset was removed)."""
        self._installed.pop(ruleset, None)

    def bandits(self, ruleset: str) -> Mapping[str, BanditModel]:
        """The ruleset's current models, for `LiveOracle`; empty if none are installed.

        The mapping is updated in place by hot swaps, so it may be kept.
        """
        installed = self._installed.get(ruleset)
        return installed.models if installed is not None else {}

    def versions(self, ruleset: str) -> dict[str, int]:
        """The published version each of the ruleset's models was built from (0: cold)."""
        installed = self._installed.get(ruleset)
        return dict(installed.versions) if installed is not None else {}

    async def refresh(self, *, force: bool = False) -> list[tuple[str, str]]:
        """Swap in every newer published model; returns the (ruleset, bandit) pairs swapped.

        Unless ``force``, does nothing (no I/O) until ``check_interval_ms``
        has passed since the last check. Redis errors propagate; the models
        in use stay as they were.
        """
        now = self._clock()
        if not force and now < self._next_check:
            return []
        self._next_check = now + self._interval
        async with self._lock:
            return await self._refresh()

    async def _refresh(self) -> list[tuple[str, str]]:
        watched = [(rs, b) for rs, inst in self._installed.items() for b in inst.models]
        if not watched:
            return []
        pipe = self._redis.pipeline(transaction=False)
        for ruleset, bandit in watched:
            pipe.hget(bandit_keys(ruleset, bandit).model, "version")
        raw_versions = await pipe.execute()
        swapped: list[tuple[str, str]] = []
        for (ruleset, bandit), raw in zip(watched, raw_versions, strict=True):
            installed = self._installed.get(ruleset)
            if raw is None or installed is None or bandit not in installed.models:
                continue
            if int(raw) <= installed.versions[bandit]:
                continue
            published = await load_published(self._redis, ruleset, bandit)
            # A plan may have been installed while we awaited; only swap into the current one.
            current = self._installed.get(ruleset)
            if current is not installed or published.version <= installed.versions[bandit]:
                continue
            try:
                # Built inline on the event loop (~2 ms): VW keeps process-wide
                # parser state, so a workspace is not built on another thread
                # while this one is predicting.
                model = build_model(bandit, installed.explorations[bandit], published)
            except BanditStateError as exc:
                log.warning(
                    "bandit %s/%s: keeping version %d: %s",
                    ruleset,
                    bandit,
                    installed.versions[bandit],
                    exc,
                )
                installed.versions[bandit] = published.version  # don't retry every second
                continue
            installed.models[bandit] = model
            installed.versions[bandit] = published.version
            swapped.append((ruleset, bandit))
        return swapped

    async def watch(self, stop: asyncio.Event, *, poll_ms: float | None = None) -> None:
        """Check for new versions every ``check_interval_ms`` until ``stop`` is set.

        Run it as one background task per process (in the server lifespan).
        Redis errors are logged and retried at the next interval.
        """
        poll = self._interval if poll_ms is None else poll_ms / 1000.0
        while not stop.is_set():
            try:
                await self.refresh()
            except (RedisError, OSError) as exc:
                log.warning("bandit registry: version check failed: %s", exc)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=poll)

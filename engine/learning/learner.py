"""The bandit learner: rewards from the stream, joined to their decisions, learned, published.

One `Learner` per (ruleset, bandit). It reads ``keys.REWARD_STREAM`` through
its own consumer group (`engine.learning.reward_stream`; every bandit sees every
reward), looks up the decision each reward is about (``keys.decision(id)``),
and, when this bandit chose the rewarded action, teaches the model with the
features, pmf and probability recorded at decision time. New versions are published to Redis
(`engine.learning.bandit_store.publish`) every ``publish_every`` learned rewards or
``publish_interval`` seconds, whichever comes first; every server worker's
`BanditRegistry` picks them up.

Guarantees:

- **At least once.** A stream entry is acknowledged (XACK) only after the
  state that learned it is published. A learner that dies loses only
  unpublished work; its unacknowledged entries stay pending in the group and
  the next leader claims them (XAUTOCLAIM).
- **Never twice.** Each learned (decision id, action) is written to the
  bandit's processed set by the same Lua script that stores the state, so a
  redelivered reward is recognised and skipped. The state and its processed
  set can never disagree.
- **One learner per bandit.** The active learner holds a lease
  (`engine.learning.lease`), a key set if absent with an expiry (``PX``) and renewed
  every third of its length.
  Others stand by and take over when it expires, or at once when its holder
  stops cleanly and releases it. Publishing checks the lease inside the same
  script (fencing), so a learner that lost its lease during a long pause
  cannot overwrite its successor's model.

Rewards that never come are **dropped**: nothing is learned for a decision
without feedback, unless its bandit is rewarded from events (``reward EVENT``,
`engine.learning.attribution`), which rewards 0 when the window closes. This is the simple, honest choice: the learner never
guesses, and a late reward is never contradicted by an invented one. The
price is on the sender: a site must send the failures too (reward 0 for an
offer shown and not clicked). A model fed only successes sees every arm pay
and cannot tell them apart. Feedback whose decision record has expired (the
server keeps it 7 days) is acknowledged and counted as ``dropped``.

Rewards are read from the start of the stream when a bandit's group is
first created; entries the server trims from the stream (``MAXLEN``) before a
learner read them are lost to it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import msgspec
from redis.exceptions import RedisError

from arbiter import dsl
from arbiter.dsl import nodes as n
from arbiter.engine.learning.attribution import (
    Attributor,
    outcome_types,
    publish_outcome_types,
    tracked_types,
)
from arbiter.engine.learning.bandit import BanditModel, Exploration
from arbiter.engine.learning.bandit_store import (
    PublishRejected,
    bandit_keys,
    build_model,
    done_member,
    exploration_of,
    load_published,
    publish,
)
from arbiter.engine.learning.lease import LeaderLease
from arbiter.engine.learning.reward_stream import RewardGroup, StreamEntry, parse_reward
from arbiter.engine.records import RECORD_DECODER, DecisionRecord
from arbiter.engine.store import keys, raw_commands
from arbiter.engine.store.client import AsyncRedisClient, connect
from arbiter.engine.store.compression import plain_records

__all__ = ["Learner", "LearnerConfig", "LearnerStats", "learn_main", "run_learners"]

log = logging.getLogger(__name__)

#: Rewards learned between two yields to the event loop (~1 ms of it).
LEARNED_BETWEEN_YIELDS = 16


@dataclass(frozen=True, slots=True)
class LearnerConfig:
    """How often to publish, how long a lease lasts, how much to read at once."""

    #: Publish once this many rewards have been learned since the last publish ...
    publish_every: int = 100
    #: ... or this many seconds after the first unpublished one, whichever is first.
    publish_interval: float = 1.0
    #: Leader lease; a dead learner's bandit is taken over after at most this long.
    lease_ms: int = 10_000
    #: Stream entries per read. Small, because in-process the learner shares
    #: the event loop with requests; a reward costs ~75 us all told (join,
    #: decode, learn, publish), so a batch holds the loop for a few ms at most.
    batch: int = 100
    #: How long `run_forever` waits when a read found less than a batch.
    poll_interval: float = 0.1
    #: Entries pending this long with another consumer are taken over; by
    #: default twice the lease, when their reader has surely lost it.
    claim_idle_ms: int | None = None

    def __post_init__(self) -> None:
        if self.publish_every < 1 or self.batch < 1:
            raise ValueError("publish_every and batch must be at least 1")
        if self.lease_ms < 30 or self.publish_interval < 0 or self.poll_interval <= 0:
            raise ValueError("lease_ms must be >= 30, intervals positive")


@dataclass(slots=True)
class LearnerStats:
    """Counters since the learner was created (each stream entry counts once per delivery)."""

    learned: int = 0  # rewards learned into the model (published or not yet)
    published: int = 0  # versions published
    duplicates: int = 0  # already learned: a redelivered or repeated reward
    dropped: int = 0  # the decision record is gone (expired)
    ignored: int = 0  # about another ruleset or bandit, or an action this bandit did not choose
    invalid: int = 0  # malformed entry, reward or record
    acked: int = 0  # stream entries acknowledged


class Learner:
    """Learns one bandit of one ruleset from the reward stream; see the module docstring.

    Drive it with `run_forever` (server, ``arbiter learn``) or step it with
    `run_once` (tests). ``clock`` paces publishing and can be injected; the
    lease is paced by the real monotonic clock because Redis expires it in
    real time.
    """

    def __init__(
        self,
        redis: AsyncRedisClient,
        ruleset: str,
        bandit: str,
        exploration: Exploration,
        *,
        config: LearnerConfig | None = None,
        clock: Callable[[], float] = time.monotonic,
        consumer: str | None = None,
    ) -> None:
        """A learner for ``bandit`` of ``ruleset``; it does no I/O until run."""
        self.redis = redis
        self.ruleset = ruleset
        self.bandit = bandit
        self.exploration = exploration
        self.config = config or LearnerConfig()
        self.stats = LearnerStats()
        self._clock = clock
        self._keys = bandit_keys(ruleset, bandit)
        self._token = uuid.uuid4().hex
        self.consumer = consumer or f"{socket.gethostname()}:{os.getpid()}:{self._token[:8]}"
        self._lease = LeaderLease(redis, self._keys.leader, self._token)
        self._stream = RewardGroup(
            redis,
            self._keys.group,
            self.consumer,
            batch=self.config.batch,
            claim_idle_ms=self.config.claim_idle_ms or 2 * self.config.lease_ms,
            claim_every=self.config.lease_ms / 1000.0,
        )
        self._reset()

    @classmethod
    def for_decl(
        cls,
        redis: AsyncRedisClient,
        ruleset: str,
        decl: n.BanditDecl,
        **kwargs: Any,
    ) -> Learner:
        """A learner for a checked bandit declaration (its name and exploration)."""
        return cls(redis, ruleset, decl.name, exploration_of(decl), **kwargs)

    # --- state ----------------------------------------------------------------

    def _reset(self) -> None:
        """Forget leadership and all unpublished work (it is redelivered from the stream)."""
        self._leader = False
        self._renew_at = 0.0
        self._model: BanditModel | None = None
        self._base_version = 0
        self._stream.reset()
        self._inflight: list[bytes] = []  # stream ids read since the last flush
        self._inflight_set: set[bytes] = set()
        self._learned: list[tuple[str, str]] = []  # (decision id, action) not yet published
        self._learned_set: set[tuple[str, str]] = set()
        self._first_unpublished: float | None = None

    @property
    def is_leader(self) -> bool:
        """Whether this learner held the lease when it last checked."""
        return self._leader

    @property
    def model(self) -> BanditModel | None:
        """The model being trained (with unpublished rewards), while leader."""
        return self._model

    # --- leadership -------------------------------------------------------------

    async def ensure_leader(self) -> bool:
        """Acquire or renew the lease as due; on acquiring, load the published state.

        Returns whether this learner is now the bandit's active learner.
        """
        now = time.monotonic()
        if self._leader and now < self._renew_at:
            return True
        lease = self.config.lease_ms
        if not await self._lease.acquire(lease):
            if self._leader:
                log.warning("learner %s/%s lost its lease", self.ruleset, self.bandit)
                self._reset()
            return False
        self._renew_at = now + lease / 3000.0
        if self._leader:
            return True
        try:
            await self._stream.create()
            published = await load_published(self.redis, self.ruleset, self.bandit)
            self._model = build_model(self.bandit, self.exploration, published)
        except BaseException:
            await self.release()
            raise
        self._base_version = published.version
        self._leader = True
        # Whatever a previous leader read and did not acknowledge is ours now.
        self._stream.claim_all_next()
        log.info(
            "learner %s/%s is active (consumer %s, from version %d)",
            self.ruleset,
            self.bandit,
            self.consumer,
            published.version,
        )
        return True

    async def release(self) -> None:
        """Give up the lease (if held) so a standby takes over at once; drops unpublished work."""
        try:
            await self._lease.release()
        finally:
            self._reset()

    # --- reading and learning ---------------------------------------------------

    async def _process(self, entries: Sequence[StreamEntry]) -> None:
        """Learn what ``entries`` teach this bandit; everything read is acknowledged later."""
        model = self._model
        assert model is not None
        parsed: list[tuple[bytes, tuple[str, str, float] | None]] = [
            (entry_id, parse_reward(fields)) for entry_id, fields in entries
        ]
        wanted = [p for _, p in parsed if p is not None]
        records: list[Any] = []
        done: list[Any] = []
        if wanted:
            # One round trip: which rewards are already learned, and every record; sent
            # raw (`raw_commands`), the records by one MGET (one reply to read, not one
            # per reward) unless a Cluster spreads them over its shards.
            commands: list[tuple[Any, ...]] = [
                ("ZMSCORE", self._keys.done, *[done_member(d, a) for d, a, _ in wanted])
            ]
            records_key = [keys.decision(d) for d, _, _ in wanted]
            one_read = raw_commands.single_node(self.redis)
            if one_read:
                commands.append(("MGET", *records_key))
            else:
                commands += [("GET", key) for key in records_key]
            replies = await raw_commands.send(self.redis, commands)
            for reply in replies:
                if isinstance(reply, Exception):
                    raise reply
            done, records = replies[0], replies[1] if one_read else replies[1:]
            records = await plain_records(self.redis, records)
        results = iter(zip(done, records, strict=True))
        for i, (entry_id, reward) in enumerate(parsed):
            if i and i % LEARNED_BETWEEN_YIELDS == 0:
                # In a serving worker, requests run between every few rewards (~65 µs
                # each): a batch of 100 would hold the event loop ~6 ms.
                await asyncio.sleep(0)
            self._inflight.append(entry_id)
            self._inflight_set.add(entry_id)
            if reward is None:
                self.stats.invalid += 1
                continue
            already, raw = next(results)
            self._learn_one(model, reward, already is not None, raw)

    def _learn_one(
        self, model: BanditModel, reward: tuple[str, str, float], already: bool, raw: Any
    ) -> None:
        decision_id, action, value = reward
        pair = (decision_id, action)
        if already or pair in self._learned_set:
            self.stats.duplicates += 1
            return
        if raw is None:
            self.stats.dropped += 1
            return
        try:
            record: DecisionRecord = RECORD_DECODER.decode(raw)
        except msgspec.DecodeError:
            self.stats.invalid += 1
            return
        if record.ruleset.name != self.ruleset:
            self.stats.ignored += 1
            return
        choice = next(
            (b for b in record.bandits if b.bandit == self.bandit and b.chosen == action), None
        )
        if choice is None or action not in choice.arms:
            self.stats.ignored += 1
            return
        try:
            model.learn(
                choice.shared,
                choice.arm_features,
                choice.arms.index(action),
                value,
                choice.probability,
            )
        except (ValueError, TypeError) as exc:
            log.warning("learner %s/%s: cannot learn %s: %s", self.ruleset, self.bandit, pair, exc)
            self.stats.invalid += 1
            return
        self.stats.learned += 1
        self._learned.append(pair)
        self._learned_set.add(pair)
        if self._first_unpublished is None:
            self._first_unpublished = self._clock()

    # --- publishing -------------------------------------------------------------

    def publish_due(self) -> bool:
        """Whether the schedule says the learned rewards should be published now."""
        if not self._learned:
            return False
        if len(self._learned) >= self.config.publish_every:
            return True
        first = self._first_unpublished
        return first is not None and self._clock() - first >= self.config.publish_interval

    async def flush(self) -> bool:
        """Publish what was learned (if anything), then acknowledge every entry read.

        Returns False if the publish was refused (the lease or the base
        version is no longer ours); unpublished work is then dropped and the
        entries are left to be redelivered.
        """
        if self._learned:
            model = self._model
            assert model is not None
            try:
                version = await publish(
                    self.redis,
                    self.ruleset,
                    self.bandit,
                    model,
                    expected_version=self._base_version,
                    lease_token=self._token,
                    done=self._learned,
                )
            except PublishRejected as exc:
                log.warning("learner %s/%s stands down: %s", self.ruleset, self.bandit, exc)
                self._reset()
                return False
            self._base_version = version
            self.stats.published += 1
            self._learned.clear()
            self._learned_set.clear()
            self._first_unpublished = None
        if self._inflight:
            await self._ack(self._inflight)
            self.stats.acked += len(self._inflight)
            self._inflight = []
            self._inflight_set = set()
        return True

    async def _ack(self, entry_ids: Sequence[bytes]) -> None:
        (reply,) = await raw_commands.send(
            self.redis, [("XACK", keys.REWARD_STREAM, self._keys.group, *entry_ids)]
        )
        if isinstance(reply, Exception):
            raise reply

    # --- driving ----------------------------------------------------------------

    async def step(self) -> int:
        """Become or stay leader, read one batch, learn it, publish if due.

        Returns how many stream entries were read (0: nothing new, or not leader).
        """
        if not await self.ensure_leader():
            return 0
        entries = await self._stream.read(self._inflight_set)
        if entries:
            await self._process(entries)
        if self.publish_due() or (self._inflight and not self._learned):
            await self.flush()
        return len(entries)

    async def run_once(self, *, publish: bool = True) -> LearnerStats:
        """Handle every reward available now, then publish and acknowledge (unless
        ``publish`` is False, which leaves the work unpublished, as a crash would).

        Returns a copy of the counters. Does nothing if another learner is active.
        """
        while True:
            if not await self.ensure_leader():
                break
            entries = await self._stream.read(self._inflight_set)
            if not entries:
                break
            await self._process(entries)
            if publish and self.publish_due():
                await self.flush()
        if publish and self._leader:
            await self.flush()
        return replace(self.stats)

    async def run_forever(self, stop: asyncio.Event) -> None:
        """Learn until ``stop`` is set, standing by while another learner is active.

        On stop, publishes what is pending and releases the lease so a
        standby takes over without waiting for it to expire. Redis errors are
        logged and retried after a pause.
        """
        try:
            while not stop.is_set():
                read = 0
                try:
                    read = await self.step()
                except (RedisError, OSError) as exc:
                    log.warning("learner %s/%s: %s", self.ruleset, self.bandit, exc)
                if read >= self.config.batch:
                    # A backlog: read on at once, letting requests run between batches.
                    await asyncio.sleep(0)
                    continue
                # Otherwise wait for more, as after an empty read: reading again at once
                # took a few rewards a round trip (64 reads a second, each with its
                # record join and later its XACK, at 300 rewards a second), and a round
                # trip costs Redis more than the commands in it. Stand-bys retry the
                # lease; the leader waits for new rewards.
                wait = self.config.poll_interval
                if not self._leader:
                    wait = max(wait, self.config.lease_ms / 3000.0)
                elif self._first_unpublished is not None:
                    # Wake when the learned rewards are due, not a poll later:
                    # publish_interval may be shorter than poll_interval.
                    due = self._first_unpublished + self.config.publish_interval
                    wait = max(0.0, min(wait, due - self._clock()))
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=wait)
        finally:
            if self._leader:
                try:
                    await self.flush()
                    await self.release()
                except (RedisError, OSError) as exc:
                    log.warning("learner %s/%s: stopping: %s", self.ruleset, self.bandit, exc)


async def run_learners(
    redis: AsyncRedisClient,
    ruleset: str,
    bandits: Mapping[str, n.BanditDecl],
    stop: asyncio.Event,
    *,
    config: LearnerConfig | None = None,
) -> None:
    """Run one learner per bandit of a ruleset until ``stop`` is set (in-process mode).

    Every worker may run this: the lease keeps exactly one learner active per
    bandit. Restart it (set ``stop``, await, call again) when the ruleset's
    bandit declarations change.
    """
    learners = [Learner.for_decl(redis, ruleset, decl, config=config) for decl in bandits.values()]
    await asyncio.gather(*(learner.run_forever(stop) for learner in learners))


async def learn_main(
    redis_url: str,
    rules_path: str | Path,
    stop: asyncio.Event,
    *,
    config: LearnerConfig | None = None,
) -> None:
    """``arbiter learn``: learn every bandit of the ruleset at ``rules_path`` until ``stop``.

    Raises `dsl.RulesError` if the ruleset does not check.
    """
    checked = dsl.load_checked(rules_path)
    for decl in checked.bandits.values():
        exploration_of(decl)  # fail fast, before connecting
    # A learner is not on the decision path: give Redis time rather than fail.
    client = connect(redis_url, socket_timeout=5.0)
    try:
        runs = [run_learners(client, checked.name, checked.bandits, stop, config=config)]
        await publish_outcome_types(client, tracked_types(checked))
        if outcome_types(checked.bandits.values()):
            # Rewards from events: every `arbiter learn` (and in-process server) shares the work.
            runs.append(Attributor(client).run_forever(stop))
        await asyncio.gather(*runs)
    finally:
        await client.aclose()

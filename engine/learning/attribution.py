"""Rewards from events: `reward EVENT [within DURATION] [value PROPERTY]` honoured.

A bandit declared with ``reward purchase within 7d value amount`` is rewarded
by the customer's own ``purchase`` events, without the site calling
``POST /v1/feedback``. Three pieces:

1. **Exposures.** When a decision in which such a bandit chose an arm, and
   returned it, is logged (`engine.log.writer`), an :class:`Exposure` is
   opened: a member of the customer's sorted set ``keys.exposures(customer)``
   (score = the end of the window; one hash slot with the customer's other
   keys) and of the global ``keys.EXPOSURES_DUE`` index.
2. **Events.** Ingestion (HTTP, ``arbiter ingest``) appends each new event of
   a rewarded type to ``keys.OUTCOME_STREAM``. :class:`Attributor` reads it
   through one consumer group shared by every worker and machine (each event
   is handled by one of them; a dead reader's entries are claimed by another).
3. **Windows that close.** :class:`Attributor` also takes exposures whose
   window has ended from ``keys.EXPOSURES_DUE`` and rewards them 0, so sites
   need not send "shown, not clicked".

The attribution rule:

- An event of type E at time t rewards **every open exposure** of that
  customer whose bandit is rewarded on E and whose decision was made at or
  before t, within the window (decision time <= t <= decision time +
  window). Not last touch: each decision is a separate bandit example, and
  telling an earlier decision it failed because a later one was credited would
  teach the model a falsehood.
- **Once per decision.** The first qualifying event closes an exposure;
  later events in its window do not reward it again. Every reward goes
  through the one script of `engine.learning.reward_writer`, which checks the
  decision's "already rewarded" marker (``keys.feedback_seen``) and appends
  the reward in one step: of concurrent events, the window's end, explicit
  feedback and two workers, exactly one appends.
- **The reward** is the event's ``value`` property (a number), or 1 without
  ``value``. An event that lacks the property, or has a non-numeric one,
  rewards nothing and leaves the exposure open.
- **Timing.** An event is attributed as soon as an attributor reads it, and
  once more ``grace`` seconds after it arrived: the decision log writes
  behind the response, so a decision's exposure may be stored a few
  milliseconds after an event that follows it. A window is closed ``grace``
  seconds after it ends; if by then the customer's newest event of the type
  (its last-seen time, ``windows.last_seen_of``) is inside the window, no attributor matched it (it
  was behind, or the exposure was stored after both passes): a reward
  without ``value`` is then 1 at once; one with ``value`` waits for the
  attributors, up to ``max_defer`` seconds after a closer first found it
  waiting (not after the window: after a downtime, windows long past are
  closed while the attributors catch up on the events), then is 0.
- **Exactly once, through crashes.** The reward is appended first, atomically
  with its marker; only then is the exposure removed from the customer's key
  and the due index. A process that dies in between leaves the exposure
  open: whoever next meets it (an event, or the window's end) finds the
  marker and only tidies up. A worker closing windows claims them with a
  lease (their due time moved ``lease`` seconds on), not by removing them, so
  windows claimed by a worker that died come due again. Outcome events a
  dead worker read are claimed by another after ``claim_idle_ms``.
- **Redis Cluster.** The marker and the reward stream share a hash tag, so
  the check-and-append is one script in one slot. The exposure keys live in
  their customers' slots and are not part of it: removing an exposure is
  tidying, never the claim. (A customer erased while their window is being
  closed may still get that one reward; the decision is theirs, and its
  reward says nothing about them.)
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import os
import socket
import time
import uuid
from collections.abc import Awaitable, Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Any, Final, cast

import msgspec
from redis.exceptions import RedisError

from arbiter.dsl import nodes as n
from arbiter.dsl.checked import CheckedRuleset
from arbiter.engine.learning.reward_stream import RewardGroup, StreamEntry
from arbiter.engine.learning.reward_writer import Reward, append_rewards
from arbiter.engine.store import keys, windows
from arbiter.engine.store.client import AsyncRedisClient

__all__ = [
    "DEFAULT_WINDOW_SECONDS",
    "Attributor",
    "AttributorStats",
    "Exposure",
    "exposure_commands",
    "exposures_of",
    "outcome_types",
    "tracked_types",
    "write_exposures",
]

log = logging.getLogger(__name__)

#: The window of ``reward EVENT`` without ``within``.
DEFAULT_WINDOW_SECONDS: Final = 86_400.0
GROUP: Final = "attribution"

# KEYS: the due index. ARGV: due before, count, lease end. Claims due windows by
# moving them a lease into the future, so a worker that dies holding some does
# not lose them: they come due again when the lease ends.
_CLAIM_DUE_LUA: Final = """
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, ARGV[2])
for _, member in ipairs(due) do
  redis.call('ZADD', KEYS[1], 'XX', ARGV[3], member)
end
return due
"""


class Exposure(msgspec.Struct, frozen=True, array_like=True):
    """One decision's bandit arm shown to a customer, waiting for its reward event."""

    customer_id: str
    decision_id: str
    ruleset: str
    bandit: str
    action: str
    event: str
    ts: float
    deadline: float
    value: str | None = None


_ENCODE = msgspec.json.Encoder().encode
_DECODE = msgspec.json.Decoder(Exposure).decode


def exposures_of(
    bandits: dict[str, n.BanditDecl],
    record: Any,
) -> list[Exposure]:
    """The exposures a logged decision opens: each rewarded bandit's arm that it returned.

    ``bandits`` are the checked declarations of the record's ruleset;
    ``record`` a `DecisionRecord`.
    """
    out: list[Exposure] = []
    returned = {a.action for a in record.actions}
    for choice in record.bandits:
        decl = bandits.get(choice.bandit)
        if decl is None or decl.reward is None or choice.chosen not in returned:
            continue
        within = decl.reward_within or DEFAULT_WINDOW_SECONDS
        out.append(
            Exposure(
                record.request.customer_id,
                record.decision_id,
                record.ruleset.name,
                choice.bandit,
                choice.chosen,
                decl.reward,
                record.ts,
                record.ts + within,
                decl.reward_value,
            )
        )
    return out


def outcome_types(bandits: Iterable[n.BanditDecl]) -> set[str]:
    """The event types that reward some bandit (they go to the outcome stream)."""
    return {d.reward for d in bandits if d.reward is not None}


def tracked_types(checked: CheckedRuleset) -> set[str]:
    """Every event type a ruleset rewards a bandit on or measures a split by (its `goal`)."""
    out = outcome_types(checked.bandits.values())
    splits: list[n.HoldoutDecl | n.ExperimentDecl] = list(checked.experiments.values())
    if checked.holdout is not None:
        splits.append(checked.holdout)
    out |= {s.goal.event for s in splits if s.goal is not None}
    return out


def write_exposures(pipe: Any, exposures: Iterable[Exposure], key_ttl: int) -> None:
    """Queue the writes that open ``exposures`` on a (non-transactional) pipeline.

    Idempotent: a retried batch writes the same members again.
    """
    for command in exposure_commands(exposures, key_ttl):
        pipe.execute_command(*command)


def exposure_commands(exposures: Iterable[Exposure], key_ttl: int) -> list[tuple[Any, ...]]:
    """The plain Redis commands that open ``exposures`` (what `write_exposures` queues)."""
    out: list[tuple[Any, ...]] = []
    for exp in exposures:
        member = _ENCODE(exp)
        key = keys.exposures(exp.customer_id)
        out.append(("ZADD", key, exp.deadline, member))
        # The key outlives its last window by the decision TTL, then goes on its own.
        out.append(("EXPIRE", key, int(max(0.0, exp.deadline - exp.ts)) + key_ttl))
        out.append(("ZADD", keys.EXPOSURES_DUE, exp.deadline, member))
    return out


@dataclass(slots=True)
class AttributorStats:
    """Counters since the attributor was created."""

    events: int = 0  # outcome-stream entries handled
    rewarded: int = 0  # exposures rewarded by an event
    closed: int = 0  # exposures whose window ended: rewarded 0
    duplicate: int = 0  # already rewarded (explicit feedback, or a worker that died after)
    no_value: int = 0  # an event without a numeric `value` property for a matching exposure
    deferred: int = 0  # window ended with an event in it not yet attributed: checked again later
    invalid: int = 0  # malformed stream entries or exposures


@dataclass(frozen=True, slots=True)
class _Event:
    customer_id: str
    type: str
    ts: float
    properties: dict[str, Any]


def _parse_event(fields: dict[bytes, bytes] | None) -> _Event | None:
    if not fields:
        return None
    try:
        props = json.loads(fields.get(b"properties", b"{}"))
        ts = float(fields[b"ts"])
        event = _Event(fields[b"customer_id"].decode(), fields[b"type"].decode(), ts, props)
    except (KeyError, ValueError, UnicodeDecodeError):
        return None
    if not isinstance(props, dict) or not math.isfinite(ts):
        return None
    return event


def _arrival_ms(entry_id: bytes | str) -> int:
    raw = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
    return int(raw.split("-")[0])


def _reward_of(exp: Exposure, event: _Event) -> float | None:
    if exp.value is None:
        return 1.0
    value = event.properties.get(exp.value)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return float(value)


class Attributor:
    """Attributes outcome events to open exposures and closes expired windows; see the module.

    Every worker may run one (`run_forever`); they share a consumer group on
    the outcome stream and split the due windows between them. ``clock`` is
    the wall clock (epoch seconds) used to close windows; tests inject one.
    """

    def __init__(
        self,
        redis: AsyncRedisClient,
        *,
        grace: float = 1.0,
        marker_ttl: int = 7 * 86400,
        reward_maxlen: int = 1_000_000,
        batch: int = 200,
        poll_interval: float = 0.1,
        claim_idle_ms: int = 30_000,
        max_defer: float = 30.0,
        lease: float = 30.0,
        clock: Any = time.time,
        consumer: str | None = None,
    ) -> None:
        """An attributor; it does no I/O until run."""
        self.redis = redis
        self.grace = grace
        self.marker_ttl = marker_ttl
        self.reward_maxlen = reward_maxlen
        self.batch = batch
        self.poll_interval = poll_interval
        self.max_defer = max_defer
        self.lease = lease
        self.stats = AttributorStats()
        self._clock = clock
        token = uuid.uuid4().hex[:8]
        self.consumer = consumer or f"{socket.gethostname()}:{os.getpid()}:{token}"
        self._group = RewardGroup(
            redis,
            GROUP,
            self.consumer,
            batch=batch,
            claim_idle_ms=claim_idle_ms,
            claim_every=claim_idle_ms / 1000.0,
            stream=keys.OUTCOME_STREAM,
        )
        self._claim_due = redis.register_script(_CLAIM_DUE_LUA)
        self._created = False
        self._held: list[StreamEntry] = []  # read, not yet `grace` old

    # --- events -------------------------------------------------------------------

    async def attribute_once(self) -> int:
        """Attribute new outcome events now, and once more ``grace`` after they arrived.

        The first pass rewards what is already open, so a reward is not kept
        waiting; the second catches the exposures of decisions that were made
        before the event but written by the decision log after the first pass
        (closing is idempotent, so an exposure is never rewarded twice). Entries
        are acknowledged after the second pass. Returns how many entries were
        handled in either pass.
        """
        if not self._created:
            await self._group.create()
            self._created = True
        fresh: list[StreamEntry] = []
        if len(self._held) < 10 * self.batch:
            held_ids = {e[0] for e in self._held}
            fresh = await self._group.read(held_ids)
            if fresh:
                await self._attribute(fresh, first=True)
                self._held.extend(fresh)
                self._held.sort(key=lambda e: _arrival_ms(e[0]))  # claimed ones may be older
        # Stream ids are arrival times in ms: the entries are in order of arrival.
        ripe_before = (time.time() - self.grace) * 1000.0
        ripe = 0
        while ripe < len(self._held) and _arrival_ms(self._held[ripe][0]) <= ripe_before:
            ripe += 1
        if ripe:
            entries, self._held = self._held[:ripe], self._held[ripe:]
            await self._attribute(entries, first=False)
            await self.redis.xack(keys.OUTCOME_STREAM, GROUP, *(e[0] for e in entries))
        return len(fresh) + ripe

    async def _attribute(self, entries: Sequence[StreamEntry], *, first: bool) -> None:
        events: list[_Event] = []
        for _, fields in entries:
            event = _parse_event(fields)
            if event is None:
                self.stats.invalid += first
            else:
                events.append(event)
        if first:
            self.stats.events += len(events)
        if not events:
            return
        pipe = self.redis.pipeline(transaction=False)
        for event in events:
            pipe.zrangebyscore(keys.exposures(event.customer_id), event.ts, "+inf")
        replies = await pipe.execute()
        matched: list[tuple[bytes, Exposure, float, float]] = []
        seen: set[bytes] = set()
        for event, members in zip(events, replies, strict=True):
            for member in members:
                if member in seen:
                    continue  # an earlier event of this batch takes it
                try:
                    exp = _DECODE(member)
                except msgspec.DecodeError:
                    self.stats.invalid += 1
                    continue
                if exp.event != event.type or exp.ts > event.ts:
                    continue
                reward = _reward_of(exp, event)
                if reward is None:
                    self.stats.no_value += first
                    continue
                seen.add(member)
                matched.append((member, exp, reward, event.ts))
        if matched:
            rewarded = await self._settle(matched, "event")
            self.stats.rewarded += rewarded

    # --- closing windows --------------------------------------------------------

    async def close_due(self) -> int:
        """Reward 0 every exposure whose window ended ``grace`` ago (one batch); how many."""
        now = float(self._clock())
        # Claim with a lease, so that two closers split the work and a dead one loses none.
        due: list[bytes] = await cast(
            Awaitable[Any],
            self._claim_due(
                keys=[keys.EXPOSURES_DUE], args=[now - self.grace, self.batch, now + self.lease]
            ),
        )
        if not due:
            return 0
        exposures: list[tuple[bytes, Exposure]] = []
        invalid: list[bytes] = []
        for member in due:
            try:
                exposures.append((member, _DECODE(member)))
            except msgspec.DecodeError:
                invalid.append(member)
        if invalid:
            self.stats.invalid += len(invalid)
            await self.redis.zrem(keys.EXPOSURES_DUE, *invalid)
        if not exposures:
            return len(due)
        pipe = self.redis.pipeline(transaction=False)
        for member, exp in exposures:
            pipe.zscore(keys.exposures(exp.customer_id), member)
            pipe.hget(keys.windows(exp.customer_id), windows.LAST_SEEN_FIELD)
        pipe.hmget(keys.EXPOSURES_DEFERRED, [member for member, _ in exposures])
        replies = await pipe.execute()
        since = replies.pop()
        settle: list[tuple[bytes, Exposure, float, float]] = []
        found: list[tuple[bytes, Exposure, float, float]] = []
        defer: dict[bytes, float] = {}
        gone: list[tuple[bytes, Exposure]] = []
        for i, (member, exp) in enumerate(exposures):
            is_open, last = replies[2 * i], windows.last_seen_of(replies[2 * i + 1], exp.event)
            waiting_since = now if since[i] is None else float(since[i])
            if is_open is None:
                # Rewarded already (its process died before tidying up), or erased.
                gone.append((member, exp))
                continue
            # An event in the window that no attributor has handled yet (they are behind):
            # wait for it rather than reward 0, up to `max_defer` after first finding it.
            pending = last is not None and exp.ts <= last <= exp.deadline
            if pending and exp.value is None:
                # The customer's newest such event is in the window: worth 1, whoever
                # handles it (the exposure was stored after the attributors' passes).
                assert last is not None
                found.append((member, exp, 1.0, last))
            elif pending and now < waiting_since + self.max_defer:
                # Looked at again a grace (at least a poll) later, not at once: a closer
                # must not spin on windows waiting for the attributors.
                defer[member] = now + max(0.0, self.poll_interval - self.grace)
            else:
                settle.append((member, exp, 0.0, exp.deadline))
        if gone:
            await self._close(gone)
        if defer:
            self.stats.deferred += len(defer)
            pipe = self.redis.pipeline(transaction=False)
            pipe.zadd(keys.EXPOSURES_DUE, defer)
            for member in defer:
                pipe.hsetnx(keys.EXPOSURES_DEFERRED, member, repr(now))
            await pipe.execute()
        if found:
            self.stats.rewarded += await self._settle(found, "event")
        closed = await self._settle(settle, "window") if settle else 0
        self.stats.closed += closed
        return len(due)

    # --- the one place a reward is given -----------------------------------------

    async def _settle(
        self, items: Sequence[tuple[bytes, Exposure, float, float]], source: str
    ) -> int:
        """Append each exposure's reward unless its decision has one, then close it; how many.

        The append (`reward_writer.append_rewards`) is the claim: it checks
        and sets the decision's marker in the script that appends, so of two
        events, an event and the window's end, two workers, or explicit
        feedback, exactly one reward is appended. Closing the exposures comes
        after: a crash in between leaves them open, to be found rewarded.
        """
        outcomes = await append_rewards(
            self.redis,
            [
                Reward(exp.decision_id, exp.action, reward, ts, source)
                for _, exp, reward, ts in items
            ],
            marker_ttl_s=self.marker_ttl,
            stream_maxlen=self.reward_maxlen,
        )
        await self._close([(member, exp) for member, exp, _, _ in items])
        rewarded = sum(o.appended for o in outcomes)
        self.stats.duplicate += len(outcomes) - rewarded
        return rewarded

    async def _close(self, items: Sequence[tuple[bytes, Exposure]]) -> None:
        """Remove exposures from their customers' keys and the due index (idempotent)."""
        pipe = self.redis.pipeline(transaction=False)
        for member, exp in items:
            pipe.zrem(keys.exposures(exp.customer_id), member)
        members = [member for member, _ in items]
        pipe.zrem(keys.EXPOSURES_DUE, *members)
        pipe.hdel(keys.EXPOSURES_DEFERRED, *members)
        await pipe.execute()

    # --- driving ----------------------------------------------------------------

    async def run_once(self) -> AttributorStats:
        """Attribute every event available now and close every due window (tests, tools)."""
        while await self.attribute_once():
            pass
        while await self.close_due() >= self.batch:
            pass
        return replace(self.stats)

    async def run_forever(self, stop: asyncio.Event) -> None:
        """Attribute and close windows until ``stop`` is set; Redis errors are logged and retried."""
        while not stop.is_set():
            busy = 0
            try:
                busy = await self.attribute_once()
                busy += await self.close_due()
            except (RedisError, OSError) as exc:
                log.warning("attributor: %s", exc)
            if busy:
                await asyncio.sleep(0)
                continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=self.poll_interval)


async def publish_outcome_types(redis: AsyncRedisClient, types: Iterable[str]) -> None:
    """Remember event types rulesets reward or measure, for ingesters without the rules."""
    names = sorted(set(types))
    if names:
        await cast(Awaitable[Any], redis.sadd(keys.OUTCOME_TYPES, *names))


async def known_outcome_types(redis: AsyncRedisClient) -> set[str]:
    """The event types servers have published with `publish_outcome_types`."""
    raw = await cast(Awaitable[Any], redis.smembers(keys.OUTCOME_TYPES))
    return {m.decode() if isinstance(m, bytes) else str(m) for m in raw}

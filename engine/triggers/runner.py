"""Firing triggers: due firings claimed, decided in their channel, published once.

Every server worker runs a :class:`TriggerRunner`. Each pass:

1. **Claim** (one Lua script per schedule shard, on that shard's slot, all
   in one pipelined round trip): move up to ``batch`` due firings from
   ``keys.triggers_due(shard)`` to ``keys.triggers_inflight(shard)`` with a
   lease (score = lease end), together with in-flight firings whose lease
   ran out (their runner died). Two runners never hold one firing at once.
2. **Check**: the firing is still in the customer's schedule (erasure
   removes it: nothing is sent to an erased customer), and, for ``unless
   EVENT``, the customer has no such event since the triggering one
   (its last-seen time, ``windows.last_seen_of``).
3. **Decide** in the trigger's channel (``context.channel``) with the live
   plan: rules, consent, caps, fatigue and holdout all apply exactly as for
   ``POST /v1/decide``. The decision id is derived from the firing, and a
   decision already logged under it is reused, so a firing retried after a
   crash makes no second decision (and counts no second contact). The
   decision is logged like any other (replay sees it; its request carries
   the channel).
4. **Publish** (one Lua script on the stream's slot): if the firing's
   marker is absent, set it and append the decision to
   ``keys.TRIGGER_STREAM``. Then remove the firing from in-flight (its
   shard's slot). A decision with no action publishes nothing.

So every due firing is published at most once (the marker) and at least
once while Redis keeps it (the lease hands a dead runner's firings to
another; a runner that dies between publishing and removing leaves the
firing to be claimed again, and the retry finds its decision logged and its
marker set).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any, Final, Protocol, cast

import msgspec
from redis.exceptions import RedisError

from arbiter.engine.decision.decide import decide
from arbiter.engine.decision.oracle import LiveOracle
from arbiter.engine.log.writer import DecisionLog
from arbiter.engine.plan import Plan
from arbiter.engine.records import RECORD_DECODER, DecideRequest, DecisionRecord
from arbiter.engine.store import keys, windows
from arbiter.engine.store.compression import plain_record
from arbiter.engine.store.profiles import ProfileStore
from arbiter.engine.store.scripts import eval_pipelined, script_sha
from arbiter.engine.triggers.schedule import Firing, decode_firing, shard_of
from arbiter.engine.validate import ValueProblem, normalize_all

__all__ = ["TriggerRunner", "TriggerStats"]

log = logging.getLogger(__name__)

_CLAIM_LUA: Final = """
local out = {}
local expired = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', ARGV[1], 'LIMIT', 0, ARGV[3])
for _, m in ipairs(expired) do
  redis.call('ZADD', KEYS[2], ARGV[2], m)
  table.insert(out, m)
end
local room = tonumber(ARGV[3]) - #out
if room > 0 then
  local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, room)
  for _, m in ipairs(due) do
    redis.call('ZREM', KEYS[1], m)
    redis.call('ZADD', KEYS[2], ARGV[2], m)
    table.insert(out, m)
  end
end
return out
"""

_CLAIM_SHA: Final = script_sha(_CLAIM_LUA)

# KEYS: outbound stream, marker (one slot: the `{triggers}` tag). ARGV: maxlen,
# marker ttl, then the entry's field/value pairs.
_PUBLISH_LUA: Final = """
if redis.call('SET', KEYS[2], '1', 'NX', 'EX', ARGV[2]) then
  redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*', unpack(ARGV, 3))
  return 1
end
return 0
"""


class LiveRulesetLike(Protocol):
    """What the runner needs of a live ruleset (`server.rulesets.LiveRuleset` is one)."""

    @property
    def plan(self) -> Plan: ...

    @property
    def models(self) -> Mapping[str, Any]: ...

    @property
    def bandits(self) -> Mapping[str, Any]: ...


@dataclass(slots=True)
class TriggerStats:
    """Counters since the runner was created."""

    claimed: int = 0
    published: int = 0
    no_action: int = 0  # decided, nothing to send (caps, consent, holdout, no rule)
    cancelled: int = 0  # the `unless` event happened since
    erased: int = 0  # no longer in the customer's schedule (erased)
    gone: int = 0  # the ruleset or trigger is no longer live
    duplicate: int = 0  # already published (a retry after a crash)
    invalid: int = 0
    #: Due -> published, seconds, of each firing published by this runner.
    delays: list[float] | None = None


class TriggerRunner:
    """Fires due triggers; see the module docstring. ``clock`` is epoch seconds."""

    def __init__(
        self,
        redis: Any,
        store: ProfileStore,
        decision_log: DecisionLog,
        resolve: Callable[[str], LiveRulesetLike | None],
        *,
        lease_seconds: float = 30.0,
        batch: int = 50,
        poll_interval: float = 0.1,
        marker_ttl: int = 7 * 86400,
        stream_maxlen: int = 1_000_000,
        clock: Callable[[], float] = time.time,
        new_id: Callable[[Firing], str] | None = None,
        active: Callable[[], bool] = lambda: True,
        idle_interval: float = 5.0,
        shards: int = 1,
    ) -> None:
        """A runner over ``shards`` schedule shards (`schedule_triggers`' count); no I/O
        until run.

        While ``active()`` is false (no live ruleset declares a trigger) it
        polls only every ``idle_interval`` seconds, to drop stale firings.
        """
        self.redis = redis
        self.store = store
        self.log = decision_log
        self.resolve = resolve
        self.lease_seconds = lease_seconds
        self.batch = batch
        self.poll_interval = poll_interval
        self.marker_ttl = marker_ttl
        self.stream_maxlen = stream_maxlen
        self.stats = TriggerStats(delays=[])
        self._clock = clock
        self._new_id = new_id or (lambda f: f"t{f.id}")
        self._active = active
        self.idle_interval = idle_interval
        self.shards = shards
        self._publish = redis.register_script(_PUBLISH_LUA)

    async def claim(self) -> list[bytes]:
        """Claim up to ``batch`` due (or abandoned) firings of each shard under a lease."""
        now = float(self._clock())
        args = [repr(now), repr(now + self.lease_seconds), self.batch]
        calls = [
            ([keys.triggers_due(k), keys.triggers_inflight(k)], args) for k in range(self.shards)
        ]
        replies = await eval_pipelined(self.redis, _CLAIM_LUA, _CLAIM_SHA, calls)
        members = [m for reply in replies for m in reply]
        self.stats.claimed += len(members)
        return members

    async def run_once(self) -> int:
        """Claim one batch and fire it; how many were claimed."""
        members = await self.claim()
        # Concurrently: their decisions then share the decision log's write batches.
        await asyncio.gather(*(self.fire(member) for member in members))
        return len(members)

    async def fire(self, member: bytes) -> None:
        """Check, decide and publish one claimed firing (see the module docstring)."""
        try:
            firing = decode_firing(member)
        except msgspec.DecodeError:
            self.stats.invalid += 1
            await self._done(member, None)
            return
        live = self.resolve(firing.ruleset)
        decl = live.plan.checked.triggers.get(firing.trigger) if live is not None else None
        if live is None or decl is None:
            self.stats.gone += 1
            await self._done(member, firing)
            return
        pipe = self.redis.pipeline(transaction=False)
        pipe.zscore(keys.triggers(firing.customer_id), member)
        if decl.unless is not None:
            pipe.hget(keys.windows(firing.customer_id), windows.LAST_SEEN_FIELD)
        replies = await pipe.execute()
        if replies[0] is None:
            self.stats.erased += 1
            await self._done(member, firing)
            return
        since = windows.last_seen_of(replies[1], decl.unless) if decl.unless is not None else None
        if since is not None and since >= firing.event_ts:
            self.stats.cancelled += 1
            await self._done(member, firing)
            return
        record = await self._decide(live, firing, decl.channel)
        if record is None or not record.actions:
            self.stats.no_action += 1
            await self._done(member, firing)
            return
        fields = {
            "decision_id": record.decision_id,
            "trigger": firing.trigger,
            "ruleset": firing.ruleset,
            "customer_id": firing.customer_id,
            "channel": decl.channel,
            "actions": json.dumps(
                [{"action": a.action, "payload": a.payload} for a in record.actions]
            ),
            "event_ts": repr(firing.event_ts),
            "due": repr(firing.due),
        }
        published = await self._done(member, firing, fields)
        if published:
            self.stats.published += 1
            assert self.stats.delays is not None
            self.stats.delays.append(float(self._clock()) - firing.due)
        else:
            self.stats.duplicate += 1

    async def _decide(
        self, live: LiveRulesetLike, firing: Firing, channel: str
    ) -> DecisionRecord | None:
        """The firing's decision: the one logged under its id, or a new one (logged now)."""
        decision_id = self._new_id(firing)
        raw = await plain_record(self.redis, await self.redis.get(keys.decision(decision_id)))
        if raw is not None:
            return RECORD_DECODER.decode(raw)
        plan = live.plan
        try:
            context = normalize_all(plan.checked.context, {"channel": channel}, "context.")
        except ValueProblem as exc:
            log.warning("trigger %s/%s: %s", firing.ruleset, firing.trigger, exc)
            self.stats.invalid += 1
            return None
        now = float(self._clock())
        inputs = await self.store.fetch(firing.customer_id, plan.needs, now)
        request = DecideRequest(firing.customer_id, context, ruleset=firing.ruleset)
        oracle = LiveOracle(dict(live.models), dict(live.bandits))
        decision, record = decide(
            plan, request, inputs, decision_id=decision_id, now=now, oracle=oracle
        )
        contacts = []
        for out in decision.actions:
            spec = plan.action(out.action)
            if spec.cap is not None:
                contacts.append((spec.name, spec.cap.window_seconds))
        self.log.submit(record, contacts)
        # Stored before publishing: a retry finds it and neither decides nor counts again.
        await self.log.flush_through(decision_id)
        return record

    async def _done(
        self, member: bytes, firing: Firing | None, fields: dict[str, str] | None = None
    ) -> bool:
        """Publish (if ``fields``) and finish a firing; whether it was published now.

        Publishing comes first: a crash before the firing leaves in-flight makes
        it come back after its lease, to find itself published.
        """
        published = 0
        if fields and firing is not None:
            pairs = [x for kv in fields.items() for x in kv]
            published = await cast(
                Awaitable[Any],
                self._publish(
                    keys=[keys.TRIGGER_STREAM, keys.trigger_fired(firing.id)],
                    args=[self.stream_maxlen, self.marker_ttl, *pairs],
                ),
            )
        pipe = self.redis.pipeline(transaction=False)
        # An undecodable member's shard is unknown: it is removed from every one.
        shards = range(self.shards) if firing is None else [shard_of(firing.id, self.shards)]
        for k in shards:
            pipe.zrem(keys.triggers_inflight(k), member)
        if firing is not None:
            pipe.zrem(keys.triggers(firing.customer_id), member)
        await pipe.execute()
        return bool(int(published))

    def snapshot(self) -> TriggerStats:
        """A copy of the counters."""
        return replace(self.stats, delays=list(self.stats.delays or []))

    async def run_forever(self, stop: asyncio.Event) -> None:
        """Fire due triggers until ``stop`` is set; errors are logged and the pass retried
        (claimed firings come back when their lease ends)."""
        if not self._active():
            # Nothing declares a trigger: no Redis traffic at start, only the idle sweep.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=self.idle_interval)
        while not stop.is_set():
            claimed = 0
            try:
                claimed = await self.run_once()
            except (RedisError, OSError) as exc:
                log.warning("trigger runner: %s", exc)
            except Exception:
                log.exception("trigger runner: unexpected error")
            if claimed:
                continue
            wait = self.poll_interval if self._active() else self.idle_interval
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=wait)

"""Identity stitching: link an anonymous id to a customer and merge its history in.

`Identities.identify(anonymous_id, customer_id)` links the two ids and adds
everything held on the anonymous id into the customer's keys. From then on,
every read and write for the anonymous id lands on the customer.

Where the link lives. `keys.alias(anonymous)` holds the customer id, in the
anonymous id's own slot. Every script that reads or writes one id's keys
(the decision's read, event ingestion, the after-decision write) is wrapped
by `guarded`: it also receives that id's alias key and, when it is set,
returns `[b"@alias", customer]` without doing anything. The caller then sends
the same call for the customer. So an ordinary id costs nothing more (a GET
inside a script already running), and an aliased id one more round trip.
Links are one level deep: a customer cannot be linked to anyone (409), so
one redirect always reaches the customer.

The merge, in steps each safe to repeat (the ids live in different slots on
Redis Cluster, so no single script can move the data):

1. reserve, in the customer's slot: refuse if the customer is itself
   linked, then add the anonymous id to the customer's linked ids;
2. link, in the anonymous slot: refuse (409) if linked to another customer
   or if the anonymous id has linked ids of its own, else set the alias; from
   here on no write reaches the anonymous keys;
3. read every anonymous key that may hold data, in one pipeline;
4. add each into the customer's same-named key, one script per key in the
   customer's slot: windows by `engine.store.merge` (marked, so a key is
   counted once however often this is retried), caps, rejections and event
   ids as set unions, the decision index as a marked append, the profile by
   the rule below;
5. delete the anonymous keys that were added.

A merge interrupted anywhere is completed by calling `identify` again with
the same ids (the stream consumer does so by itself: it acknowledges an
identify message only after the merge). Until then decisions for either id
already read the customer, without the part not yet merged.

Profile attributes: the customer's values win; attributes only the
anonymous id has are copied. Consent (`consents`) is never widened: the
customer keeps their own set, narrowed to the anonymous id's set when the
anonymous id has one (a withdrawal made anonymously still holds); consents
given while anonymous are never copied to a customer who has not given them.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from arbiter.dsl.errors import ArbiterError
from arbiter.engine.store import contact_history, keys, merge

ALIAS_MARK = b"@alias"

# Prepended to a script whose KEYS are one id's keys followed by that id's alias key.
GUARD_LUA = """
local __alias = redis.call('GET', KEYS[#KEYS])
if __alias then return {'@alias', __alias} end
KEYS[#KEYS] = nil
"""

RESERVE_LUA = """
-- KEYS: the customer's alias key, the customer's linked-ids set. ARGV: anonymous id
local up = redis.call('GET', KEYS[1])
if up then return 'customer-linked' end
redis.call('SADD', KEYS[2], ARGV[1])
return 'ok'
"""

LINK_LUA = """
-- KEYS: the anonymous id's alias key, its linked-ids set. ARGV: customer id
local cur = redis.call('GET', KEYS[1])
if cur and cur ~= ARGV[1] then return 'linked-elsewhere' end
if redis.call('SCARD', KEYS[2]) > 0 then return 'has-links' end
if cur then return 'already' end
redis.call('SET', KEYS[1], ARGV[1])
return 'linked'
"""

ABSORB_LUA = (
    """
-- KEYS[1] the customer's key, KEYS[2] the customer's mark set for this anonymous id
-- ARGV: kind ('profile' | 'history' | 'list'), mark, source expiry (ms epoch, -1 none),
--       now (ms), then pairs (profile: name, json; history: field, records) or list items
local kind, mark, expire_at, now_ms = ARGV[1], ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4])
"""
    + merge.LUA_KEEP_LATER_EXPIRY
    + """if kind == 'profile' then
  for i = 5, #ARGV, 2 do
    local name, v = ARGV[i], ARGV[i + 1]
    if name == 'consents' then
      -- Never widened: kept only if the customer has it too (intersection).
      local mine = redis.call('HGET', KEYS[1], 'consents')
      if mine then
        local ok_a, a = pcall(cjson.decode, mine)
        local ok_b, b = pcall(cjson.decode, v)
        local allowed = {}
        if ok_b and type(b) == 'table' then
          for _, x in ipairs(b) do allowed[x] = true end
        end
        local kept = {}
        if ok_a and type(a) == 'table' then
          for _, x in ipairs(a) do if allowed[x] then kept[#kept + 1] = x end end
        end
        local out = '[]'
        if #kept > 0 then out = cjson.encode(kept) end
        redis.call('HSET', KEYS[1], 'consents', out)
      end
    else
      redis.call('HSETNX', KEYS[1], name, v)
    end
  end
elseif kind == 'history' then
  -- Records added by id (a union: a record both ids hold, or a retry, counts once).
  for i = 5, #ARGV, 2 do
    local cur = redis.call('HGET', KEYS[1], ARGV[i]) or ''
    local have, add = {}, {}
    for p = 1, #cur - 15, 16 do have[string.sub(cur, p + 8, p + 15)] = true end
    local src = ARGV[i + 1]
    for p = 1, #src - 15, 16 do
      local id = string.sub(src, p + 8, p + 15)
      if not have[id] then have[id] = true; add[#add + 1] = string.sub(src, p, p + 15) end
    end
    if #add > 0 then redis.call('HSET', KEYS[1], ARGV[i], cur .. table.concat(add)) end
  end
elseif kind == 'list' then
  if redis.call('SISMEMBER', KEYS[2], mark) == 1 then return 0 end
  redis.call('RPUSH', KEYS[1], unpack(ARGV, 5))
  redis.call('SADD', KEYS[2], mark)
  if expire_at < 0 then redis.call('PERSIST', KEYS[2]) else later(2, expire_at + 86400000) end
else
  return redis.error_reply('unknown absorb kind ' .. kind)
end
if expire_at >= 0 then later(1, expire_at) end
return 1
"""
)


def guarded(script: str) -> str:
    """`script` made alias-aware: call it with the id's alias key appended to KEYS."""
    return GUARD_LUA + script


def redirect_of(reply: Any) -> str | None:
    """The customer id a guarded script redirected to, or None if it ran."""
    if type(reply) is list and len(reply) == 2 and reply[0] == ALIAS_MARK:
        target: bytes = reply[1]
        return target.decode()
    return None


class IdentityConflict(ArbiterError):
    """The ids cannot be linked as asked (HTTP 409)."""

    code = "identity-conflict"


class InvalidIdentify(ArbiterError):
    """An identify request that can never succeed (HTTP 422)."""

    code = "invalid-identify"


@dataclass
class MergeReport:
    """What one `identify` did."""

    anonymous_id: str
    customer_id: str
    newly_linked: bool
    keys_merged: int = 0
    merged: list[str] = field(default_factory=list)  # key kinds, for people


class Identities:
    """Links anonymous ids to customers in Redis (or Redis Cluster) and merges their history."""

    def __init__(self, redis: Any) -> None:
        """`redis`: an asyncio Redis or RedisCluster client (bytes replies)."""
        self.redis = redis

    async def resolve(self, any_id: str) -> str:
        """The customer id `any_id` is linked to, or `any_id` itself (one GET)."""
        target = await self.redis.get(keys.alias(any_id))
        return any_id if target is None else str(target.decode())

    async def linked(self, customer_id: str) -> list[str]:
        """The anonymous ids linked to a customer (those whose link points back to it)."""
        members = sorted(
            m.decode() for m in await self.redis.smembers(keys.linked_ids(customer_id))
        )
        if not members:
            return []
        pipe = self.redis.pipeline(transaction=False)
        for anonymous_id in members:
            pipe.get(keys.alias(anonymous_id))
        targets = await pipe.execute()
        return [a for a, t in zip(members, targets, strict=True) if t == customer_id.encode()]

    async def identify(
        self, anonymous_id: str, customer_id: str, actions: Iterable[str], now: float
    ) -> MergeReport:
        """Link `anonymous_id` to `customer_id` and merge its history in; idempotent.

        `actions` names the actions whose caps and rejections are merged (the
        live rulesets' actions). Raises `IdentityConflict` when either id is
        linked in a way that forbids it, `InvalidIdentify` for equal ids.
        """
        if anonymous_id == customer_id:
            raise InvalidIdentify("anonymous_id and customer_id are the same id")
        if await self._reserve(anonymous_id, customer_id) == b"customer-linked":
            raise IdentityConflict(
                f"'{customer_id}' is itself linked to another customer; identify with that one"
            )
        linked = await self._link(anonymous_id, customer_id)
        if linked in (b"linked-elsewhere", b"has-links"):
            # Not a legitimate member of this customer's links: undo step 1.
            await self.redis.srem(keys.linked_ids(customer_id), anonymous_id)
            if linked == b"has-links":
                raise IdentityConflict(
                    f"'{anonymous_id}' is a customer with linked ids of its own; it cannot be "
                    "linked to another customer"
                )
            raise IdentityConflict(f"'{anonymous_id}' is already linked to another customer")
        report = MergeReport(anonymous_id, customer_id, newly_linked=linked == b"linked")
        await self._merge(report, list(actions), now)
        return report

    # Each step below is one or two round trips and safe to repeat; tests inject
    # faults between them.

    async def _reserve(self, anonymous_id: str, customer_id: str) -> bytes:
        """Step 1, in the customer's slot."""
        reply: bytes = await self.redis.eval(
            RESERVE_LUA, 2, keys.alias(customer_id), keys.linked_ids(customer_id), anonymous_id
        )
        return reply

    async def _link(self, anonymous_id: str, customer_id: str) -> bytes:
        """Step 2, in the anonymous id's slot."""
        reply: bytes = await self.redis.eval(
            LINK_LUA, 2, keys.alias(anonymous_id), keys.linked_ids(anonymous_id), customer_id
        )
        return reply

    def _sources(
        self, anonymous_id: str, actions: Sequence[str], now: float
    ) -> list[tuple[str, str]]:
        out = merge.window_sources(anonymous_id, now)
        out.append((keys.profile(anonymous_id), "profile"))
        out.append((keys.decision_index(anonymous_id), "list"))
        out.append((keys.contact_history(anonymous_id), "history"))
        # Layout 1 of the contact history (a sorted set per counter) not yet converted by
        # `arbiter migrate`: converted on the way in.
        for action in sorted(set(actions)):
            out.append((keys.contacts(anonymous_id, action), "zset"))
            out.append((keys.rejections(anonymous_id, action), "zset"))
        return out

    async def _merge(self, report: MergeReport, actions: Sequence[str], now: float) -> None:
        anonymous_id, customer_id = report.anonymous_id, report.customer_id
        sources = self._sources(anonymous_id, actions, now)
        pipe = self.redis.pipeline(transaction=False)
        for key, kind in sources:
            if kind in merge.KINDS:
                merge.read_source(pipe, key, kind)
            elif kind in ("profile", "history"):
                pipe.hgetall(key)
                pipe.pttl(key)
            elif kind == "zset":
                pipe.zrange(key, 0, -1, withscores=True)
                pipe.pttl(key)
            else:
                pipe.lrange(key, 0, -1)
                pipe.pttl(key)
        replies = await pipe.execute()
        now_ms = int(now * 1000)
        calls: list[tuple[str, list[str], list[Any]]] = []
        found: list[tuple[str, str]] = []
        for i, (key, kind) in enumerate(sources):
            content, pttl = replies[2 * i], int(replies[2 * i + 1])
            if not content:
                continue
            found.append((key, kind))
            if kind in merge.KINDS:
                key_list, args = merge.merge_command(
                    customer_id, anonymous_id, key, kind, content, pttl, now_ms
                )
                calls.append((merge.MERGE_WINDOWS_LUA, key_list, args))
            else:
                key_list, args = _absorb_command(
                    customer_id, anonymous_id, key, kind, content, pttl, now_ms
                )
                calls.append((ABSORB_LUA, key_list, args))
        if not found:
            return
        await self._apply(calls)
        await self._drop_sources([key for key, _ in found])
        report.keys_merged = len(found)
        report.merged = sorted({kind for _, kind in found})

    async def _apply(self, calls: Sequence[tuple[str, list[str], list[Any]]]) -> None:
        """Run the customer-side scripts (each atomic; a retry skips what is marked)."""
        pipe = self.redis.pipeline(transaction=False)
        for script, key_list, args in calls:
            # EVAL through execute_command: routed by its first key on a cluster too.
            pipe.execute_command("EVAL", script, len(key_list), *key_list, *args)
        await pipe.execute()

    async def _drop_sources(self, source_keys: Sequence[str]) -> None:
        """Delete the anonymous keys once added (all in the anonymous id's slot: one DEL)."""
        await self.redis.delete(*source_keys)


def legacy_history_field(key: str, members: Sequence[tuple[bytes, float]]) -> tuple[str, bytes]:
    """(contact-history field, records) of a layout-1 counter's sorted set (member, score)."""
    rest = key.split("}", 1)[1]
    if rest.startswith(keys.LEGACY_CONTACTS):
        field = contact_history.cap_field(rest[len(keys.LEGACY_CONTACTS) :])
    elif rest.startswith(keys.LEGACY_REJECTIONS):
        field = contact_history.rejection_field(rest[len(keys.LEGACY_REJECTIONS) :])
    else:
        raise ValueError(f"{key!r} is not a layout-1 cap or rejection key")
    records = [(float(score), member.decode(errors="replace")) for member, score in members]
    return field, contact_history.encode(records)


def _absorb_command(
    customer_id: str,
    anonymous_id: str,
    source_key: str,
    kind: str,
    content: Any,
    pttl_ms: int,
    now_ms: int,
) -> tuple[list[str], list[Any]]:
    dest = keys.rekey(source_key, anonymous_id, customer_id)
    marks = keys.merge_marks(customer_id, anonymous_id)
    mark = source_key.split("}:", 1)[1]
    expire_at = now_ms + pttl_ms if pttl_ms >= 0 else -1
    if kind in ("profile", "history"):
        data = [x for kv in content.items() for x in kv]
    elif kind == "zset":
        # A layout-1 counter: its records go to the customer's contact history.
        field, records = legacy_history_field(source_key, content)
        dest, kind, data = keys.contact_history(customer_id), "history", [field, records]
    else:
        data = list(content)
    return [dest, marks], [kind, mark, expire_at, now_ms, *data]

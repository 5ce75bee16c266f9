"""Contact caps and rejections of one customer, as compact records in one hash.

A customer's contact history lives in one Redis hash (`keys.contact_history`),
one field per counter:

- `c:<counter>`: the contacts counted against a cap or a contact policy
  (`Needs.capped_actions`: an action's name, or a policy's `~scope:name:window`);
- `r:<name>`: the negative outcomes counted by fatigue (an action, or a
  channel's or tag's fatigue across offers).

Each field is a run of 16-byte records `<time f64><id 8 bytes>`, little-endian,
in the order written. The id is the first 8 bytes of the SHA-1 of what made the
record (a decision's contact, a feedback's rejection), so writing the same
record again (a retried batch, a repeated feedback) adds nothing. A write drops
the records its counter's window can no longer see; the hash lives as long as
its longest-lived counter needs it.

Why one hash: a decision reads every counter it needs with one `HMGET` inside
its read script, and the write behind it updates every counter in one `HMGET`
and one `HSET`, instead of a `ZCOUNT` per cap and a `ZRANGE` per fatigue on
read and three commands per counter on write (one sorted set per counter,
layout 1 of this history). The counts are what the sorted sets gave: a cap
counts the contacts strictly after its window's start (`now - window`, or N
calendar months back for a month window: `window_span.window_start`), fatigue
sees every rejection time still kept. A write keeps what the longest window
can see: 31 days per month of a month window (`window_span.keep_seconds`). `arbiter migrate` converts the sorted sets
(`engine.store.window_migration`).
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Iterable

RECORD = 16
_TIME = struct.Struct("<d8x")

CAP_PREFIX = "c:"
REJECTION_PREFIX = "r:"

# Shared by the scripts that write records. `keep_only(blob, oldest, id)` keeps the
# records newer than `oldest` and says whether one has `id`; `add_record` appends
# (t, id) unless a record with that id is there; `keep_ttl` never shortens an expiry.
# Most writes drop nothing: the times are scanned (one unpack a record) and the blob
# is rebuilt only when one has aged out; the id is looked for by `string.find` (in C).
# On the reference workload's email-policy fields (12-18 records) a call costs 0.78x
# the per-record rebuild it replaced (benchmarks/RESULTS.md, "Where Redis CPU goes").
LUA_HISTORY = """
local function has_id(blob, id)
  local from = 9
  while true do
    local s = string.find(blob, id, from, true)
    if not s then return false end
    if (s - 9) % 16 == 0 then return true end  -- an id, not 8 bytes across two records
    from = s + 1
  end
end
local function keep_only(blob, oldest, id)
  local full = #blob - #blob % 16
  local stale = full ~= #blob
  for p = 1, full - 15, 16 do
    if struct.unpack('<d', blob, p) <= oldest then stale = true; break end
  end
  if not stale then return blob, has_id(blob, id) end
  local out = {}
  for p = 1, full - 15, 16 do
    if struct.unpack('<d', blob, p) > oldest then out[#out + 1] = string.sub(blob, p, p + 15) end
  end
  return table.concat(out), has_id(blob, id)
end
local function add_record(blob, t, id, oldest)
  local kept, seen = keep_only(blob or '', oldest, id)
  if not seen and t > oldest then kept = kept .. struct.pack('<d', t) .. id end
  return kept
end
local function keep_ttl(key, ttl)
  if redis.call('TTL', key) < ttl then redis.call('EXPIRE', key, ttl) end
end
"""

RECORD_REJECTION_LUA = (
    LUA_HISTORY
    + """
-- KEYS[1] the history hash. ARGV: field, time, id, oldest time kept, ttl
local f = ARGV[1]
redis.call('HSET', KEYS[1], f, add_record(redis.call('HGET', KEYS[1], f), tonumber(ARGV[2]),
  ARGV[3], tonumber(ARGV[4])))
keep_ttl(KEYS[1], tonumber(ARGV[5]))
return 1
"""
)


def record_id(what: str) -> bytes:
    """The 8-byte id of a record: the same `what` is the same record."""
    return hashlib.sha1(what.encode()).digest()[:8]


def cap_field(counter: str) -> str:
    """The hash field of a cap or contact-policy counter."""
    return CAP_PREFIX + counter


def rejection_field(name: str) -> str:
    """The hash field of a fatigue counter (an action, or a policy's channel or tag)."""
    return REJECTION_PREFIX + name


def times(blob: bytes | None) -> list[float]:
    """The record times of one field, sorted."""
    if not blob:
        return []
    return sorted(t for (t,) in _TIME.iter_unpack(blob[: len(blob) - len(blob) % RECORD]))


def count_after(blob: bytes | None, since: float) -> int:
    """How many records are strictly after `since` (a cap's count within its window)."""
    if not blob:
        return 0
    return sum(1 for (t,) in _TIME.iter_unpack(blob[: len(blob) - len(blob) % RECORD]) if t > since)


def encode(records: Iterable[tuple[float, str]]) -> bytes:
    """A field's value from (time, what) pairs (for migration and tests)."""
    return b"".join(struct.pack("<d", t) + record_id(what) for t, what in records)

"""Event windows and the one-command read of a decision, as Redis Lua scripts.

Buckets. Every event increments an hourly bucket and a daily bucket: a count
per event type, and per numeric property a count, a sum, a minimum and a
maximum. All buckets of one customer live in one hash (`keys.windows`), one
field per series, each a compact run of fixed-size records sorted by bucket
(`engine.store.series`). Hourly records are kept while a window of up to 7
days can read them, daily ones for `MAX_WINDOW` = 400 days: each write drops
what has aged out of its series. An event so late that no window could read
its bucket is counted only in last-seen.

Last-seen times live in the same hash: one field `l`, a run of records
`<time f64><name length u16><event type>` (little-endian; the newest time of
each type, sorted by type), kept `LAST_SEEN_TTL` (the longest window and a month) after the
last event arrived. One field, not one per type: the hash is a plain hash
table (its series exceed 64 bytes), where every field costs Redis ~70 bytes
of its own. The hash as a whole expires when
both have passed: its newest daily bucket has left `MAX_WINDOW` (field `x`
holds that moment; a late event never brings it forward) and its last-seen
times have aged out.

A window of W at time `now` uses hourly buckets when W ≤ 7 days, else daily
ones, and covers every bucket from the one containing `now - W` to the one
containing `now`: exact to one bucket at the window's old edge (up to an hour
or a day more than W is counted, never less). Windows longer than 400 days
see only the last 400 days or so. Calendar-month windows start N months back
in UTC (`engine.decision.window_span`, which the scenario runner asks too).

String properties a live ruleset groups by (`max(count(e within W by p))`,
`distinct(e.p within W)`; the caller passes them as `grouped`) are counted
per value in grouped series, capped per bucket (`series.GROUP_CAP`).

The read. `read_commands` lists, for one customer, the plain commands that
fetch everything a plan's `Needs` ask for, sent in one pipeline with other
decisions' (`engine.store.batcher`): the id's alias key (identity
stitching: set, the read is repeated for its customer), the profile hash,
the series its windows read and its last-seen times (one HMGET of the window
hash, a few hundred bytes to a few KB; its cost does not grow with the
windows' lengths), and the
contact-cap and rejection records of its caps and fatigue rules (one HMGET of
the customer's contact history, `engine.store.contact_history`), whatever
their number. The worker sums the records inside each window
(`series.aggregate`: two binary searches and a slice), where CPU scales out
with workers, instead of Redis doing bucket arithmetic for every decision.

Layout history: version 1 kept one hash per customer per day (hourly) and
per 32-day block (daily) with a field per bucket, summed in Lua by the read;
`arbiter migrate` (`engine.store.window_migration`) converts it. Version 2
kept last-seen times in a hash of their own (`keys.last_seen`), one more key
for every event and one more command for every decision's read (a fifth of
the read's commands); `arbiter migrate` (`engine.store.last_seen_migration`)
moves them into the window hash.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

from arbiter.engine.decision.window_span import bucket_range, window_start
from arbiter.engine.plan import Needs
from arbiter.engine.store import contact_history, keys, series

# Bumped whenever what is stored for event windows changes shape (benchmarks cache by it).
LAYOUT_VERSION = 3
#: Aggregates read from a grouped series (a string property counted per value).
GROUPED_FNS = frozenset({"max_count", "distinct"})
# What a window's figure means, as the performance table reports it.
EXACTNESS = "hourly buckets to 7d, daily beyond: never under, over by at most the old-edge bucket"

HOUR = 3600
DAY = 86400
HOURLY_MAX_WINDOW = 7 * DAY
MAX_WINDOW = 400 * DAY
EVENT_ID_TTL = 2 * DAY
# Last-seen times outlive the longest window by a month, then go with the customer.
LAST_SEEN_TTL = MAX_WINDOW + 32 * DAY
#: The window-hash field of last-seen times (series are `h:`/`d:`, the expiry `x`).
LAST_SEEN_FIELD = "l"
_SEEN_HEAD = struct.Struct("<dH")

# `seen_put(blob, name, t)`: the blob with `name` at `t` if that is newer, or nil when
# nothing changes (shared by ingestion, the merges and the migration).
LUA_LAST_SEEN = """
local function seen_put(blob, name, t)
  -- An event of a type already there (nearly every event): found by its name's length
  -- first, two bytes read per record; only a new type pays for the ordered insert.
  local p, len, size = 1, #name, #blob
  while p + 9 <= size do
    local n = string.byte(blob, p + 8) + 256 * string.byte(blob, p + 9)
    if n == len and string.sub(blob, p + 10, p + 9 + n) == name then
      if t > struct.unpack('<d', blob, p) then
        return string.sub(blob, 1, p - 1) .. struct.pack('<d', t) .. string.sub(blob, p + 8)
      end
      return nil
    end
    p = p + 10 + n
  end
  p = 1
  while p + 9 <= size do  -- sorted by name: the same times, the same bytes
    local n = string.byte(blob, p + 8) + 256 * string.byte(blob, p + 9)
    if name < string.sub(blob, p + 10, p + 9 + n) then break end
    p = p + 10 + n
  end
  return string.sub(blob, 1, p - 1) .. struct.pack('<dH', t, len) .. name .. string.sub(blob, p)
end
local function seen_merge(key, src)
  local blob = redis.call('HGET', key, 'l') or ''
  local changed, p = false, 1
  while p + 9 <= #src do
    local t, n = struct.unpack('<dH', src, p)
    local put = seen_put(blob, string.sub(src, p + 10, p + 9 + n), t)
    if put then blob, changed = put, true end
    p = p + 10 + n
  end
  if changed then redis.call('HSET', key, 'l', blob) end
end
"""


def last_seen_times(blob: bytes | None) -> dict[str, float]:
    """Event type -> newest time, from the window hash's `l` field."""
    out: dict[str, float] = {}
    if not blob:
        return out
    p = 0
    while p + _SEEN_HEAD.size <= len(blob):
        t, n = _SEEN_HEAD.unpack_from(blob, p)
        p += _SEEN_HEAD.size
        out[blob[p : p + n].decode()] = t
        p += n
    return out


def last_seen_of(blob: bytes | None, event_type: str) -> float | None:
    """The newest time of `event_type` in the window hash's `l` field, if any."""
    return last_seen_times(blob).get(event_type)


def pack_last_seen(times: Mapping[str, float]) -> bytes:
    """The `l` field holding `times` (migration and tests)."""
    out = b""
    for raw, t in sorted((name.encode(), t) for name, t in times.items()):
        out += _SEEN_HEAD.pack(t, len(raw)) + raw
    return out


INGEST_LUA = (
    """
-- KEYS: window hash, event-id zset (one customer: one slot)
-- ARGV: event id ('' = none), ts, type, hour bucket ('' = too old to be read: skip),
--       day bucket (same), oldest hour and oldest day still readable, EXPIREAT of the
--       hash for the day bucket, id ttl, arrival time, last-seen ttl, n grouped, [prop, key]... (grouped string properties), [prop, value]... (numbers)
local eid = ARGV[1]
if eid ~= '' then
  -- Duplicates are recognised by arrival time, not event time: a retry comes soon
  -- after the first delivery even when the event itself is days old.
  local arrived, keep = tonumber(ARGV[10]), tonumber(ARGV[9])
  local first = redis.call('ZSCORE', KEYS[2], eid)
  if first and tonumber(first) > arrived - keep then return 0 end
  redis.call('ZADD', KEYS[2], arrived, eid)
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', arrived - keep)
  redis.call('EXPIRE', KEYS[2], ARGV[9])
end
"""
    + series.LUA_SERIES
    + LUA_LAST_SEEN
    + """
local etype = ARGV[3]
local function bump(prefix, bucket, keep)
  if bucket == '' then return end
  bucket, keep = tonumber(bucket), tonumber(keep)
  local f = prefix .. etype
  local blob = cut(redis.call('HGET', KEYS[1], f) or '', 8, keep)
  redis.call('HSET', KEYS[1], f, put(blob, 8, bucket, function(old)
    return count_rec(old, bucket, 1) end))
  local n_grouped = tonumber(ARGV[12])
  local i = 13
  for _ = 1, n_grouped do
    local gf = f .. '/' .. ARGV[i]
    local gblob = cut(redis.call('HGET', KEYS[1], gf) or '', 16, keep)
    redis.call('HSET', KEYS[1], gf, put_key(gblob, bucket, ARGV[i + 1], 1))
    i = i + 2
  end
  while i <= #ARGV do
    local v = tonumber(ARGV[i + 1])
    local pf = f .. '.' .. ARGV[i]
    local pblob = cut(redis.call('HGET', KEYS[1], pf) or '', 32, keep)
    redis.call('HSET', KEYS[1], pf, put(pblob, 32, bucket, function(old)
      return prop_rec(old, bucket, 1, v, v, v) end))
    i = i + 2
  end
end
bump('h:', ARGV[4], ARGV[6])
bump('d:', ARGV[5], ARGV[7])
local seen = seen_put(redis.call('HGET', KEYS[1], 'l') or '', etype, tonumber(ARGV[2]))
if seen then redis.call('HSET', KEYS[1], 'l', seen) end
-- `x`: when the newest daily bucket leaves the longest window (a late event never
-- brings it forward). The hash lives until then, and until its last-seen times have aged
-- out: a ttl from this write, by Redis' clock, as layout 2's last-seen hash had (an
-- EXPIRE, without a TIME call: x is compared with the arrival time the caller gives).
-- Both only ever grow, so this never shortens the expiry.
local x = tonumber(redis.call('HGET', KEYS[1], 'x') or '0')
if ARGV[5] ~= '' and tonumber(ARGV[8]) > x then
  x = tonumber(ARGV[8])
  redis.call('HSET', KEYS[1], 'x', ARGV[8])
end
if x > tonumber(ARGV[10]) + tonumber(ARGV[11]) then  -- (only for events far ahead)
  redis.call('EXPIREAT', KEYS[1], x)
else
  redis.call('EXPIRE', KEYS[1], ARGV[11])
end
return 1
"""
)

PROFILE_LUA = """
-- KEYS: profile hash. ARGV: 'replace' or 'merge', n pairs, name, value, ..., names to delete...
-- A script, not MULTI: one key, atomic, and it works the same on Redis Cluster.
if ARGV[1] == 'replace' then redis.call('DEL', KEYS[1]) end
local n = tonumber(ARGV[2])
if n > 0 then redis.call('HSET', KEYS[1], unpack(ARGV, 3, 2 + 2 * n)) end
if #ARGV > 2 + 2 * n then redis.call('HDEL', KEYS[1], unpack(ARGV, 3 + 2 * n)) end
return 1
"""


@dataclass(frozen=True, slots=True)
class _Window:
    key: str  # the aggregate's name in `Inputs.aggregates` (AggregateSpec.key, computed once)
    fn: str
    window_seconds: int
    series: int  # index into the plan's series fields


@dataclass(frozen=True, slots=True)
class _Reads:
    """What a plan's `Needs` read, prepared once per plan."""

    windows: tuple[_Window, ...]
    last_keys: tuple[str, ...]
    last_fields: tuple[str, ...]  # event types of the last-seen times read
    series_fields: tuple[str, ...]
    hash_fields: tuple[str, ...]  # what the window HMGET reads: series, then last-seen
    history_fields: tuple[str, ...]  # caps first, then fatigue
    cap_windows: tuple[int, ...]
    cap_actions: tuple[str, ...]
    fatigued: tuple[str, ...]


# Prepared reads by plan: looked up by identity, since hashing a `Needs` (a tuple of
# dataclasses) costs several µs per decision. A plan's `Needs` lives as long as the plan.
_prepared: dict[int, tuple[Needs, _Reads]] = {}


def _reads(needs: Needs) -> _Reads:
    found = _prepared.get(id(needs))
    if found is not None and found[0] is needs:
        return found[1]
    if len(_prepared) > 256:
        _prepared.clear()
    reads = _prepare(needs)
    _prepared[id(needs)] = (needs, reads)
    return reads


def _prepare(needs: Needs) -> _Reads:
    windows = []
    last = []
    fields: list[str] = []
    for spec in needs.aggregates:
        if spec.fn == "last":
            last.append(spec)
            continue
        # Calendar months (negative) are longer than a week: daily.
        hourly = 0 < spec.window_seconds <= HOURLY_MAX_WINDOW
        # A count reads the event's count series; every other function its property's,
        # max_count and distinct its grouped series.
        grouped = spec.fn in GROUPED_FNS
        prop = spec.prop if spec.fn != "count" else None
        name = series.field_name(hourly, spec.event, prop, grouped)
        if name not in fields:
            fields.append(name)
        windows.append(_Window(spec.key, spec.fn, spec.window_seconds, fields.index(name)))
    history = (
        *(contact_history.cap_field(action) for action, _ in needs.capped_actions),
        *(contact_history.rejection_field(action) for action, *_ in needs.fatigued_actions),
    )
    return _Reads(
        tuple(windows),
        tuple(s.key for s in last),
        tuple(s.event for s in last),
        tuple(fields),
        (*fields, LAST_SEEN_FIELD) if last else tuple(fields),
        history,
        tuple(window for _, window in needs.capped_actions),
        tuple(action for action, _ in needs.capped_actions),
        tuple(action for action, *_ in needs.fatigued_actions),
    )


def read_commands(customer_id: str, needs: Needs) -> list[tuple[Any, ...]]:
    """The commands of one decision's read, all on one customer's keys (one slot).

    The first reply is the id's alias (identity stitching): when it is set,
    the others are to be ignored and the read repeated for that customer.
    """
    reads = _reads(needs)
    tag = keys.tag(customer_id)
    commands: list[tuple[Any, ...]] = [
        ("GET", tag + keys.ALIAS_SUFFIX),
        ("HGETALL", tag + keys.PROFILE_SUFFIX),
    ]
    if reads.hash_fields:
        commands.append(("HMGET", tag + keys.WINDOWS_SUFFIX, *reads.hash_fields))
    if reads.history_fields:
        commands.append(("HMGET", tag + keys.HISTORY_SUFFIX, *reads.history_fields))
    return commands


def parse_read(
    replies: list[Any], needs: Needs, now: float
) -> tuple[Any, dict[str, Any], dict[str, int], dict[str, list[float]]]:
    """(raw profile, aggregates by key, contact counts, rejection times) from a read's replies."""
    reads = _reads(needs)
    rest = iter(replies[2:])
    raw_profile = replies[1]
    if isinstance(raw_profile, list):  # RESP2 (the read is sent raw: no reply callbacks)
        raw_profile = dict(zip(raw_profile[::2], raw_profile[1::2], strict=True))
    blobs = next(rest) if reads.hash_fields else []
    history = next(rest) if reads.history_fields else []
    seen = last_seen_times(blobs[-1]) if reads.last_fields else {}
    aggregates: dict[str, Any] = {}
    for w in reads.windows:
        _, first, last = bucket_range(w.window_seconds, now)
        if w.fn in GROUPED_FNS:
            aggregates[w.key] = float(series.grouped(w.fn, blobs[w.series], first, last))
            continue
        value = series.aggregate(w.fn, blobs[w.series], first, last)
        aggregates[w.key] = None if value is None else float(value)
    for key, event in zip(reads.last_keys, reads.last_fields, strict=True):
        aggregates[key] = seen.get(event)
    n_caps = len(reads.cap_actions)
    caps = {
        action: contact_history.count_after(blob, window_start(window, now))
        for action, window, blob in zip(
            reads.cap_actions, reads.cap_windows, history[:n_caps], strict=True
        )
    }
    rejections = {
        action: contact_history.times(blob)
        for action, blob in zip(reads.fatigued, history[n_caps:], strict=True)
    }
    return raw_profile, aggregates, caps, rejections


def expire_at(day: int) -> int:
    """When a window hash whose newest daily bucket is `day` can go (windows up to `MAX_WINDOW`)."""
    return (day + 1) * DAY + MAX_WINDOW + DAY


def ingest_command(
    customer_id: str,
    event_type: str,
    ts: float,
    properties: Mapping[str, Any],
    event_id: str | None,
    now: float,
    grouped: Collection[str] = (),
) -> tuple[list[str], list[Any]]:
    """KEYS and ARGV of `INGEST_LUA` for one event arriving at `now`.

    A bucket that no window could read at `now` is not written (a backfill of
    last year's events writes no hourly records). Numeric properties are
    summed; string properties named in `grouped` (`"<event>.<prop>"`, those a
    live ruleset groups by) are counted per value; others are ignored here.
    """
    hour = int(ts // HOUR)
    day = int(ts // DAY)
    # The oldest buckets a window of up to 7 days (hourly) or MAX_WINDOW (daily) can read
    # from now on: older records are dropped as the series is rewritten.
    oldest_hour = int((now - HOURLY_MAX_WINDOW) // HOUR)
    oldest_day = int((now - MAX_WINDOW) // DAY)
    key_list = [keys.windows(customer_id), keys.event_ids(customer_id)]
    args: list[Any] = [
        event_id or "",
        repr(float(ts)),
        event_type,
        hour if hour >= oldest_hour else "",
        day if day >= oldest_day else "",
        oldest_hour,
        oldest_day,
        expire_at(day),
        EVENT_ID_TTL,
        repr(float(now)),
        LAST_SEEN_TTL,
    ]
    labels = [
        (name, value)
        for name, value in properties.items()
        if isinstance(value, str) and f"{event_type}.{name}" in grouped
    ]
    args.append(len(labels))
    for name, value in labels:
        args += [name, series.key_id(value)]
    for name, value in properties.items():
        # NaN and infinities cannot be summed: not counted.
        if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
            args += [name, repr(float(value))]
    return key_list, args

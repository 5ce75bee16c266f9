"""The compact encoding of one customer's event buckets, and its arithmetic in the worker.

A customer's event windows live in one Redis hash (`keys.windows`), one
field per series:

- `h:<event>` and `d:<event>`: hourly and daily counts of an event type,
  records of 8 bytes `<bucket u32><count u32>`, little-endian;
- `h:<event>.<prop>` and `d:<event>.<prop>`: a numeric property, records of
  32 bytes `<bucket u32><n u32><sum f64><min f64><max f64>`;
- `h:<event>/<prop>` and `d:<event>/<prop>`: a string property grouped by
  value, records of 16 bytes `<bucket u32><count u32><key 8 bytes>`, the key
  being the first 8 bytes of the value's BLAKE2b digest (`key_id`). At most
  `GROUP_CAP` keys per bucket: the events of further values in that bucket are
  counted in its overflow record (key `OVERFLOW`, eight zero bytes), which
  the reads add as an upper bound (`grouped`), so a window never under-counts;
- `x`: the epoch second at which the whole hash may expire.

Records are sorted by bucket (hours or days since the epoch), one per bucket
that had events. A window is then two binary searches and a sum over the
records between them, done here in the worker, where CPU scales out; Redis
only returns the few fields a plan reads (one HMGET), whatever the windows'
lengths. Scripts that write records (`windows.INGEST_LUA`, `window_merge.MERGE_LUA`,
`merge.MERGE_WINDOWS_LUA`, `window_migration.MIGRATE_LUA`) share the Lua in
`LUA_SERIES`.
"""

from __future__ import annotations

import hashlib
import struct
import sys
from array import array
from bisect import bisect_left, bisect_right
from collections.abc import Iterable, Mapping
from typing import Any

COUNT_SIZE = 8
PROP_SIZE = 32
KEYED_SIZE = 16
#: Distinct values a grouped series keeps per bucket; further values go to the overflow.
GROUP_CAP = 32
OVERFLOW = bytes(8)
_PROP = struct.Struct("<IIddd")
_COUNT = struct.Struct("<II")
_KEYED = struct.Struct("<II8s")
_SWAP = sys.byteorder != "little"

# Shared by every script that writes records. `find` is a binary search for the
# first record whose bucket is >= `bucket`; `put` rewrites (or inserts) one
# record in place and drops the records older than `keep` (no window can read
# them any more), so a series never holds more than its longest window's buckets.
LUA_SERIES = """
local function find(blob, size, bucket)
  local lo, hi = 0, #blob / size
  while lo < hi do
    local mid = math.floor((lo + hi) / 2)
    if struct.unpack('<I4', blob, mid * size + 1) < bucket then lo = mid + 1 else hi = mid end
  end
  return lo
end
local function count_rec(old, bucket, n)
  if old then n = n + struct.unpack('<I4', old, 5) end
  return struct.pack('<I4I4', bucket, n)
end
local function prop_rec(old, bucket, n, sum, lo, hi)
  if old then
    local _, n0, s0, lo0, hi0 = struct.unpack('<I4I4ddd', old)
    n, sum = n + n0, sum + s0
    if lo0 < lo then lo = lo0 end
    if hi0 > hi then hi = hi0 end
  end
  return struct.pack('<I4I4ddd', bucket, n, sum, lo, hi)
end
local function cut(blob, size, keep)
  local k = find(blob, size, keep)
  if k > 0 then return string.sub(blob, k * size + 1) end
  return blob
end
local function put(blob, size, bucket, make)
  local i = find(blob, size, bucket)
  local pos = i * size + 1
  if pos <= #blob and struct.unpack('<I4', blob, pos) == bucket then
    return string.sub(blob, 1, pos - 1) .. make(string.sub(blob, pos, pos + size - 1))
        .. string.sub(blob, pos + size)
  end
  return string.sub(blob, 1, pos - 1) .. make(nil) .. string.sub(blob, pos)
end
-- Grouped series (16-byte records): add `n` events of `key` to `bucket`. A bucket keeps at
-- most GROUP_CAP keys; past that, events of a new key go to its overflow record.
local GROUP_CAP, OVERFLOW = @GROUP_CAP@, string.rep('\0', 8)
local function put_key(blob, bucket, key, n)
  local pos = find(blob, 16, bucket) * 16 + 1
  local kept, at, over = 0, nil, nil
  while pos <= #blob and struct.unpack('<I4', blob, pos) == bucket do
    local k = string.sub(blob, pos + 8, pos + 15)
    if k == key then at = pos end
    if k == OVERFLOW then over = pos else kept = kept + 1 end
    pos = pos + 16
  end
  if not at and key ~= OVERFLOW and kept >= GROUP_CAP then key, at = OVERFLOW, over end
  if at then
    local c = struct.unpack('<I4', blob, at + 4) + n
    return string.sub(blob, 1, at + 3) .. struct.pack('<I4', c) .. string.sub(blob, at + 8)
  end
  return string.sub(blob, 1, pos - 1) .. struct.pack('<I4I4', bucket, n) .. key
      .. string.sub(blob, pos)
end
""".replace("@GROUP_CAP@", str(GROUP_CAP))


def is_prop(field: str) -> bool:
    """Whether a series field holds a property's statistics (else counts)."""
    return "." in field


def is_grouped(field: str) -> bool:
    """Whether a series field holds a string property's counts per value."""
    return "/" in field


def field_name(hourly: bool, event: str, prop: str | None, grouped: bool = False) -> str:
    """The hash field of a series: `h:`/`d:` then the event (and `.prop`, or `/prop` grouped)."""
    tail = event if prop is None else f"{event}{'/' if grouped else '.'}{prop}"
    return ("h:" if hourly else "d:") + tail


def key_id(value: str) -> bytes:
    """The 8-byte key of a grouped value (never `OVERFLOW`).

    Two values sharing a key (odds about n²/2⁶⁵ for n values) would count as one.
    """
    digest = hashlib.blake2b(value.encode(), digest_size=8).digest()
    return digest if digest != OVERFLOW else bytes(7) + b"\x01"


def grouped(fn: str, blob: bytes | None, first: int, last: int) -> int:
    """`max_count` or `distinct` over the buckets `first..last` of a grouped series.

    Events counted in an overflow record (a bucket past `GROUP_CAP` values) are
    added in full to either figure: an upper bound, so nothing is under-counted.
    """
    if not blob:
        return 0
    words = array("I", blob)
    wide = array("Q", blob)  # the key of record i is wide[2 * i + 1], as one number
    if _SWAP:
        words.byteswap()
        wide.byteswap()
    buckets = words[0::4]
    lo, hi = bisect_left(buckets, first), bisect_right(buckets, last)
    per_key: dict[int, int] = {}
    overflow = 0
    for key, n in zip(wide[2 * lo + 1 : 2 * hi : 2], words[4 * lo + 1 : 4 * hi : 4], strict=True):
        if key:
            per_key[key] = per_key.get(key, 0) + n
        else:  # OVERFLOW: eight zero bytes
            overflow += n
    if fn == "distinct":
        return len(per_key) + overflow
    return max(per_key.values(), default=0) + overflow


def counts(blob: bytes) -> tuple[array[int], array[int]]:
    """(buckets, counts) of a count series."""
    a = array("I", blob)
    if _SWAP:
        a.byteswap()
    return a[0::2], a[1::2]


def props(blob: bytes) -> list[tuple[int, int, float, float, float]]:
    """(bucket, n, sum, min, max) records of a property series."""
    return list(_PROP.iter_unpack(blob))


def aggregate(fn: str, blob: bytes | None, first: int, last: int) -> float | None:
    """`fn` over the buckets `first..last` (inclusive) of one series' records.

    count and sum of nothing are 0; avg, min and max of nothing are missing.
    """
    if fn == "count":
        if not blob:
            return 0
        buckets, values = counts(blob)
        return sum(values[bisect_left(buckets, first) : bisect_right(buckets, last)])
    records = props(blob) if blob else []
    lo = bisect_left(records, (first,))
    hi = bisect_right(records, (last, 1 << 32))
    inside = records[lo:hi]
    if fn == "sum":
        return sum(r[2] for r in inside) if inside else 0
    if not inside:
        return None
    if fn == "avg":
        return sum(r[2] for r in inside) / sum(r[1] for r in inside)
    if fn == "min":
        return min(r[3] for r in inside)
    if fn == "max":
        return max(r[4] for r in inside)
    raise ValueError(f"unknown aggregate {fn!r}")


def encode_counts(buckets: Mapping[int, int]) -> bytes:
    """A count series from {bucket: count} (for migration and tests)."""
    return b"".join(_COUNT.pack(b, buckets[b]) for b in sorted(buckets))


def encode_props(buckets: Mapping[int, tuple[int, float, float, float]]) -> bytes:
    """A property series from {bucket: (n, sum, min, max)}."""
    return b"".join(_PROP.pack(b, *buckets[b]) for b in sorted(buckets))


def encode_grouped(buckets: Mapping[int, Mapping[bytes, int]]) -> bytes:
    """A grouped series from {bucket: {key: count}} (for tests)."""
    return b"".join(_KEYED.pack(b, c, k) for b in sorted(buckets) for k, c in buckets[b].items())


def decode(field: str, blob: bytes) -> dict[int, Any]:
    """{bucket: count}, {bucket: (n, sum, min, max)} or {bucket: {key: count}} of one series."""
    if is_grouped(field):
        out: dict[int, dict[bytes, int]] = {}
        for bucket, count, key in _KEYED.iter_unpack(blob):
            out.setdefault(bucket, {})[key] = count
        return out
    if is_prop(field):
        return {r[0]: r[1:] for r in props(blob)}
    buckets, values = counts(blob)
    return dict(zip(buckets, values, strict=True))


def fields_of(hash_fields: Iterable[bytes | str]) -> list[str]:
    """The series fields among a window hash's fields (not the expiry)."""
    out = []
    for f in hash_fields:
        name = f.decode() if isinstance(f, bytes) else f
        if name.startswith(("h:", "d:")):
            out.append(name)
    return out

"""Index planning: which rules of a block one decision can skip after a lookup.

The naive evaluator tests every rule of a block in order. Most rules of a
large ruleset start with tests like `context.category == "shoes"`,
`profile.tier in [gold, silver]`, `vip` or `profile.ltv > 1000`. This module
finds those tests and groups rules by the attributes they test, so that the
generated evaluator looks each attribute's value up once (a dict for
equality, a sorted boundary list and `bisect` for ranges) and gets back the
rules still worth running. Everything here is data built at compile time;
`engine.codegen.compiler` turns it into code and constants.

Why skipping is exact. A rule's condition is a chain of `and` conjuncts,
evaluated left to right with short-circuit. Call a leading run of conjuncts
*pure* when, given that each field they read holds a value of an expected
type (a *guard*: "scalar" = str/int/float/bool/None, "number" =
int/float/bool/None and not NaN), evaluating them can neither raise nor have
any effect. If any of the pure conjuncts a rule's index keys come from is
false, the naive evaluator stops at that conjunct or earlier: nothing
observable happens (no offer, no error, no model call). So when the guards
hold, a rule whose keys do not match can be skipped; every other rule runs
its full, unchanged code, in rule order. When a guard fails (a field holds a
list, a string where a number was expected, NaN …), the whole index is
bypassed and its rules run one by one, exactly as unoptimized.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from collections.abc import Container, Sequence
from dataclasses import dataclass
from itertools import product
from typing import Any, Literal

from arbiter.dsl import nodes as n

Guard = Literal["scalar", "number"]

#: Value types for which `==`, `!=`, hashing and `in <frozenset>` never raise.
SCALAR_TYPES = frozenset({str, int, float, bool, type(None)})
#: Value types that compare with numbers without raising (NaN is excluded separately).
NUMBER_TYPES = frozenset({int, float, bool, type(None)})

#: A group with fewer rules than this costs more to look up than to test one by one.
MIN_GROUP = 3
#: Rules whose key lists multiply out beyond this (`a in [..20] and b in [..20]`) drop a key.
MAX_KEYS_PER_RULE = 64
#: A range table may hold at most this many (region, rule) entries per rule …
RANGE_ENTRIES_PER_RULE = 32
#: … or this many in all, whichever is larger; beyond, bisecting does not pay.
RANGE_ENTRIES_MIN = 4096


@dataclass(frozen=True, slots=True)
class Interval:
    """The numbers a range test accepts; a bound of None is unbounded."""

    lo: float | None
    lo_closed: bool
    hi: float | None
    hi_closed: bool


@dataclass(frozen=True, slots=True)
class Conjunct:
    """One pure conjunct: what it reads, the guard it needs, and its key if any."""

    ref: n.Ref | None  # field or segment read; None for `true`/`false`
    guard: Guard | None  # None: cannot raise whatever the value
    values: frozenset[Any] | None = None  # equality key: the values that make it true
    interval: Interval | None = None  # range key


@dataclass(frozen=True, slots=True)
class Filter:
    """The keys one rule is indexed by, and what must hold for skipping it to be exact."""

    keys: tuple[tuple[n.Ref, frozenset[Any]], ...]  # sorted by reference
    range: tuple[n.Ref, Interval] | None
    guards: frozenset[tuple[n.Ref, Guard]]
    complete: bool  # the condition is exactly these keys: no code needs to run
    eq_at: tuple[int, ...]  # prefix positions the keys come from
    range_at: int | None

    @property
    def signature(self) -> tuple[tuple[str, ...], str | None]:
        return (
            tuple(r.dotted for r, _ in self.keys),
            self.range[0].dotted if self.range else None,
        )


@dataclass(frozen=True, slots=True)
class Analysis:
    """A rule's pure prefix, from which filters are chosen."""

    prefix: tuple[Conjunct, ...]
    total: int  # number of conjuncts in the whole condition


@dataclass
class Index:
    """One lookup: the rules sharing a signature, and the guards they need."""

    keys: tuple[n.Ref, ...]
    range: n.Ref | None
    members: list[tuple[int, Filter]]  # (item position, filter), in position order

    @property
    def guards(self) -> tuple[tuple[n.Ref, Guard], ...]:
        found = {g for _, f in self.members for g in f.guards}
        return tuple(sorted(found, key=lambda g: (g[0].dotted, g[1])))


@dataclass
class BlockPlan:
    indexes: list[Index]
    always: tuple[int, ...]  # positions that run on every decision


# ----------------------------------------------------------------- analysis


def conjuncts(e: n.Expr) -> list[n.Expr]:
    """The operands of a top-level `and`, nested `and`s flattened (same evaluation order)."""
    if isinstance(e, n.BoolOp) and e.op == "and":
        return [c for o in e.operands for c in conjuncts(o)]
    return [e]


def analyse(cond: n.Expr, segments: Container[str]) -> Analysis:
    """The pure prefix of a condition (see the module docstring)."""
    parts = conjuncts(cond)
    prefix: list[Conjunct] = []
    for part in parts:
        c = _classify(part, segments)
        if c is None:
            break
        prefix.append(c)
    return Analysis(tuple(prefix), len(parts))


def _field(e: n.Expr) -> n.Ref | None:
    if isinstance(e, n.Ref) and len(e.parts) == 2 and e.parts[0] in ("profile", "context"):
        return e
    return None


_literal = n.literal_value


def _number(e: n.Expr) -> float | None:
    ok, value = _literal(e)
    if not ok or isinstance(value, bool | str) or not math.isfinite(value):
        return None
    return value  # type: ignore[no-any-return]


_FLIP = {"<": ">", "<=": ">=", ">": "<", ">=": "<=", "==": "==", "!=": "!="}


def _classify(e: n.Expr, segments: Container[str]) -> Conjunct | None:
    if isinstance(e, n.Bool):
        return Conjunct(None, None)
    if isinstance(e, n.Ref) and len(e.parts) == 1 and e.parts[0] in segments:
        # Segment locals hold exactly True, False or None, so `is True` and a dict lookup agree.
        return Conjunct(e, None, frozenset({True}))
    if isinstance(e, n.Unary) and e.op == "not":
        inner = e.operand
        if isinstance(inner, n.Ref) and len(inner.parts) == 1 and inner.parts[0] in segments:
            return Conjunct(inner, None, frozenset({False}))
        return None
    if isinstance(e, n.Presence):
        ref = _field(e.operand)
        return Conjunct(ref, None) if ref is not None else None
    if isinstance(e, n.Between):
        ref, lo, hi = _field(e.operand), _number(e.low), _number(e.high)
        if ref is None or lo is None or hi is None:
            return None
        return Conjunct(ref, "number", interval=Interval(lo, True, hi, True))
    if not isinstance(e, n.Binary):
        return None
    op: str = e.op
    left, right = e.left, e.right
    if _field(left) is None and op in _FLIP:
        op, left, right = _FLIP[op], right, left
    ref = _field(left)
    if ref is None:
        return None
    if op in ("in", "not in"):
        if not isinstance(right, n.ListLit):
            return None
        items = [_literal(i) for i in right.items]
        if not all(ok for ok, _ in items):
            return None
        values = frozenset(v for _, v in items)
        return Conjunct(ref, "scalar", values if op == "in" else None)
    ok, value = _literal(right)
    if not ok:
        return None
    if op == "==":
        return Conjunct(ref, "scalar", frozenset({value}))
    if op == "!=":
        return Conjunct(ref, "scalar")
    bound = _number(right)
    if bound is None or op not in ("<", "<=", ">", ">="):
        return None
    if op in (">", ">="):
        return Conjunct(ref, "number", interval=Interval(bound, op == ">=", None, False))
    return Conjunct(ref, "number", interval=Interval(None, False, bound, op == "<="))


# ----------------------------------------------------------------- filters


def _filter(a: Analysis, eq: Sequence[int], rng: int | None) -> Filter | None:
    """The filter keyed by the prefix conjuncts at positions `eq` (and `rng`)."""
    chosen = [*eq, *([rng] if rng is not None else [])]
    if not chosen:
        return None
    last = max(chosen)
    # Every conjunct up to the last key is evaluated before the naive code could stop,
    # so all of their fields must hold values that cannot make them raise.
    guards = frozenset(
        (c.ref, c.guard) for c in a.prefix[: last + 1] if c.guard is not None and c.ref is not None
    )
    keys = []
    for i in eq:
        c = a.prefix[i]
        assert c.ref is not None and c.values is not None
        keys.append((c.ref, c.values))
    keys.sort(key=lambda k: k[0].dotted)
    range_ = None
    if rng is not None:
        c = a.prefix[rng]
        assert c.ref is not None and c.interval is not None
        range_ = (c.ref, c.interval)
    complete = len(a.prefix) == a.total and len(chosen) == a.total
    return Filter(tuple(keys), range_, guards, complete, tuple(eq), rng)


def best_filter(a: Analysis) -> Filter | None:
    """The most selective filter: every equality key (first test per attribute) and one range."""
    eq: list[int] = []
    seen: set[str] = set()
    rng: int | None = None
    for i, c in enumerate(a.prefix):
        if c.ref is None or c.ref.dotted in seen:
            continue
        if c.values is not None:
            eq.append(i)
            seen.add(c.ref.dotted)
        elif c.interval is not None and rng is None:
            rng = i
    if rng is not None and a.prefix[rng].ref.dotted in seen:  # type: ignore[union-attr]
        rng = None
    # Keep the key combinations a rule contributes bounded: drop the widest lists first.
    while eq and math.prod(len(a.prefix[i].values or ()) for i in eq) > MAX_KEYS_PER_RULE:
        eq.remove(max(eq, key=lambda i: (len(a.prefix[i].values or ()), i)))
    return _filter(a, eq, rng)


def _weaker(a: Analysis, f: Filter) -> list[Filter]:
    """Filters using a subset of `f`'s keys, for rules whose own group is too small."""
    out: list[Filter] = []
    ranges = (f.range_at, None) if f.range_at is not None else (None,)
    if f.range_at is not None:
        weaker = _filter(a, f.eq_at, None)
        if weaker is not None:
            out.append(weaker)
    for drop in f.eq_at:
        rest = [i for i in f.eq_at if i != drop]
        for r in ranges:
            weaker = _filter(a, rest, r)
            if weaker is not None:
                out.append(weaker)
    return out


# ----------------------------------------------------------------- grouping


def plan_block(analyses: Sequence[Analysis | None], min_group: int = MIN_GROUP) -> BlockPlan:
    """Group a block's items into indexes; `None` marks an item that must always run."""
    chosen: dict[int, Filter] = {}
    for pos, a in enumerate(analyses):
        f = best_filter(a) if a is not None else None
        if f is not None:
            chosen[pos] = f

    def groups() -> dict[tuple[tuple[str, ...], str | None], list[int]]:
        out: dict[tuple[tuple[str, ...], str | None], list[int]] = {}
        for pos, f in chosen.items():
            out.setdefault(f.signature, []).append(pos)
        return out

    # Rules in small groups move to the largest big group a subset of their keys fits,
    # or run every time. Sizes are taken before moving, so the result does not depend
    # on the order groups are visited in.
    sizes = {sig: len(m) for sig, m in groups().items()}
    for sig, members in sorted(groups().items(), key=lambda g: g[1][0]):
        if sizes[sig] >= min_group:
            continue
        for pos in members:
            a = analyses[pos]
            assert a is not None
            options = [w for w in _weaker(a, chosen[pos]) if sizes.get(w.signature, 0) >= min_group]
            if options:
                chosen[pos] = max(options, key=lambda w: sizes[w.signature])
            else:
                del chosen[pos]

    # A range that would need too big a table is dropped: its rules keep their equality keys.
    for sig, members in groups().items():
        if sig[1] is None or _range_pays([chosen[p] for p in members]):
            continue
        for pos in members:
            f = chosen[pos]
            a = analyses[pos]
            assert a is not None
            weaker = _filter(a, f.eq_at, None)
            if weaker is not None:
                chosen[pos] = weaker
            else:
                del chosen[pos]

    indexes = []
    for members in groups().values():
        first = chosen[members[0]]
        indexes.append(
            Index(
                tuple(r for r, _ in first.keys),
                first.range[0] if first.range else None,
                [(p, chosen[p]) for p in members],
            )
        )
    indexes.sort(key=lambda ix: ix.members[0][0])
    always = tuple(p for p in range(len(analyses)) if p not in chosen)
    return BlockPlan(indexes, always)


def _range_pays(filters: Sequence[Filter]) -> bool:
    """Whether the range tables of one index stay small (summed over its equality keys)."""
    by_key: dict[Any, list[Interval]] = {}
    for f in filters:
        assert f.range is not None
        for key in _keys(f):
            by_key.setdefault(key, []).append(f.range[1])
    limit = max(RANGE_ENTRIES_MIN, RANGE_ENTRIES_PER_RULE * len(filters))
    total = 0
    for intervals in by_key.values():
        points = _points(intervals)
        for iv in intervals:
            lo, hi = _span(iv, points)
            total += max(0, hi - lo + 1)
        if total > limit:
            return False
    return True


# ----------------------------------------------------------------- tables


def _keys(f: Filter) -> list[Any]:
    """The dict keys a rule is filed under: one value, or a tuple for several attributes."""
    if not f.keys:
        return [None]
    if len(f.keys) == 1:
        return list(f.keys[0][1])
    return list(product(*(values for _, values in f.keys)))


def _points(intervals: Sequence[Interval]) -> list[float]:
    return sorted({b for iv in intervals for b in (iv.lo, iv.hi) if b is not None})


def _span(iv: Interval, points: list[float]) -> tuple[int, int]:
    """First and last region an interval covers.

    With boundaries b0 < … < b(m-1), region 2i+1 is the point bi and region 2i
    the open interval between b(i-1) and bi; `bisect_left(b, v) +
    bisect_right(b, v)` is the region of v.
    """
    if iv.lo is None:
        start = 0
    else:
        i = bisect_left(points, iv.lo)
        start = 2 * i + 1 if iv.lo_closed else 2 * i + 2
    if iv.hi is None:
        end = 2 * len(points)
    else:
        i = bisect_left(points, iv.hi)
        end = 2 * i + 1 if iv.hi_closed else 2 * i
    return start, end


Bucket = tuple[tuple[Any, ...], tuple[int, ...], tuple[int, ...]]
#: (offers to add, action indices to suppress, item positions to run)
EMPTY: Bucket = ((), (), ())


class _Buckets:
    """Builds buckets and shares equal ones, so repeated regions cost one tuple."""

    def __init__(self) -> None:
        self._seen: dict[Bucket, Bucket] = {}

    def make(self, entries: Sequence[tuple[int, Any]]) -> Bucket:
        """`entries` are (position, payload) in position order; payload see `build_table`."""
        offers = tuple(p[1] for _, p in entries if p[0] == "offer")
        suppress = tuple(p[1] for _, p in entries if p[0] == "suppress")
        runs = tuple(pos for pos, p in entries if p[0] == "run")
        bucket = (offers, suppress, runs)
        return self._seen.setdefault(bucket, bucket)


def build_table(index: Index, payloads: dict[int, tuple[str, Any]]) -> Any:
    """The run-time table of one index.

    `payloads[pos]` is ("offer", Offer) or ("suppress", action index) for a
    complete rule, else ("run", pos). Without a range: `{key: bucket}`. With
    a range and no equality key: `(boundaries, buckets by region)`; with
    both: `{key: (boundaries, buckets by region)}`.
    """
    by_key: dict[Any, list[tuple[int, Any]]] = {}
    intervals: dict[int, Interval] = {}
    for pos, f in index.members:
        payload = payloads[pos] if f.complete else ("run", pos)
        for key in _keys(f):
            by_key.setdefault(key, []).append((pos, payload))
        if f.range is not None:
            intervals[pos] = f.range[1]
    buckets = _Buckets()
    if index.range is None:
        return {key: buckets.make(entries) for key, entries in by_key.items()}
    tables = {key: _range_table(entries, intervals, buckets) for key, entries in by_key.items()}
    return tables if index.keys else tables[None]


def _range_table(
    entries: list[tuple[int, Any]], intervals: dict[int, Interval], buckets: _Buckets
) -> tuple[list[float], tuple[Bucket, ...]]:
    points = _points([intervals[pos] for pos, _ in entries])
    regions: list[list[tuple[int, Any]]] = [[] for _ in range(2 * len(points) + 1)]
    for pos, payload in entries:
        start, end = _span(intervals[pos], points)
        for r in range(start, end + 1):
            regions[r].append((pos, payload))
    return points, tuple(buckets.make(r) if r else EMPTY for r in regions)

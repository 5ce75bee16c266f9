"""Segments and rules → the body of the generated `evaluate` function.

Naive layout (`optimize=False`, and every small block): each rule in source
order in its own `try`, nested `if`s for `if`/`else` blocks.

Indexed layout, per block of rules where `engine.codegen.indexing` finds keys worth
looking up (names are per nesting depth: R1/r1, R2/r2 …)::

    R1 = list(K[3])                    # items that run on every decision
    if _g0 and _g1:                    # the field types the index relies on
        B = K[7].get((p0, c2))         # the bucket of this combination of values
        if B is not None:
            O += B[0]                  # rules with nothing left to test: their offers
            S.update(B[1])             # … and suppressions, straight from the table
            R1 += B[2]                 # positions of the items still to run
    else:
        R1 += K[8]                     # unexpected value types: run all of them
    R1.sort()
    for r1 in R1:                      # in rule order, like the naive evaluator
        if r1 < 40:                    # binary search to one item's unchanged code
            ...

Offers taken from tables are appended before those appended by code, so the
evaluator sorts `O` by rule id at the end, which is the order the naive
evaluator appends them in. Errors, model calls and suppressions happen in the
same order as in the naive evaluator, because the items that run are the
same items, running the same code, in the same order (see `engine.codegen.indexing`
for why the skipped ones are unobservable).

Predicates that several rules share and that cost more than a comparison
(function calls, arithmetic, regexes, string tests) are computed once per
decision through memo locals (`ExprCompiler.memo`); `engine.codegen.shared_predicates`
chooses them.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Iterator
from dataclasses import dataclass
from operator import attrgetter
from typing import Any, Protocol

from arbiter.dsl import CheckedRuleset
from arbiter.dsl import nodes as n
from arbiter.engine.codegen import indexing
from arbiter.engine.codegen.expressions import Constants, ExprCompiler, Writer
from arbiter.engine.codegen.shared_predicates import shared_predicates
from arbiter.engine.plan import Offer

#: Blocks with fewer items are laid out naively: a lookup would cost more than it saves.
MIN_INDEXED_BLOCK = 4
#: Indexed blocks nest at most this deep (each adds a loop and a level of search).
MAX_INDEXED_DEPTH = 4
#: Rough costs in ns (CPython 3.11, in a function): testing a rule whose first conjunct
#: fails, one index lookup, the candidate list and loop, running one item through the loop.
#: A block is indexed only when the rules it skips cost more than the lookups it adds.
COST_TEST, COST_LOOKUP, COST_SETUP, COST_DISPATCH = 25, 100, 150, 45


class Host(Protocol):
    """What the rule writer needs from the compiler: constants, names, rule ids."""

    consts: Constants
    exprs: ExprCompiler
    action_index: dict[str, int]

    def rule_id(self, kind: str, span: n.Span) -> int: ...

    def resolve(self, ref: n.Ref) -> str: ...


@dataclass(frozen=True)
class _Unit:
    """One thing an indexed block can run: a rule, or a rule inside an opened `if`.

    kind: "item" (a rule of the block), "whole" (an opened `if`, as written),
    "then"/"else" (a rule of its branches, run under its condition).
    """

    kind: str
    rule: n.Rule
    analysis: indexing.Analysis | None
    condition: n.Expr | None = None
    guards: frozenset[tuple[n.Ref, indexing.Guard]] = frozenset()


class RuleWriter:
    """Writes segment and rule code; remembers the locals the preamble must set up."""

    def __init__(
        self, host: Host, checked: CheckedRuleset, optimize: bool, force: bool = False
    ) -> None:
        self.host = host
        self.c = checked
        self.optimize = optimize
        # Tests index every block, however small, to cover every path of the layout.
        self.force = force
        self.guards: dict[tuple[str, str], tuple[str, n.Ref]] = {}  # (field, kind) -> local
        self.memos: list[str] = []
        self.sorts_offers = False
        self.uses_bisect = False
        self._depth = 0
        self._naive = 0  # > 0 while writing a fallback copy: no indexing inside it
        self._ids: dict[int, int] = {}  # id(node) -> rule id

    # ------------------------------------------------------------ entry points

    def body(self, w: Writer) -> list[str]:
        """Segments then rules; returns the segment locals in declaration order."""
        # Ids follow source order (segments, then rules depth first) whatever the layout,
        # and a rule written twice (see `_units`) keeps one id.
        for seg in self.c.segments.values():
            self._ids[id(seg)] = self.host.rule_id("segment", seg.span)
        for rule in _walk(self.c.rules):
            kind = {n.WhenRule: "when", n.SuppressRule: "suppress", n.IfBlock: "if"}[type(rule)]
            self._ids[id(rule)] = self.host.rule_id(kind, rule.span)
        if self.optimize:
            self._share_predicates()
        locals_ = self._segments(w)
        self.block(w, self.c.rules)
        return locals_

    def preamble(self, w: Writer) -> None:
        """Locals the body relies on besides field loads: guards, memos, bisect."""
        scalar = self.host.consts.add(indexing.SCALAR_TYPES)
        number = self.host.consts.add(indexing.NUMBER_TYPES)
        for (_, kind), (local, ref) in self.guards.items():
            v = self.host.resolve(ref)
            if kind == "scalar":
                w.line(f"{local} = type({v}) in {scalar}")
            else:
                # `v == v` is false for NaN, which sorts nowhere.
                w.line(f"{local} = type({v}) in {number} and {v} == {v}")
        if self.memos:
            w.line(" = ".join(self.memos) + " = UNSET")
        if self.uses_bisect:
            bl, br = self.host.consts.add(bisect_left), self.host.consts.add(bisect_right)
            w.line(f"bl, br = {bl}, {br}")

    def epilogue(self, w: Writer) -> None:
        """Restore rule order in `O` if any table appended offers out of order."""
        if self.sorts_offers:
            key = self.host.consts.add(attrgetter("rule"))
            w.line("if len(O) > 1:")
            w.indent()
            w.line(f"O.sort(key={key})")
            w.dedent()

    # ------------------------------------------------------------ segments

    def _segments(self, w: Writer) -> list[str]:
        out = []
        for name, seg in self.c.segments.items():
            rid = self._ids[id(seg)]
            local = self.host.resolve(n.Ref(seg.span, (name,)))
            out.append(local)
            exprs = self.host.exprs
            w.line("try:", seg.span)
            w.indent()
            t, f = exprs.truth(seg.expr), exprs.falsity(seg.expr)
            w.line(f"{local} = True if {t} else (False if {f} else None)", seg.span)
            w.dedent()
            w.line("except Exception as exc:")
            w.indent()
            w.line(f"{local} = None")
            w.line(f"rt.error({rid}, exc)")
            w.dedent()
        return out

    # ------------------------------------------------------------ rules

    def rule(self, w: Writer, rule: n.Rule) -> tuple[str, Any] | None:
        """One rule's code; returns what a table may do instead when its keys say it all."""
        exprs = self.host.exprs
        if isinstance(rule, n.WhenRule):
            rid = self._ids[id(rule)]
            action = self.host.action_index[rule.action]
            offer = Offer(action, rule.weight, rule.priority, rid)
            stmt = f"O.append({self.host.consts.add(offer)})"
            self._guarded(w, rid, rule.span, rule.condition, stmt)
            return ("offer", offer)
        if isinstance(rule, n.SuppressRule):
            rid = self._ids[id(rule)]
            idx = self.host.action_index[rule.action]
            self._guarded(w, rid, rule.span, rule.condition, f"S.add({idx})")
            return ("suppress", idx)
        assert isinstance(rule, n.IfBlock)
        rid = self._ids[id(rule)]
        var = f"_b{rid}"
        w.line("try:", rule.span)
        w.indent()
        w.line(f"{var} = True if {exprs.truth(rule.condition)} else False", rule.span)
        w.dedent()
        w.line("except Exception as exc:")
        w.indent()
        w.line(f"{var} = None")
        w.line(f"rt.error({rid}, exc)")
        w.dedent()
        w.line(f"if {var} is True:")
        w.indent()
        self.block(w, rule.then)
        w.line("pass")
        w.dedent()
        if rule.orelse:
            # A missing value makes the condition not true, so the else branch runs;
            # an error runs neither branch.
            w.line(f"elif {var} is False:")
            w.indent()
            self.block(w, rule.orelse)
            w.dedent()
        return None

    def _guarded(self, w: Writer, rid: int, span: n.Span, cond: n.Expr, stmt: str) -> None:
        w.line("try:", span)
        w.indent()
        truth = self.host.exprs.truth(cond)
        if truth == "True":
            w.line(stmt, span)
        else:
            w.line(f"if {truth}:", span)
            w.indent()
            w.line(stmt, span)
            w.dedent()
        w.dedent()
        w.line("except Exception as exc:")
        w.indent()
        w.line(f"rt.error({rid}, exc)")
        w.dedent()

    # ------------------------------------------------------------ blocks

    def block(self, w: Writer, rules: tuple[n.Rule, ...]) -> None:
        """A sequence of rules: indexed when it pays, else one after another."""
        units: list[_Unit] = []
        plan = None
        if (
            self.optimize
            and not self._naive
            and (self.force or len(rules) >= MIN_INDEXED_BLOCK)
            and self._depth < MAX_INDEXED_DEPTH
        ):
            units = self._units(rules)
            min_group = 1 if self.force else indexing.MIN_GROUP
            plan = indexing.plan_block([u.analysis for u in units], min_group)
        if plan is None or not plan.indexes or not (self.force or _pays(plan, units)):
            for r in rules:
                self.rule(w, r)
            return
        self._depth += 1
        depth = self._depth
        leaves: list[Writer] = []
        payloads: dict[int, tuple[str, Any]] = {}
        for pos, unit in enumerate(units):
            leaf = Writer()
            payloads[pos] = self._unit(leaf, unit) or ("run", pos)
            leaves.append(leaf)
        self._depth -= 1

        todo, cursor = f"R{depth}", f"r{depth}"
        k = self.host.consts.add
        always = tuple(p for p in plan.always if units[p].kind != "whole")
        w.line(f"{todo} = list({k(always)})" if always else f"{todo} = []")
        for index in plan.indexes:
            self._lookup(w, index, indexing.build_table(index, payloads), todo)
        # A flattened `if` runs whole, as written, when its condition's fields hold
        # unexpected types (its parts then skip themselves).
        wholes: dict[tuple[str, ...], list[int]] = {}
        for pos, unit in enumerate(units):
            if unit.kind == "whole" and unit.guards:
                wholes.setdefault(self._guard_locals(unit.guards), []).append(pos)
        for guards, positions in wholes.items():
            w.line(f"if not ({' and '.join(guards)}):")
            w.indent()
            w.line(f"{todo} += {k(tuple(positions))}")
            w.dedent()
        w.line(f"{todo}.sort()")
        w.line(f"for {cursor} in {todo}:")
        w.indent()
        self._dispatch(w, cursor, list(range(len(units))), leaves)
        w.dedent()

    def _units(self, rules: tuple[n.Rule, ...]) -> list[_Unit]:
        """The block's items in rule order, `if` blocks with a pure condition opened up.

        The rules inside such an `if` become units of their own, indexed by
        the `if`'s keys and theirs together; evaluating the pure condition
        again in each (when its guards hold) is unobservable. The whole `if`
        stays as a unit too, run instead when those guards fail.
        """
        units: list[_Unit] = []
        for rule in rules:
            a = self._analysis(rule)
            if not isinstance(rule, n.IfBlock):
                units.append(_Unit("item", rule, a))
                continue
            cond = indexing.analyse(rule.condition, self.c.segments)
            if len(cond.prefix) < cond.total:
                units.append(_Unit("item", rule, a))
                continue
            guards = frozenset(
                (c.ref, c.guard) for c in cond.prefix if c.ref is not None and c.guard is not None
            )
            units.append(_Unit("whole", rule, None, guards=guards))
            negated = tuple(indexing.Conjunct(c.ref, c.guard) for c in cond.prefix)
            for branch, inner_rules, prefix in (
                ("then", rule.then, cond.prefix),
                ("else", rule.orelse, negated),
            ):
                for inner in inner_rules:
                    own = self._analysis(inner)
                    combined = indexing.Analysis(
                        prefix + (own.prefix if own else ()),
                        cond.total + (own.total if own else 1),
                    )
                    units.append(_Unit(branch, inner, combined, rule.condition, guards))
        return units

    def _unit(self, w: Writer, unit: _Unit) -> tuple[str, Any] | None:
        if unit.kind == "item":
            return self.rule(w, unit.rule)
        if unit.kind == "whole":
            # Only runs when a field holds an unexpected type: written as is, not indexed.
            self._naive += 1
            self.rule(w, unit.rule)
            self._naive -= 1
            return None
        assert unit.condition is not None
        guards = self._guard_locals(unit.guards)
        if guards:
            w.line(f"if {' and '.join(guards)}:")
            w.indent()
        truth = self.host.exprs.truth(unit.condition)
        w.line(f"if {truth}:" if unit.kind == "then" else f"if not {truth}:")
        w.indent()
        payload = self.rule(w, unit.rule)
        w.dedent()
        if guards:
            w.dedent()
        return payload

    def _guard_locals(self, guards: frozenset[tuple[n.Ref, indexing.Guard]]) -> tuple[str, ...]:
        ordered = sorted(guards, key=lambda g: (g[0].dotted, g[1]))
        return tuple(self._guard(ref, kind) for ref, kind in ordered)

    def _analysis(self, rule: n.Rule) -> indexing.Analysis | None:
        if isinstance(rule, n.IfBlock):
            # With an else branch, a false condition does something: never skip it.
            if rule.orelse:
                return None
            return indexing.analyse(rule.condition, self.c.segments)
        assert isinstance(rule, n.WhenRule | n.SuppressRule)
        return indexing.analyse(rule.condition, self.c.segments)

    def _lookup(self, w: Writer, index: indexing.Index, table: Any, todo: str) -> None:
        k = self.host.consts.add
        offers, suppress, runs = _bucket_parts(index, table)
        guards = [self._guard(ref, kind) for ref, kind in index.guards]
        if guards:
            w.line(f"if {' and '.join(guards)}:")
            w.indent()
        keys = [self.host.resolve(ref) for ref in index.keys]
        key = keys[0] if len(keys) == 1 else "(" + ", ".join(keys) + ")"
        if index.range is None:
            w.line(f"B = {k(table)}.get({key})")
            w.line("if B is not None:")
            w.indent()
        else:
            # The region of v among the sorted boundaries: see indexing._span.
            self.uses_bisect = True
            v = self.host.resolve(index.range)
            if index.keys:
                w.line(f"T = {k(table)}.get({key})")
                w.line(f"if T is not None and {v} is not None:")
                w.indent()
                w.line(f"B = T[1][bl(T[0], {v}) + br(T[0], {v})]")
            else:
                points, regions = table
                w.line(f"if {v} is not None:")
                w.indent()
                p = k(points)
                w.line(f"B = {k(regions)}[bl({p}, {v}) + br({p}, {v})]")
        if offers:
            self.sorts_offers = True
            w.line("O += B[0]")
        if suppress:
            w.line("S.update(B[1])")
        if runs:
            w.line(f"{todo} += B[2]")
        if not (offers or suppress or runs):
            w.line("pass")
        w.dedent()
        if guards:
            w.dedent()
            w.line("else:")
            w.indent()
            w.line(f"{todo} += {k(tuple(pos for pos, _ in index.members))}")
            w.dedent()

    def _guard(self, ref: n.Ref, kind: str) -> str:
        key = (ref.dotted, kind)
        if key not in self.guards:
            self.guards[key] = (f"_g{len(self.guards)}", ref)
        return self.guards[key][0]

    def _dispatch(self, w: Writer, var: str, positions: list[int], leaves: list[Writer]) -> None:
        """Binary search on the item position down to that item's code."""
        if len(positions) == 1:
            w.splice(leaves[positions[0]])
            return
        mid = len(positions) // 2
        w.line(f"if {var} < {positions[mid]}:")
        w.indent()
        self._dispatch(w, var, positions[:mid], leaves)
        w.dedent()
        w.line("else:")
        w.indent()
        self._dispatch(w, var, positions[mid:], leaves)
        w.dedent()

    # ------------------------------------------------------------ shared predicates

    def _share_predicates(self) -> None:
        conditions = [s.expr for s in self.c.segments.values()]
        conditions += [r.condition for r in _walk(self.c.rules)]
        memo = {p: f"q{i}" for i, p in enumerate(shared_predicates(conditions))}
        self.host.exprs.memo = memo
        self.memos = list(memo.values())


def _pays(plan: indexing.BlockPlan, units: list[_Unit]) -> bool:
    """Whether the indexed layout of a block is expected to beat testing its rules in turn."""
    skipped = sum(len(index.members) for index in plan.indexes)
    always = sum(1 for p in plan.always if units[p].kind != "whole")
    cost = COST_SETUP + COST_LOOKUP * len(plan.indexes) + COST_DISPATCH * always
    return skipped * COST_TEST > cost


def _bucket_parts(index: indexing.Index, table: Any) -> tuple[bool, bool, bool]:
    """Whether any bucket of a table has offers, suppressions, items to run."""
    if index.range is None:
        buckets: list[indexing.Bucket] = list(table.values())
    elif index.keys:
        buckets = [b for _, regions in table.values() for b in regions]
    else:
        buckets = list(table[1])
    return (
        any(b[0] for b in buckets),
        any(b[1] for b in buckets),
        any(b[2] for b in buckets),
    )


def _walk(rules: tuple[n.Rule, ...]) -> Iterator[n.WhenRule | n.SuppressRule | n.IfBlock]:
    for rule in rules:
        assert isinstance(rule, n.WhenRule | n.SuppressRule | n.IfBlock)
        yield rule
        if isinstance(rule, n.IfBlock):
            yield from _walk(rule.then)
            yield from _walk(rule.orelse)

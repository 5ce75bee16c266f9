"""Probes: a ruleset's conditions compiled part by part, for explanations.

The evaluator (`Plan.evaluate`) says which rules fired and nothing else. To
say why a rule did NOT fire, `engine.codegen.probes` generates, with the same
expression compiler as the evaluator (the same truth and falsity code, the
same three-valued logic), one function per condition — every segment, every
`if`, every `when` and `suppress` rule — that evaluates each PART of it: the
whole condition, each operand of an `and`/`or`, each `not`, each comparison,
and the value of each operand a comparison reads. `engine.decision.why_not`
only reads, ranks and presents what they return.

A probe function is called as `run(P, C, A, rt, SEG, M)`: the profile and
context the decision read, the aggregates in `Probes.aggregates` order, the
decision's `EvalRuntime`, the segment values the evaluator computed (in
declaration order) and the model scores it computed (by model index; a model
the decision did not need is never called: it reads as missing; one whose
input row raised is `UNSET`, so the part asks again and fails as the rule did). It returns
`(truths, values)`: per part in `parts` order, `True`, `False`, `None`
(unknown: a missing value) or `runtime.Failed` (the part raised, as the rule
would have); per leaf operand, its value (or `Failed`).

Probes are generated the first time a plan explains (`Plan.probes()`), so the
hot path and compile time are untouched.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from arbiter.dsl import nodes as n

#: A compiled probe: (P, C, A, rt, SEG, M) -> (truth per part, value per leaf operand).
ProbeFn = Callable[..., tuple[list[Any], list[Any]]]


@dataclass(frozen=True, slots=True)
class Part:
    """One part of a condition: the whole, an operand of `and`/`or`/`not`, or a leaf."""

    expr: n.Expr
    #: The parts of an `and`, `or` or `not`, by index in `Probe.parts`; () for a leaf.
    children: tuple[int, ...]
    #: A leaf's operands that are not literals: (source text, index in the values list).
    operands: tuple[tuple[str, int], ...]


@dataclass(frozen=True, slots=True)
class Probe:
    """One condition's parts in preorder (`parts[0]` is the whole) and its compiled function."""

    parts: tuple[Part, ...]
    run: ProbeFn


@dataclass(frozen=True, slots=True)
class RuleProbe:
    """A `when` or `suppress` rule: its plan rule id, the `if`s on its way, its condition."""

    rule_id: int
    rule: n.WhenRule | n.SuppressRule
    #: The enclosing `if`s, outermost first: (index in `Probes.ifs`, branch taken).
    path: tuple[tuple[int, bool], ...]
    condition: Probe


@dataclass(frozen=True)
class Probes:
    """Every condition of a plan, probed; built once per plan, on first use."""

    #: `AggregateSpec.key`s in the order probe functions read their `A` tuple.
    aggregates: tuple[str, ...]
    segments: Mapping[str, Probe]
    ifs: tuple[Probe, ...]
    #: Every `when` and `suppress` rule, in source order (depth first).
    rules: tuple[RuleProbe, ...]
    #: The generated Python, for debugging and golden tests.
    source: str

"""Why not, from the engine: the probes agree with the evaluator, rule by rule.

A differential, property-based test (hypothesis) over every example ruleset
(`rulesets/*.rules`) and every ruleset of `tests/cases` that compiles, in the
three layouts of the evaluator (indexed where it pays, indexed everywhere,
rule by rule). Generated profiles, contexts, aggregates, contact counts,
model scores, clocks and customers — mostly well typed, often on a literal's
boundary, sometimes missing or of a hostile type — go through the compiled
`Plan.evaluate`, then through the plan's probes (`engine.probes`, read by
`engine.decision.why_not.WhyNot`). For every `when` rule, the probes' `if`s
and conjunct truths combine to exactly whether the evaluator fired it; for
every action, a `suppress` rule holds exactly when the evaluator suppressed
it; every segment's probe gives the value the evaluator computed; every
`and`/`or`/`not` part is the three-valued combination of its own parts; and
a rule has a culprit exactly when it did not fire.
"""

from __future__ import annotations

import math
from functools import cache
from pathlib import Path
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support.paths import CASES_DIR, ROOT_DIR

from arbiter import dsl
from arbiter.dsl import nodes as n
from arbiter.dsl import types as t
from arbiter.dsl.errors import ArbiterError
from arbiter.engine.codegen import compiler
from arbiter.engine.decision.decide import assign_variant, decide
from arbiter.engine.decision.literal_inputs import normalize_values
from arbiter.engine.decision.runtime import EvalRuntime, Failed
from arbiter.engine.decision.scenarios import DEFAULT_NOW, ScenarioOracle, scenario_inputs
from arbiter.engine.decision.why_not import WhyNot
from arbiter.engine.plan import Plan
from arbiter.engine.probes import Probe
from arbiter.engine.records import DecideRequest, Inputs

NOW = 1_795_000_000.0  # 2026-11-18
DAY = 86400.0
FILES = sorted(
    [
        *(ROOT_DIR / "rulesets").glob("*.rules"),
        *(
            p
            for p in CASES_DIR.glob("*/*.rules")
            if p.parent.name not in ("bad", "messages")  # those do not compile, on purpose
        ),
    ]
)
LAYOUTS = ("default", "forced", "naive")


@cache
def plan_of(path: Path, layout: str) -> Plan:
    checked = dsl.load_checked(path)
    if layout == "forced":
        # Every block indexed, however small: the layout that differs most from the probes'.
        return compiler._build(checked, compiler.content_hash(checked), True, force=True)
    return compiler.compile_plan(checked, optimize=layout == "default")


@cache
def literals_of(path: Path) -> tuple[list[float], list[str], list[float]]:
    """Numbers, strings and durations the ruleset's conditions, scenarios and models name."""
    c = plan_of(path, "default").checked
    numbers: set[float] = {0.0, 1.0}
    strings: set[str] = {"", "x"}
    durations: set[float] = {0.0, DAY}
    stack: list[Any] = [s.expr for s in c.segments.values()]
    stack += [e for m in c.models.values() for e in m.inputs]
    stack.append(c.rules)
    for sc in c.scenarios:
        strings.update(
            v for v in (*sc.profile.values(), *sc.context.values()) if isinstance(v, str)
        )
    while stack:
        node = stack.pop()
        if isinstance(node, tuple | list):
            stack.extend(node)
        elif isinstance(node, n.Number) and math.isfinite(node.value):
            numbers.add(float(node.value))
        elif isinstance(node, n.Percent):
            numbers.add(node.fraction)
        elif isinstance(node, n.String):
            strings.add(node.value)
        elif isinstance(node, n.Duration):
            durations.add(node.seconds)
        elif isinstance(node, n.TimeLit):
            durations.add(NOW - node.epoch)
        elif isinstance(node, n.Expr | n.Rule):
            stack.extend(getattr(node, f) for f in node.__dataclass_fields__ if f not in ("span",))
    return sorted(numbers), sorted(strings), sorted(durations)


HOSTILE = st.sampled_from([float("nan"), float("inf"), [1], "7", 3, True, "", ["DE"]])


def value_of(
    ty: t.Type, numbers: list[float], strings: list[str], durations: list[float], hostile: bool
) -> Any:
    """A strategy of values for one declared field (`hostile`: sometimes of another type)."""
    near = st.sampled_from(numbers).flatmap(
        lambda x: st.sampled_from([x, x + 1, x - 1, x + 0.5, x - 0.5, int(x)])
    )
    if ty.kind == "number":
        typed: st.SearchStrategy[Any] = st.one_of(near, st.integers(-5, 5000))
    elif ty.kind == "enum":
        typed = st.sampled_from(ty.members)
    elif ty.kind == "string":
        zones = ["Europe/Paris", "America/New_York", "Asia/Tokyo", "Not/AZone"]
        typed = st.one_of(st.sampled_from([*strings, *zones]), st.text(max_size=4))
    elif ty.kind == "bool":
        typed = st.booleans()
    elif ty.kind == "time":
        ago = st.sampled_from(durations).flatmap(
            lambda d: st.sampled_from([d, d + 3600, d - 3600, -d])
        )
        typed = st.one_of(ago, st.floats(-400 * DAY, 400 * DAY)).map(lambda d: NOW - d)
    elif ty.kind == "set":
        typed = st.lists(st.sampled_from([*strings, "email", "sms", "push"]), max_size=3)
    else:
        typed = st.sampled_from(strings)
    return st.one_of(st.none(), typed, typed, typed, *([HOSTILE] if hostile else []))


@cache
def seeds_of(path: Path) -> list[dict[str, Any]]:
    """The ruleset's own scenarios as inputs: customers its rules were written to catch."""
    plan = plan_of(path, "default")
    out = []
    for sc in plan.checked.scenarios:
        now = sc.now if sc.now is not None else DEFAULT_NOW
        try:
            inputs = scenario_inputs(plan, sc, now)
            context = normalize_values(plan.checked.context, sc.context, "context.")
        except ArbiterError:
            continue  # a scenario about a refused value
        scores = {k: v for k, v in sc.scores.items() if isinstance(v, int | float)}
        out.append(
            {
                "profile": dict(inputs.profile),
                "context": context,
                "aggregates": dict(inputs.aggregates),
                "caps": dict(inputs.caps),
                "scores": scores,
                "now": now,
            }
        )
    return out


@st.composite
def decision_inputs(draw: st.DrawFn, path: Path, hostile: bool = True) -> dict[str, Any]:
    """A decision's inputs: fresh, or one of the ruleset's scenarios with some values changed.

    `hostile`: values of another type than declared, as validation (HTTP, CLI) would refuse
    them, sometimes reach the evaluator too (its semantics for them are still defined)."""
    plan = plan_of(path, "default")
    numbers, strings, durations = literals_of(path)
    c = plan.checked
    seeds = seeds_of(path)
    base = draw(st.sampled_from(seeds)) if seeds and draw(st.booleans()) else None

    def keep(part: str, key: str) -> tuple[bool, Any]:
        """Whether to keep the scenario's value (absent: left out) for this key."""
        if base is None or draw(st.integers(0, 3)) == 0:
            return False, None
        return True, base[part].get(key)

    def record(part: str, schema: dict[str, t.Type]) -> dict[str, Any]:
        out = {}
        for name, ty in schema.items():
            kept, value = keep(part, name)
            if not kept:
                value = draw(value_of(ty, numbers, strings, durations, hostile))
            if value is not None:
                out[name] = value
        return out

    now = base["now"] if base is not None else NOW
    aggregates = {}
    for spec in plan.needs.aggregates:
        kept, value = keep("aggregates", spec.key)
        if kept:
            aggregates[spec.key] = value
        elif spec.fn == "last":
            aggregates[spec.key] = draw(
                st.one_of(st.none(), st.sampled_from(durations).map(lambda d: now - d))
            )
        else:
            aggregates[spec.key] = draw(
                st.one_of(st.none(), st.sampled_from(numbers), st.integers(0, 6).map(float))
            )
    caps = {}
    for key, _ in plan.needs.capped_actions:
        kept, value = keep("caps", key)
        caps[key] = value if kept and value is not None else draw(st.integers(0, 3))
    scores = {}
    for name, m in c.models.items():
        kept, value = keep("scores", name)
        if not kept and not m.per_action:
            value = draw(st.one_of(st.none(), st.floats(0, 1)))
        if value is not None:
            scores[name] = value
    shift = 0.0 if base is not None else draw(st.sampled_from([0.0, 3 * 3600.0, -13 * 3600.0]))
    return {
        "profile": record("profile", c.profile),
        "context": record("context", c.context),
        "aggregates": aggregates,
        "caps": caps,
        "degraded": draw(st.booleans()) and draw(st.booleans()),
        "scores": scores,
        "now": now + shift,
        "customer": draw(st.sampled_from(["c1", "c2", "c3", "c4"])),
    }


def kleene(op: str, truths: list[Any]) -> Any:
    """Three-valued `and`/`or` (None unknown), as the language defines them."""
    decisive = op == "or"
    if decisive in truths:
        return decisive
    return None if None in truths else not decisive


def check_parts(why: WhyNot, probe: Probe) -> None:
    """Every `and`/`or`/`not` part is the three-valued combination of its parts."""
    truths, _ = why.outcome(probe)
    assert len(truths) == len(probe.parts)
    for part, got in zip(probe.parts, truths, strict=True):
        below = [truths[i] for i in part.children]
        if not below or isinstance(got, Failed) or any(isinstance(b, Failed) for b in below):
            continue
        if isinstance(part.expr, n.BoolOp):
            assert got is kleene(part.expr.op, below), part.expr
        else:
            assert got is (None if below[0] is None else not below[0]), part.expr


def check_agreement(plan: Plan, data: dict[str, Any]) -> tuple[int, int]:
    """Asserts the probes agree with the evaluator; returns (rules fired, rules not fired)."""
    c = plan.checked
    P, C, agg = data["profile"], data["context"], data["aggregates"]
    A = tuple(agg.get(spec.key) for spec in plan.needs.aggregates)
    variants = tuple(assign_variant(plan, x, data["customer"]) for x in c.experiments)
    oracle = ScenarioOracle(data["scores"], plan)
    rt = EvalRuntime(
        plan, data["now"], variants, oracle, P, C, A, caps=data["caps"], degraded=data["degraded"]
    )
    offers, suppressed, segments = plan.evaluate(P, C, A, rt)
    probes = plan.probes()
    why = WhyNot(probes, P, C, agg, rt, segments)

    for k, (name, probe) in enumerate(probes.segments.items()):
        check_parts(why, probe)
        top = why.outcome(probe)[0][0]
        assert segments[k] is (None if isinstance(top, Failed) else top), name
    for probe in probes.ifs:
        check_parts(why, probe)

    fired_ids = {o.rule for o in offers}
    suppressing: dict[int, bool] = {}
    fired = missed = 0
    for rp in probes.rules:
        assert plan.rules[rp.rule_id].span == rp.rule.span
        check_parts(why, rp.condition)
        fires = why.fires(rp)
        assert (why.culprit(rp) is None) == fires, rp.rule
        assert (why.misses(rp) == 0) == fires, rp.rule
        if isinstance(rp.rule, n.WhenRule):
            assert fires == (rp.rule_id in fired_ids), (plan.rules[rp.rule_id], data)
            fired += fires
            missed += not fires
        else:
            index = plan.action_index[rp.rule.action]
            suppressing[index] = suppressing.get(index, False) or fires
    assert {i for i, s in suppressing.items() if s} == suppressed, data
    return fired, missed


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("path", FILES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_probes_agree_with_the_evaluator(path: Path, layout: str) -> None:
    plan = plan_of(path, layout)
    seen = [0, 0]

    @settings(
        max_examples=60 if layout == "default" else 25,
        derandomize=True,
        database=None,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow],
    )
    @given(decision_inputs(path))
    def agree(data: dict[str, Any]) -> None:
        fired, missed = check_agreement(plan, data)
        seen[0] += fired
        seen[1] += missed

    agree()
    whens = sum(isinstance(rp.rule, n.WhenRule) for rp in plan.probes().rules)
    # The inputs exercise both outcomes wherever rules can go both ways.
    assert seen[0] > 0 or whens == 0 or layout != "default"
    assert seen[1] > 0 or all(
        isinstance(rp.rule.condition, n.Bool) and not rp.path
        for rp in plan.probes().rules
        if isinstance(rp.rule, n.WhenRule)
    )


@pytest.mark.parametrize("path", FILES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_explaining_changes_nothing_in_the_decision(path: Path) -> None:
    """Probes read what the decision computed and score no model: same answer, same record."""
    plan = plan_of(path, "default")
    encode = msgspec.json.Encoder().encode

    @settings(max_examples=20, derandomize=True, database=None, deadline=None)
    @given(decision_inputs(path, hostile=False))
    def alike(data: dict[str, Any]) -> None:
        # Validated as HTTP and the CLI validate (a decision never sees anything else).
        profile = normalize_values(plan.checked.profile, data["profile"], "profile.")
        context = normalize_values(plan.checked.context, data["context"], "context.")
        inputs = Inputs(profile, data["aggregates"], data["caps"], {}, data["degraded"])
        out = []
        for explain in (False, True):
            request = DecideRequest(data["customer"], context, limit=3, explain=explain)
            oracle = ScenarioOracle(data["scores"], plan)
            decision, record = decide(
                plan, request, inputs, decision_id="d-1", now=data["now"], oracle=oracle
            )
            # Everything but the request's own `explain` flag, which the record keeps.
            asked = msgspec.structs.replace(record.request, explain=False)
            record = msgspec.structs.replace(record, request=asked)
            out.append((encode(decision.actions), encode(record)))
        assert out[0] == out[1]

    alike()

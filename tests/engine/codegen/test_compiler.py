"""engine.codegen.compiler: the indexed evaluator against the naive one, golden source, safety.

The differential tests are data: every `tests/cases/compiler/*.rules` file and
a generated 400-rule ruleset (the benchmark's shape) are compiled twice, with
`optimize=True` and `optimize=False`, and run on the same seeded random
profiles and contexts, including values of the wrong type, NaN, lists and
values sitting exactly on the literals' boundaries. Offers (in order),
suppressions, segments, errors (in order), model calls and whole decisions
must be identical.

Regenerate the golden file with `ARBITER_UPDATE_GOLDEN=1 pytest tests/test_compiler.py`.
"""

from __future__ import annotations

import ast
import json
import math
import os
import random
import re
import subprocess
import sys
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
import pytest
from support.paths import CASES_DIR, ROOT_DIR

from arbiter import dsl, engine
from arbiter.dsl import nodes as n
from arbiter.dsl import types as t
from arbiter.engine.codegen import compiler
from arbiter.engine.decision.decide import EvalRuntime
from arbiter.engine.decision.oracle import LiveOracle
from arbiter.engine.plan import Plan
from arbiter.engine.records import DecideRequest, Inputs
from benchmarks.rules_scaling import generate

CASES = CASES_DIR / "compiler"
ROOT = ROOT_DIR
NOW = 1_795_000_000.0  # 2026-11-18T…Z: a fixed "now" for days_since and validity dates


# ----------------------------------------------------------------- helpers


class FakeScorer:
    """A deterministic stand-in for an ONNX model: fails on rows that are not numbers."""

    version = "test-1"

    def score(self, rows: list[list[float]]) -> list[float]:
        return [math.fmod(abs(sum(row)) * 0.37, 1.0) for row in rows]


def oracle_for(plan: Plan) -> LiveOracle:
    return LiveOracle({name: FakeScorer() for name in plan.model_names}, {})


def checked(text: str, filename: str = "case.rules") -> dsl.CheckedRuleset:
    return dsl.check(dsl.parse(text, filename))


def case_texts() -> dict[str, str]:
    texts = {p.name: p.read_text(encoding="utf-8") for p in sorted(CASES.glob("*.rules"))}
    texts["generated-400"] = generate(400, seed=3).text
    return texts


CASE_TEXTS = case_texts()


def forced(c: dsl.CheckedRuleset) -> Plan:
    """Every block indexed, however small (what compile_plan does only where it pays).

    Built outside the plan cache, so no other test ever gets this layout by accident.
    """
    return compiler._build(c, compiler.content_hash(c), True, force=True)


def plans(name: str) -> tuple[Plan, Plan, Plan]:
    """(compile_plan's plan, the forced indexed plan, the naive plan) of a case."""
    c = checked(CASE_TEXTS[name], name)
    return engine.compile_plan(c), forced(c), engine.compile_plan(c, optimize=False)


def indexed(source: str) -> bool:
    """Whether generated source looks values up in index tables."""
    return re.search(r"B = K\[\d+\]\.get\(", source) is not None and "for r1 in R1:" in source


def _literals(c: dsl.CheckedRuleset) -> tuple[list[float], list[str]]:
    """Every number and string literal in the rules and segments: boundary values."""
    numbers: set[float] = set()
    strings: set[str] = set()
    stack: list[Any] = [s.expr for s in c.segments.values()]
    rules: list[n.Rule] = list(c.rules)
    while rules:
        r = rules.pop()
        stack.append(r.condition)  # type: ignore[attr-defined]
        if isinstance(r, n.IfBlock):
            rules += [*r.then, *r.orelse]
    while stack:
        e = stack.pop()
        if isinstance(e, n.Number) and math.isfinite(e.value):
            numbers.add(e.value)
        elif isinstance(e, n.String):
            strings.add(e.value)
        for attr in ("left", "right", "operand", "low", "high"):
            if hasattr(e, attr):
                stack.append(getattr(e, attr))
        for attr in ("items", "operands", "args"):
            if hasattr(e, attr):
                stack.extend(getattr(e, attr))
    return sorted(numbers), sorted(strings)


@dataclass
class ValueMaker:
    """Random field values: mostly well typed, often on a literal's boundary, sometimes hostile."""

    rnd: random.Random
    numbers: list[float]
    strings: list[str]

    def hostile(self) -> Any:
        return self.rnd.choice(
            [None, float("nan"), float("inf"), [1], {"a": 1}, "7", 3, True, "", ["DE"]]
        )

    def number(self) -> Any:
        if self.numbers and self.rnd.random() < 0.6:
            x = self.rnd.choice(self.numbers)
            return self.rnd.choice([x, x + 1, x - 1, x + 0.5, x - 0.5, int(x), float(x)])
        return self.rnd.choice([0, 1, 2, 3, 5, 10, 120, 999.5, 2500, 1e6, -4, True, False])

    def string(self) -> Any:
        if self.strings and self.rnd.random() < 0.7:
            return self.rnd.choice(self.strings)
        return self.rnd.choice(["Dr Who", "Mr X", "zzz", "(", "^ho", "c.rt", "[", "home"])

    def value(self, ty: t.Type) -> Any:
        roll = self.rnd.random()
        if roll < 0.08:
            return self.hostile()
        if ty.kind == "number":
            return self.number()
        if ty.kind == "enum":
            return self.rnd.choice([*ty.members, *ty.members, "other"])
        if ty.kind == "string":
            return self.string()
        if ty.kind == "bool":
            return self.rnd.choice([True, False, 1, 0, 1.0])
        if ty.kind == "time":
            return NOW - self.rnd.choice([0, 5, 15, 45, 400]) * 86400.0
        if ty.kind == "set":
            return self.rnd.sample(["email", "sms", "push", "web"], self.rnd.randint(0, 3))
        return self.string()

    def record(self, schema: dict[str, t.Type]) -> dict[str, Any]:
        return {k: self.value(ty) for k, ty in schema.items() if self.rnd.random() > 0.1}


def random_inputs(plan: Plan, count: int, seed: int) -> Iterator[tuple[dict[str, Any], ...]]:
    c = plan.checked
    numbers, strings = _literals(c)
    maker = ValueMaker(random.Random(seed), numbers, strings)
    for _ in range(count):
        aggregates = {
            spec.key: maker.rnd.choice([None, 0, 1, 3, 2.5]) for spec in plan.needs.aggregates
        }
        yield maker.record(c.profile), maker.record(c.context), aggregates


def run_evaluate(plan: Plan, P: dict[str, Any], C: dict[str, Any], agg: dict[str, Any]) -> Any:
    A = tuple(agg.get(spec.key) for spec in plan.needs.aggregates)
    oracle = oracle_for(plan)
    rt = EvalRuntime(plan, NOW, (), oracle, P, C, A)
    offers, suppressed, segments = plan.evaluate(P, C, A, rt)
    return offers, suppressed, segments, rt.errors, oracle.scores


# ----------------------------------------------------------------- differential


@pytest.mark.parametrize("name", sorted(CASE_TEXTS))
def test_indexed_evaluator_equals_naive_one(name: str) -> None:
    opt, force, naive = plans(name)
    assert opt is not naive and opt.hash == naive.hash == force.hash
    fired = errors = 0
    for P, C, agg in random_inputs(opt, 600, seed=zlib.crc32(name.encode())):
        want = run_evaluate(naive, P, C, agg)
        for plan in (opt, force):
            # NaN != NaN, so compare reprs: same values, same order, same error text.
            assert repr(run_evaluate(plan, P, C, agg)) == repr(want), (P, C, agg)
        fired += len(want[0])
        errors += len(want[3])
    # The inputs must exercise something: offers fire, and (edge case) errors happen.
    assert fired > 100
    if name == "edge.rules":
        assert errors > 20


@pytest.mark.parametrize("name", sorted(CASE_TEXTS))
def test_indexed_and_naive_plans_decide_alike(name: str) -> None:
    opt, force, naive = plans(name)
    encode = msgspec.json.Encoder().encode
    for i, (P, C, agg) in enumerate(random_inputs(opt, 150, seed=9)):
        request = DecideRequest(f"cust-{i}", C, limit=3, explain=True)
        out = []
        for plan in (opt, force, naive):
            decision, record = engine.decide(
                plan,
                request,
                Inputs(profile=P, aggregates=agg),
                decision_id=f"d-{i}",
                now=NOW,
                oracle=oracle_for(plan),
            )
            out.append(encode(decision) + b"\n" + encode(record))
        assert out[0] == out[2] and out[1] == out[2]


def test_the_optimized_plans_really_index() -> None:
    """Guards the differential tests against comparing the naive layout with itself."""
    for name in CASE_TEXTS:
        _, force, naive = plans(name)
        assert indexed(force.source) and not indexed(naive.source), name
    opt, _, naive = plans("generated-400")
    assert indexed(opt.source) and "bl(" in opt.source
    # A decision runs a handful of rules, not all of them: count the code paths taken.
    P = {"country": "DE", "tier": "gold", "ltv": 1500.0, "orders_90d": 4, "visits_30d": 2}
    C = {"channel": "web", "page": "home", "category": "c00001", "device": "mobile"}
    hits: list[int] = []
    rt = EvalRuntime(opt, NOW, (), oracle_for(opt), P, C, ())

    def tracer(frame: Any, event: str, arg: Any) -> Any:
        if event == "line" and frame.f_code.co_name == "evaluate":
            hits.append(frame.f_lineno)
        return tracer

    sys.settrace(tracer)
    try:
        opt.evaluate(P, C, (), rt)
    finally:
        sys.settrace(None)
    assert len(hits) < 200 < len(naive.source.splitlines())


def test_unusual_value_types_fall_back_to_rule_by_rule() -> None:
    """A list where a string is expected raises in `in [...]` tests, one error per rule."""
    _, force, naive = plans("edge.rules")
    P = {"country": ["DE"], "ltv": float("nan"), "orders": "3"}
    C = {"category": "bags", "channel": "email", "page": "cart"}
    got, want = run_evaluate(force, P, C, {}), run_evaluate(naive, P, C, {})
    assert repr(got) == repr(want)
    assert any("unhashable type: 'list'" in e for e in want[3])


# ----------------------------------------------------------------- golden source

GOLDEN_RULES = CASES / "golden.rules"
GOLDEN = {"default": CASES / "golden.py.golden", "forced": CASES / "golden.forced.py.golden"}


@pytest.mark.parametrize("layout", sorted(GOLDEN))
def test_generated_source_matches_golden_file(layout: str) -> None:
    c = dsl.load_checked(GOLDEN_RULES)
    source = (forced(c) if layout == "forced" else engine.compile_plan(c)).source
    path = GOLDEN[layout]
    if os.environ.get("ARBITER_UPDATE_GOLDEN"):
        path.write_text(source, encoding="utf-8")
    assert source == path.read_text(encoding="utf-8")
    # The forced file pins the indexed layout; the default one the layout small rulesets get.
    assert indexed(source) is (layout == "forced")
    if layout == "forced":
        assert "bl(" in source and "if not (_g0):" in source


def test_generated_source_is_identical_across_processes() -> None:
    script = (
        "import sys\n"
        "from arbiter import dsl, engine\n"
        "from arbiter.engine.codegen import compiler\n"
        "c = dsl.load_checked(sys.argv[1])\n"
        "sys.stdout.write(engine.compile_plan(c).source)\n"
        "sys.stdout.write(compiler._build(c, compiler.content_hash(c), True, force=True).source)\n"
    )
    outputs = []
    for seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        done = subprocess.run(
            [sys.executable, "-c", script, str(CASES / "edge.rules")],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        )
        outputs.append(done.stdout)
    assert outputs[0] == outputs[1]
    assert outputs[0].count("def evaluate(P, C, A, rt):") == 2 and "for r1 in R1:" in outputs[0]


# ----------------------------------------------------------------- literals are data

INJECTION = "\"'); __import__('os').system('touch {marker}'); ('\""


def test_string_literals_never_become_code(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    # Both quote kinds, so that pasting it into either kind of Python string would break out.
    value = INJECTION.format(marker=marker)
    literal = json.dumps(value)
    text = f"""
ruleset injection
profile {{ name: string, country: string, a: string, b: string, c: string, d: string }}
context {{ channel: one of [web, app] }}
segment odd = profile.name == {literal}
action shout {{ value 1, payload {{ "text": {literal}, {literal}: "key" }} }}
action other {{ value 1 }}
when odd offer shout
when profile.country == {literal} offer shout
when profile.a == {literal} and profile.b == "x" offer other
when profile.a == {literal} and profile.b == "y" offer other
when profile.a == {literal} and profile.b == "z" offer other
when profile.c in [{literal}, "q"] and profile.d == "x" offer other
"""
    c = checked(text, "injection.rules")
    for plan in (engine.compile_plan(c), forced(c), engine.compile_plan(c, optimize=False)):
        # The literal reaches the source only inside a string constant (or in K).
        tree = ast.parse(plan.source)
        calls = [
            node.func.id
            for node in ast.walk(tree)
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
        ]
        assert "__import__" not in calls
        constants = [node.value for node in ast.walk(tree) if isinstance(node, ast.Constant)]
        assert value in constants
        P = {"name": value, "country": value, "a": value, "b": "z", "c": value, "d": "x"}
        decision, _ = engine.decide(
            plan,
            DecideRequest("c1", {"channel": "web"}, limit=2, explain=True),
            Inputs(profile=P),
            decision_id="d1",
            now=NOW,
            oracle=oracle_for(plan),
        )
        assert not marker.exists()
        assert decision.explanation is not None
        assert decision.explanation["segments"] == {"odd": True}
        assert decision.explanation["errors"] == []
        fired = sorted(f["rule"] for f in decision.explanation["fired"])
        assert fired == sorted(f"injection.rules:{line}:1" for line in (8, 9, 12, 13))
        shout = next(a for a in decision.actions if a.action == "shout")
        assert shout.payload == {"text": value, value: "key"}


# ----------------------------------------------------------------- run-time errors

ERRORS = """ruleset errors
profile { ltv: number, orders: int, pattern: string, name: string, country: string }
context { page: string, category: string }
action a { value 1 }
action b { value 2 }
action c { value 3 }
action d { value 4 }
when context.category == "x" and profile.ltv / profile.orders > 10 offer a
when context.category == "x" and context.page matches profile.pattern offer b
when context.category == "x" and profile.name starts with "Dr" offer c
when context.category == "x" and profile.country == "DE" offer d
when context.category == "y" and profile.ltv / profile.orders > 10 offer a
when context.category == "y" and profile.country == "DE" offer d
"""


@pytest.mark.parametrize("layout", ["indexed", "naive"])
def test_runtime_errors_fail_one_rule_and_name_its_line(layout: str) -> None:
    c = checked(ERRORS, "errors.rules")
    plan = forced(c) if layout == "indexed" else engine.compile_plan(c, optimize=False)
    assert indexed(plan.source) is (layout == "indexed")
    P = {"ltv": 100, "orders": 0, "pattern": "(unclosed", "name": 42, "country": "DE"}
    decision, record = engine.decide(
        plan,
        DecideRequest("c1", {"page": "home", "category": "x"}, limit=4, explain=True),
        Inputs(profile=P),
        decision_id="d1",
        now=NOW,
        oracle=oracle_for(plan),
    )
    assert [a.action for a in decision.actions] == ["d"]
    errors = record.errors
    assert len(errors) == 3
    assert errors[0].startswith("errors.rules:8:1: ZeroDivisionError: division by zero in `when")
    assert errors[1].startswith("errors.rules:9:1: error: missing ), unterminated subpattern")
    assert errors[2].startswith("errors.rules:10:1: AttributeError: 'int' object has no attribute")
    assert decision.explanation is not None and decision.explanation["errors"] == errors


# ----------------------------------------------------------------- cache and limits


def test_compile_cache_is_keyed_by_text_layout_and_compiler_version(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    text = CASE_TEXTS["edge.rules"]
    first = engine.compile_plan(checked(text))
    assert engine.compile_plan(checked(text)) is first
    changed = engine.compile_plan(checked(text.replace("value 5", "value 6")))
    assert changed is not first and changed.hash != first.hash
    naive = engine.compile_plan(checked(text), optimize=False)
    assert naive is not first and naive.hash == first.hash
    monkeypatch.setattr(compiler, "COMPILER_VERSION", "test-version")
    rebuilt = engine.compile_plan(checked(text))
    assert rebuilt is not first and rebuilt.hash != first.hash


def test_code_that_would_explode_is_a_rules_error_not_a_hang() -> None:
    """A condition used as a value carries its truth and falsity code: 4x per level."""
    expr = "profile.x > 1"
    for _ in range(30):
        expr = f"({expr}) == true"
    text = f"ruleset deep\nprofile {{ x: number }}\naction a {{ value 1 }}\nwhen {expr} offer a\n"
    for optimize in (True, False):
        with pytest.raises(dsl.RulesError) as info:
            engine.compile_plan(checked(text, "deep.rules"), optimize=optimize)
        assert info.value.first.code == "too-complex"
        assert info.value.first.span.file == "deep.rules" and info.value.first.span.line == 4


def test_nesting_deeper_than_the_parser_allows_is_a_rules_error() -> None:
    deep = "profile.x + (" * 120 + "1" + ")" * 120
    text = (
        f"ruleset deep\nprofile {{ x: number }}\naction a {{ value 1 }}\nwhen {deep} > 1 offer a\n"
    )
    with pytest.raises(dsl.RulesError) as info:
        dsl.parse(text, "deep.rules")
    assert info.value.first.code == "too-complex"
    assert info.value.first.span.line == 4

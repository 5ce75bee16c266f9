"""The studio's heavy work, run in a worker process of `pool.JobPool`.

Each function takes plain picklable values (the draft's text and path, the
inputs read from Redis by the server) and returns JSON-ready values, or a
`Refusal` when the request cannot be served. The compiled ruleset never
crosses the process boundary: the worker rebuilds it from its text
(`workbench.compiled`, cached by text), so the server sends text, never a
Plan. Redis stays in the server: a step that needs stored customers first
asks the worker what the draft reads (`Needs`), the server fetches it, and a
second step in the same worker decides with it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import msgspec

from arbiter import dsl
from arbiter.engine.decision.decide import decide
from arbiter.engine.decision.scenarios import run_scenarios, scenario_inputs
from arbiter.engine.decision.simulate import changes, simulate
from arbiter.engine.plan import Needs
from arbiter.engine.records import ENCODER, DecideRequest, Inputs
from arbiter.engine.validate import ValueProblem, normalize_all
from arbiter.server.rulesets import LiveRuleset, Resources
from arbiter.server.state import new_decision_id
from arbiter.server.studio import workbench as wb
from arbiter.server.studio.pool import Refusal

#: A draft: its path (includes and models resolve next to it), its text, the model loader.
Draft = tuple[str, str, Resources | None]
Population = list[tuple[str, Inputs]]


def invalid(exc: dsl.RulesError, field: str = "text") -> Refusal:
    """`422 rules_invalid` with the diagnostics, for the field that holds the text."""
    diagnostics = [wb.diagnostic_json(d) for d in exc.diagnostics]
    return Refusal(422, "rules_invalid", exc.format(), field, {"diagnostics": diagnostics})


def _build(draft: Draft, field: str = "text") -> LiveRuleset | Refusal:
    path, text, resources = draft
    try:
        return wb.compiled(Path(path), text, resources)
    except dsl.RulesError as exc:
        return invalid(exc, field)


def _context(live: LiveRuleset, context: Mapping[str, Any]) -> dict[str, Any] | Refusal:
    try:
        return normalize_all(live.context_schema, context, "context.")
    except ValueProblem as p:
        return Refusal(422, "invalid_request", str(p), p.field)


def _jsonable(value: Any) -> Any:
    return json.loads(ENCODER.encode(value))


# ------------------------------------------------------------------- try


def needs(draft: Draft, context: Mapping[str, Any]) -> Needs | Refusal:
    """What the draft reads about a customer (checking the draft and the context first)."""
    live = _build(draft)
    if isinstance(live, Refusal):
        return live
    checked = _context(live, context)
    return checked if isinstance(checked, Refusal) else live.plan.needs


def try_stored(
    draft: Draft, customer_id: str, inputs: Inputs, context: Mapping[str, Any], now: float
) -> dict[str, Any] | Refusal:
    """Decide with the draft for a stored customer whose inputs the server read."""
    live = _build(draft)
    if isinstance(live, Refusal):
        return live
    normalized = _context(live, context)
    if isinstance(normalized, Refusal):
        return normalized
    scenario = wb.stored_scenario("try for " + customer_id, customer_id, inputs, context, now)
    return _decided(draft, live, customer_id, normalized, inputs, scenario, now, customer_id)


def try_sample(
    draft: Draft, profile: Mapping[str, Any], context: Mapping[str, Any], events: str, now: float
) -> dict[str, Any] | Refusal:
    """Decide with the draft for a sample customer (profile, context, events as a scenario)."""
    path, text, resources = draft
    block = wb.sample_block(profile, context, events)
    full, first_line = wb.with_sample(text, block)
    try:
        live = wb.compiled(Path(path), full, resources)
    except dsl.RulesError as exc:
        return invalid(exc, "sample" if exc.first.span.line >= first_line else "text")
    sample = wb.first_scenario_after(live.plan.checked.scenarios, first_line)
    inputs = scenario_inputs(live.plan, sample, now)
    normalized = normalize_all(live.context_schema, sample.context, "context.")
    return _decided(draft, live, "studio-sample", normalized, inputs, sample, now, None)


def _decided(
    draft: Draft,
    live: LiveRuleset,
    customer: str,
    context: dict[str, Any],
    inputs: Inputs,
    scenario: Any,
    now: float,
    customer_id: str | None,
) -> dict[str, Any]:
    limit = live.plan.top if live.plan.top is not None else 1
    request = DecideRequest(customer, context, live.name, limit, explain=True)
    decision, record = decide(
        live.plan,
        request,
        inputs,
        decision_id=new_decision_id(now),
        now=now,
        oracle=wb.oracle_for(live),
    )
    got = tuple(a.action for a in decision.actions)
    explanation = decision.explanation or {}
    # Why every other action was not chosen: the engine's own explanation (its first
    # reason per action, docs/explain.md), never a second reimplementation.
    why_not = [
        {"action": fate["action"], "why": fate["message"]}
        for fate in explanation.get("actions") or ()
        if fate["fate"] != "returned"
    ]
    first = got[0] if got else "nothing"
    who = f"customer {customer_id}" if customer_id else "this sample"
    named = replace(
        scenario,
        name=f"{who} gets {first}",
        expect=got,
        now=scenario.now if customer_id else None,
    )
    path, text, _ = draft
    saved = wb.scenario_text(dsl.parse(text, path), named)
    return {
        "decision": _jsonable(decision),
        "inputs": json.loads(msgspec.json.encode(inputs)),
        "scores": record.scores,
        "errors": record.errors,
        "not_returned": why_not,
        "scenario": saved,
    }


# ------------------------------------------------------------- scenarios


def scenarios(draft: Draft) -> dict[str, Any] | Refusal:
    """Run the draft's scenario blocks (`arbiter test`): pass/fail, expected vs got, why."""
    live = _build(draft)
    if isinstance(live, Refusal):
        return live
    results = run_scenarios(live.plan)
    return {
        "passed": sum(r.passed for r in results),
        "failed": sum(not r.passed for r in results),
        "results": [
            {
                "name": r.name,
                "line": r.span.line,
                "passed": r.passed,
                "expected": list(r.expected),
                "got": list(r.got),
                "customer_id": r.customer_id,
                "explanation": _jsonable(dict(r.explanation)),
                "not_returned": [{"action": a, "why": why} for a, why in r.dropped],
                "expected_not_returned": _expected_why_not(live, r),
                "errors": list(r.errors),
            }
            for r in results
        ],
    }


def _expected_why_not(live: LiveRuleset, r: Any) -> list[dict[str, str]]:
    """For each expected action the scenario did not get: the runner's reason when a
    rule offered it, else what the explanation shows (no rule offered it, or the default)."""
    dropped = dict(r.dropped)
    fired = {f.get("offers") for f in r.explanation.get("fired") or ()}
    out = []
    for action in r.expected:
        if action in r.got:
            continue
        if action in dropped:
            why = dropped[action]
        elif action == live.plan.checked.default and r.got:
            why = f"it is the default, returned only when nothing is chosen; got {', '.join(r.got)}"
        elif action not in fired:
            why = "no rule offered it for this customer (see the segments and rules that fired)"
        else:
            why = "offered but not returned"
        out.append({"action": action, "why": why})
    return out


# -------------------------------------------------------------- simulate


def simulation_plan(
    draft: Draft, other: Draft | None, context: Mapping[str, Any], by_channel: bool
) -> dict[str, Any] | Refusal:
    """Check both versions and the context: the contexts to simulate, what each version reads."""
    live = _build(draft)
    if isinstance(live, Refusal):
        return live
    normalized = _context(live, context)
    if isinstance(normalized, Refusal):
        return normalized
    compared = _build(other, "compare_text") if other is not None else None
    if isinstance(compared, Refusal):
        return compared
    return {
        "name": live.name,
        "contexts": wb.contexts_for(live, normalized, by_channel),
        "needs": live.plan.needs,
        "other_needs": compared.plan.needs if compared is not None else None,
    }


def simulation(
    draft: Draft,
    other: Draft | None,
    contexts: list[dict[str, Any]],
    now: float,
    population: Population | None,
    base: Population | None,
    generated: int = 0,
) -> dict[str, Any] | Refusal:
    """The draft's action mix over the population and, with `other`, the other version's
    mix over `base` and the customers whose decision changes. With `generated`, both
    populations are drawn from each version's declared profile instead."""
    live = _build(draft)
    if isinstance(live, Refusal):
        return live
    compared = _build(other, "compare_text") if other is not None else None
    if isinstance(compared, Refusal):
        return compared
    if generated:
        population = wb.generated_population(live, generated, now)
        if compared is not None:
            base = wb.generated_population(compared, generated, now)
    assert population is not None
    draft_mix = simulate(live.plan, population, contexts, lambda: wb.oracle_for(live), now)
    answer: dict[str, Any] = {
        "customers": len(population),
        "draft": draft_mix.to_json(),
        "compared": None,
        "changes": None,
    }
    if compared is not None:
        other_live = compared
        other_mix = simulate(
            other_live.plan, base or [], contexts, lambda: wb.oracle_for(other_live), now
        )
        answer["compared"] = {"version": other_live.plan.version, **other_mix.to_json()}
        answer["changes"] = changes(other_mix, draft_mix, contexts)
    return answer

"""Runs the `scenario` blocks of a ruleset: literal inputs in, the real `decide` out.

A scenario gives a profile, a context, events, model scores and the time; the
runner turns them into exactly what the store and the models would hand to
`engine.decision.decide.decide` (an `Inputs` and an `Oracle`), decides with a decision
id derived from the scenario's name, and compares the returned action names,
in order, with `expect`. Nothing here needs Redis or the model files.

Event aggregates are computed exactly from the scenario's events, over the
same hourly and daily buckets the store uses (`literal_inputs.window_events`), so a scenario
sees what production would see, including the one-bucket tolerance at the old
edge of a window.

    results = run_scenarios(plan)
    print(format_report(results))       # pytest-like; "3 passed, 1 failed"
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from arbiter.dsl import nodes as n
from arbiter.engine.decision.decide import assign_variant, decide, in_holdout
from arbiter.engine.decision.literal_inputs import (
    LiteralEvent,
    literal_inputs,
    normalize_values,
)
from arbiter.engine.decision.oracle import OracleError
from arbiter.engine.plan import Plan
from arbiter.engine.records import DecideRequest, Inputs

#: When a scenario says no `now`: a fixed time, so that results never depend on the day
#: the tests run (validity dates, `days_since`).
DEFAULT_NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC).timestamp()
#: How many candidate customer ids are tried to land in the groups a scenario asks for.
MAX_CUSTOMER_SEARCH = 100_000


@dataclass(frozen=True)
class ScenarioResult:
    """The outcome of one scenario. `explanation` is decide's explanation (fired rules …)."""

    name: str
    span: n.Span
    passed: bool
    expected: tuple[str, ...]
    got: tuple[str, ...]
    customer_id: str = ""
    explanation: Mapping[str, Any] = field(default_factory=dict)
    errors: tuple[str, ...] = ()
    dropped: tuple[tuple[str, str], ...] = ()  # (action, why) for offered actions not returned
    expect_mode: str = "exactly"  # exactly, one of, not (see ScenarioDecl.expect_mode)

    @property
    def test_id(self) -> str:
        """`file::scenario name`, as pytest names a test."""
        return f"{self.span.file}::{self.name}"


class ScenarioOracle:
    """Serves a scenario's literal model scores and bandit probabilities.

    A model the scenario gives no score for raises `OracleError`, which the
    engine treats as a missing score, exactly as when a live model fails.
    """

    def __init__(self, scores: Mapping[str, Any], plan: Plan) -> None:
        self._given = scores
        self._bandits = set(plan.checked.bandits)
        self.scores: dict[str, list[float | None]] = {}

    def score(self, model: str, rows: list[list[float]]) -> list[float]:
        given = self._given.get(model)
        if given is None:
            raise OracleError(f"the scenario gives no score for model '{model}'")
        out: list[float] = []
        for row in rows:
            action = row[-1] if row and isinstance(row[-1], _ActionTag) else None
            if isinstance(given, Mapping):
                if action is None or action.name not in given:
                    shown = f" for action '{action.name}'" if action else ""
                    raise OracleError(f"the scenario gives no score of '{model}'{shown}")
                out.append(float(given[action.name]))
            else:
                out.append(float(given))
        self.scores.setdefault(model, []).extend(out)
        return out

    def bandit_pmf(
        self, bandit: str, shared: dict[str, Any], arm_features: list[dict[str, Any]]
    ) -> tuple[list[float], int]:
        arms = [str(f.get("action")) for f in arm_features]
        given = self._given.get(bandit)
        if not isinstance(given, Mapping):
            return [1.0 / len(arms)] * len(arms), 0  # no preference given: uniform
        weights = [float(given.get(a, 0.0)) for a in arms]
        total = sum(weights)
        if total <= 0:
            raise OracleError(f"the scenario gives bandit '{bandit}' no probability for {arms}")
        return [w / total for w in weights], 0

    def model_versions(self) -> dict[str, str]:
        return {}


@dataclass(frozen=True, slots=True)
class _ActionTag:
    """Appended to a per-action model's input row so the oracle knows whose row it is."""

    name: str


def _tagging_plan(plan: Plan) -> Plan:
    """A copy of the plan whose per-action model rows end with the action they are for.

    Arbitration passes a candidate's attribute mapping, not its name, to the row
    function; each action owns its mapping, so the mapping's identity names it.
    """
    row_fns = plan.action_model_inputs
    if not row_fns:
        return plan
    owners = {id(spec.attributes): spec.name for spec in plan.actions}
    if len(owners) != len(plan.actions):
        return plan  # shared mappings: per-action scores cannot be told apart

    def tagged(fn: Any) -> Any:
        def row(P: Any, C: Any, A: Any, rt: Any, value: Any, act: Any) -> Any:
            values = fn(P, C, A, rt, value, act)
            return None if values is None else [*values, _ActionTag(owners[id(act)])]

        return row

    wrapped = {m: tagged(fn) for m, fn in row_fns.items()}
    return replace(plan, action_model_inputs=wrapped)


# ------------------------------------------------------------------ inputs


def scenario_inputs(
    plan: Plan, scenario: n.ScenarioDecl, now: float, at: float | None = None
) -> Inputs:
    """What the store would read for this scenario's customer at `at` (default `now`);
    the scenario's events are `ago` before `now`, and those after `at` are not there yet."""
    checked = plan.checked
    read_at = now if at is None else at
    events: list[LiteralEvent] = []
    contacts: dict[str, list[float]] = {}
    rejections: dict[str, list[float]] = {}
    for ev in scenario.events:
        ts = now - ev.ago_seconds
        if ts > read_at:
            continue
        if ev.event in checked.actions and ev.event not in checked.events:
            # `cart_reminder: 2 3d ago` = shown twice; `cart_reminder.rejected: …` = rejected.
            target = rejections if ev.prop == "rejected" else contacts
            target.setdefault(ev.event, []).extend([ts] * int(ev.amount))
        elif ev.label is not None and ev.prop is not None:
            # `product_view.category: "shoes" 2h ago` = one view of that category.
            events.append(LiteralEvent(ev.event, ts, {}, {ev.prop: ev.label}))
        elif ev.prop is None:
            events += [LiteralEvent(ev.event, ts, {})] * int(ev.amount)  # `add_to_cart: 2` = two
        else:
            events.append(LiteralEvent(ev.event, ts, {ev.prop: ev.amount}))  # one, with that value
    return literal_inputs(plan, scenario.profile, events, read_at, contacts, rejections)


def _customer(plan: Plan, scenario: n.ScenarioDecl) -> tuple[str, str | None]:
    """A customer id in the groups the scenario asks for, or an explanation why there is none.

    Unless the scenario says otherwise the customer is outside the holdout and in
    the first variant of every experiment, so results do not hinge on a hash.
    """
    checked = plan.checked
    want_holdout = scenario.in_holdout
    want = {
        name: str(scenario.variants.get(name, decl.variants[0][0]))
        for name, decl in checked.experiments.items()
    }

    def fits(cid: str) -> bool:
        if checked.holdout is not None and in_holdout(plan, cid) != want_holdout:
            return False
        return all(assign_variant(plan, x, cid) == v for x, v in want.items())

    if scenario.customer is not None:
        cid = scenario.customer
        if fits(cid) or (not scenario.in_holdout and not scenario.variants):
            return cid, None
        groups = ", ".join(
            [*(["in holdout"] if want_holdout else []), *(f"{x}={v}" for x, v in want.items())]
        )
        return cid, f"customer '{cid}' is not in the groups the scenario asks for ({groups})"
    for k in range(MAX_CUSTOMER_SEARCH):
        cid = f"scenario-customer-{k}"
        if fits(cid):
            return cid, None
    return "", "no customer id found in the asked holdout and experiment groups"


def decision_id(plan: Plan, scenario: n.ScenarioDecl) -> str:
    """A fixed decision id per scenario: the bandit draws (seeded from it) are repeatable."""
    digest = hashlib.blake2b(f"{plan.name}\x1f{scenario.name}".encode(), digest_size=8)
    return f"scenario-{digest.hexdigest()}"


def run_scenario(plan: Plan, scenario: n.ScenarioDecl) -> ScenarioResult:
    """Decide for one scenario and compare with its `expect`."""
    expected = tuple(scenario.expect or ())
    now = scenario.now if scenario.now is not None else DEFAULT_NOW
    customer, problem = _customer(plan, scenario)
    if problem is not None:
        return ScenarioResult(
            scenario.name, scenario.span, False, expected, (), customer, errors=(problem,)
        )
    context = normalize_values(plan.checked.context, scenario.context, "context.")
    decide_at = now
    if scenario.trigger is not None:
        fired, why = trigger_firing(plan, scenario, now)
        if fired is None:
            # The trigger does not fire by `now`: nothing is sent.
            return ScenarioResult(
                scenario.name,
                scenario.span,
                scenario.expect == (),
                expected,
                (),
                customer,
                errors=(why,),
            )
        decide_at = fired
        context["channel"] = plan.checked.triggers[scenario.trigger].channel
    limit = plan.top if plan.top is not None else 1
    request = DecideRequest(customer, context, plan.name, limit=limit, explain=True)
    inputs = scenario_inputs(plan, scenario, now, at=decide_at)
    oracle = ScenarioOracle(scenario.scores, plan)
    decision, record = decide(
        _tagging_plan(plan),
        request,
        inputs,
        decision_id=decision_id(plan, scenario),
        now=decide_at,
        oracle=oracle,
    )
    got = tuple(a.action for a in decision.actions)
    notes = [
        f"the score given for '{name}' was not used: the model was not asked "
        "(one of its inputs is missing, or nothing needed it)"
        for name in scenario.scores
        if name in plan.checked.models and name not in oracle.scores
    ]
    explanation = decision.explanation or {}
    return ScenarioResult(
        name=scenario.name,
        span=scenario.span,
        passed=scenario.expect is not None and _matches(scenario.expect_mode, expected, got),
        expected=expected,
        got=got,
        customer_id=customer,
        explanation=explanation,
        errors=(*record.errors, *notes),
        dropped=_dropped(explanation, () if scenario.expect_mode == "not" else expected),
        expect_mode=scenario.expect_mode,
    )


def trigger_firing(plan: Plan, scenario: n.ScenarioDecl, now: float) -> tuple[float | None, str]:
    """When the scenario's trigger fires by ``now`` (the due time of its latest firing
    due by then), or None and why not.

    A scenario's events are ``ago`` before ``now``; each ``on`` event is due
    ``after`` later, and is cancelled by an ``unless`` event at or after it,
    as `engine.triggers.runner` does live. The decision is made at the due
    time, so the scenario "advances time" from the event to the firing.
    """
    decl = plan.checked.triggers[str(scenario.trigger)]
    times = [now - ev.ago_seconds for ev in scenario.events if ev.event == decl.on]
    unless = [now - ev.ago_seconds for ev in scenario.events if ev.event == decl.unless]
    due = sorted(t + decl.after_seconds for t in times if t + decl.after_seconds <= now)
    if not due:
        return None, (
            f"trigger {decl.name} has not fired by now: no {decl.on} event at least "
            f"{decl.after_seconds:g}s before it"
        )
    fire = due[-1]
    start = fire - decl.after_seconds
    if any(u >= start for u in unless):
        return (
            None,
            f"trigger {decl.name} did not fire: a {decl.unless} event followed the {decl.on}",
        )
    return fire, ""


def _matches(mode: str, expected: tuple[str, ...], got: tuple[str, ...]) -> bool:
    """Whether the returned actions satisfy the scenario's `expect`."""
    if mode == "one of":
        return bool(got) and got[0] in expected
    if mode == "not":
        return not set(got) & set(expected)
    return got == expected


def _dropped(
    explanation: Mapping[str, Any], expected: tuple[str, ...]
) -> tuple[tuple[str, str], ...]:
    """Why each offered action was not returned, and why each expected one was not offered:
    the decision's own explanation (`engine.decision.explain`), the same object HTTP and
    `arbiter decide --explain` show."""
    out: list[tuple[str, str]] = []
    for fate in explanation.get("actions") or ():
        if fate["fate"] == "dropped" or (
            fate["fate"] == "not-offered" and fate["action"] in expected
        ):
            out.append((fate["action"], fate["message"]))
    return tuple(out)


def run_scenarios(plan: Plan) -> list[ScenarioResult]:
    """Run every scenario of a plan's ruleset, in source order."""
    return [run_scenario(plan, sc) for sc in plan.checked.scenarios]


# ------------------------------------------------------------------ report


def format_report(results: Sequence[ScenarioResult]) -> str:
    """A pytest-like report: one line per scenario, failure details, then "3 passed, 1 failed"."""
    lines = [f"{r.test_id} {'PASSED' if r.passed else 'FAILED'}" for r in results]
    failures = [r for r in results if not r.passed]
    if failures:
        lines += ["", "=" * 30 + " FAILURES " + "=" * 30]
        for r in failures:
            lines += _failure(r)
    passed = len(results) - len(failures)
    summary = f"{passed} passed"
    if failures:
        summary += f", {len(failures)} failed"
    lines += ["", summary]
    return "\n".join(lines)


def _expected(r: ScenarioResult) -> str:
    if r.expect_mode == "one of":
        return f"one of {_names(r.expected)}"
    if r.expect_mode == "not":
        return f"none of {_names(r.expected)}"
    return _names(r.expected)


def _names(actions: Sequence[str]) -> str:
    return "[" + ", ".join(actions) + "]" if actions else "nothing"


def _failure(r: ScenarioResult) -> list[str]:
    ex = r.explanation
    out = [
        f"{'_' * 10} {r.test_id} {'_' * 10}",
        f"{r.span}: scenario '{r.name}'",
        f"  expected: {_expected(r)}",
        f"  got:      {_names(r.got)}",
    ]
    if r.customer_id:
        out.append(f"  customer: {r.customer_id}")
    if ex.get("holdout"):
        out.append(f"  in holdout group '{ex['holdout']}': only the default applies")
    segments = ex.get("segments") or {}
    true = [name for name, value in segments.items() if value is True]
    out.append(f"  segments true: {', '.join(true) if true else 'none'}")
    fired = ex.get("fired") or []
    out.append("  fired rules:" if fired else "  fired rules: none")
    for f in fired:
        out.append(f"    {f['rule']}: {f['text']}  -> {f['offers']}")
    for action, why in r.dropped:
        out.append(f"  not returned: {action}: {why}")
    for b in ex.get("bandits") or []:
        out.append(f"  bandit {b['bandit']} chose {b['chosen']} (pmf {b['pmf']})")
    for err in r.errors:
        out.append(f"  error: {err}")
    return out

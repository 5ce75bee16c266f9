"""One decision, as a pure function of (plan, request, inputs, id, time, oracle).

Nothing here touches Redis, the clock or a random source: the store fetched
`Inputs`, the caller passes `now` and the decision id (the RNG seed derives
from it), and the `Oracle` answers model and bandit questions. That is what
lets `engine.log.replay` recompute a logged decision bit for bit.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

from arbiter.engine.decision.arbitrate import Candidate, arbitrate
from arbiter.engine.decision.oracle import Oracle, OracleError
from arbiter.engine.decision.runtime import EvalRuntime
from arbiter.engine.decision.sampling import seed_from_decision_id
from arbiter.engine.plan import Plan
from arbiter.engine.records import (
    ActionOut,
    BanditChoice,
    DecideRequest,
    Decision,
    DecisionRecord,
    Inputs,
    RecordedRuleset,
    RulesetRef,
)


def bucket(*parts: str) -> float:
    """A stable number in [0, 1) from the parts: the basis of holdouts and experiments."""
    digest = hashlib.blake2b("\x1f".join(parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2.0**64


def assign_variant(plan: Plan, experiment: str, customer_id: str) -> str:
    """The customer's variant of an experiment: deterministic, independent per experiment."""
    decl = plan.checked.experiments[experiment]
    x = bucket(plan.name, "experiment", experiment, customer_id)
    acc = 0.0
    for name, share in decl.variants:
        acc += share
        if x < acc:
            return name
    return decl.variants[-1][0]


def in_holdout(plan: Plan, customer_id: str) -> bool:
    """Whether the customer is in the ruleset's holdout group."""
    holdout = plan.checked.holdout
    return holdout is not None and bucket(plan.name, "holdout", customer_id) < holdout.fraction


# Aggregate names by plan, looked up by identity: `AggregateSpec.key` formats a string
# on every access, and hashing a plan's `Needs` costs more than the lookup saves.
_aggregate_keys: dict[int, tuple[Plan, tuple[str, ...]]] = {}


def aggregates_tuple(plan: Plan, inputs: Inputs) -> tuple[Any, ...]:
    """The aggregate values in the order the plan's evaluator indexes them."""
    found = _aggregate_keys.get(id(plan))
    if found is None or found[0] is not plan:
        if len(_aggregate_keys) > 256:
            _aggregate_keys.clear()
        found = (plan, tuple(spec.key for spec in plan.needs.aggregates))
        _aggregate_keys[id(plan)] = found
    get = inputs.aggregates.get
    return tuple(get(k) for k in found[1])


def decide(
    plan: Plan,
    request: DecideRequest,
    inputs: Inputs,
    *,
    decision_id: str,
    now: float,
    oracle: Oracle,
) -> tuple[Decision, DecisionRecord]:
    """Evaluate, score and arbitrate one request; returns the answer and its record."""
    # A linked anonymous id is the customer it is linked to: same variants, same holdout.
    subject = inputs.resolved_id or request.customer_id
    variants = tuple(assign_variant(plan, x, subject) for x in plan.checked.experiments)
    P = inputs.profile
    C = request.context
    A = aggregates_tuple(plan, inputs)
    rt = EvalRuntime(plan, now, variants, oracle, P, C, A)
    seed = seed_from_decision_id(decision_id)

    offers, suppressed, segments = plan.evaluate(P, C, A, rt)
    holdout_name = None
    bandits: list[BanditChoice] = []
    if in_holdout(plan, subject):
        assert plan.checked.holdout is not None
        holdout_name = plan.checked.holdout.name
        chosen: list[Candidate] = []
    else:
        chosen, bandits = arbitrate(plan, request, inputs, rt, offers, suppressed, seed)

    if not chosen and plan.default is not None:
        spec = plan.actions[plan.default]
        channel = request.context.get("channel")
        # The default obeys its channels like any action: no answer beats a wrong-channel one.
        if not spec.channels or channel is None or channel in spec.channels:
            chosen = [Candidate(spec, spec.value, 1.0, 0, -1)]

    actions = [ActionOut(c.spec.name, c.score, dict(c.spec.payload), c.probability) for c in chosen]
    ref = RulesetRef(plan.name, plan.version)
    explanation = None
    if request.explain:
        explanation = _explain(plan, offers, suppressed, segments, rt, holdout_name, bandits)
    decision = Decision(decision_id, ref, actions, inputs.degraded, explanation)
    record = DecisionRecord(
        decision_id=decision_id,
        ts=now,
        ruleset=RecordedRuleset(plan.name, plan.version, plan.hash),
        request=request,
        inputs=inputs,
        seed=seed,
        actions=actions,
        scores=oracle.scores if hasattr(oracle, "scores") else {},
        model_versions=getattr(oracle, "model_versions", dict)(),
        bandits=bandits,
        holdout=holdout_name,
        variants=dict(zip(plan.checked.experiments, variants, strict=True)),
        trace=sorted({o.rule for o in offers}),
        errors=rt.errors,
    )
    return decision, record


def _explain(
    plan: Plan,
    offers: Sequence[Any],
    suppressed: set[int],
    segments: tuple[Any, ...],
    rt: EvalRuntime,
    holdout: str | None,
    bandits: list[BanditChoice],
) -> dict[str, Any]:
    return {
        "segments": {
            name: segments[i]
            for i, name in enumerate(plan.segment_names)
            if segments[i] is not None
        },
        "fired": [
            {
                "rule": f"{plan.rules[o.rule].span}",
                "text": plan.rules[o.rule].text,
                "offers": plan.actions[o.action].name,
            }
            for o in offers
        ],
        "suppressed": sorted(plan.actions[i].name for i in suppressed),
        "holdout": holdout,
        "bandits": [{"bandit": b.bandit, "chosen": b.chosen, "pmf": b.pmf} for b in bandits],
        "errors": rt.errors,
    }


__all__ = ["EvalRuntime", "OracleError", "decide"]

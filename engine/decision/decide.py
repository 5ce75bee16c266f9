"""One decision, as a pure function of (plan, request, inputs, id, time, oracle).

Nothing here touches Redis, the clock or a random source: the store fetched
`Inputs`, the caller passes `now` and the decision id (the RNG seed derives
from it), and the `Oracle` answers model and bandit questions. That is what
lets `engine.log.replay` recompute a logged decision bit for bit.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any

import msgspec

from arbiter.engine.decision.arbitrate import Candidate, Trace, arbitrate
from arbiter.engine.decision.explain import explain
from arbiter.engine.decision.oracle import Oracle, OracleError
from arbiter.engine.decision.runtime import EvalRuntime
from arbiter.engine.decision.sampling import seed_from_decision_id
from arbiter.engine.plan import Plan
from arbiter.engine.records import (
    RECORD_VERSION,
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


def recorded_inputs(plan: Plan, inputs: Inputs) -> Inputs:
    """The inputs as the record keeps them: only the profile values the plan can read.

    The store returns a customer's whole profile; attributes the ruleset does
    not declare (nor `consents`, when an action requires consent) are never
    read by the decision, so they are personal data the log must not keep.
    """
    declared = plan.needs.profile_fields
    profile = inputs.profile
    keep_consents = plan.needs.reads_consent
    if all(k in declared or (keep_consents and k == "consents") for k in profile):
        return inputs
    kept = {
        k: v for k, v in profile.items() if k in declared or (keep_consents and k == "consents")
    }
    return Inputs(kept, inputs.aggregates, inputs.caps, inputs.rejections, inputs.degraded)


def decide(
    plan: Plan,
    request: DecideRequest,
    inputs: Inputs,
    *,
    decision_id: str,
    now: float,
    oracle: Oracle,
    lap: Callable[[str], None] | None = None,
) -> tuple[Decision, DecisionRecord]:
    """Evaluate, score and arbitrate one request; returns the answer and its record.

    `lap`, when given, is called with `"rules"` once the tree is evaluated and
    `"arbitration"` once the actions are chosen, so a caller can time the
    stages without this function reading a clock.
    """
    # A linked anonymous id is the customer it is linked to: same variants, same holdout.
    subject = inputs.resolved_id or request.customer_id
    variants = tuple(assign_variant(plan, x, subject) for x in plan.checked.experiments)
    P = inputs.profile
    C = request.context
    A = aggregates_tuple(plan, inputs)
    rt = EvalRuntime(
        plan, now, variants, oracle, P, C, A, caps=inputs.caps, degraded=inputs.degraded
    )
    seed = seed_from_decision_id(decision_id)

    offers, suppressed, segments = plan.evaluate(P, C, A, rt)
    if lap is not None:
        lap("rules")
    holdout_name = None
    bandits: list[BanditChoice] = []
    # Kept only when explaining: the hot path records nothing it will not show.
    trace = Trace() if request.explain else None
    candidates: dict[str, float] = {}
    if in_holdout(plan, subject):
        assert plan.checked.holdout is not None
        holdout_name = plan.checked.holdout.name
        chosen: list[Candidate] = []
    else:
        chosen, bandits = arbitrate(
            plan, request, inputs, rt, offers, suppressed, seed, trace, scores_out=candidates
        )

    if not chosen and plan.default is not None:
        spec = plan.actions[plan.default]
        channel = request.context.get("channel")
        # The default obeys its channels like any action: no answer beats a wrong-channel one.
        if not spec.channels or channel is None or channel in spec.channels:
            chosen = [Candidate(spec, spec.value, 1.0, 0, -1)]

    if lap is not None:
        lap("arbitration")
    actions = [ActionOut(c.spec.name, c.score, dict(c.spec.payload), c.probability) for c in chosen]
    ref = RulesetRef(plan.name, plan.version)
    explanation = None
    if trace is not None:
        why = explain(
            plan,
            request,
            inputs,
            rt,
            offers,
            suppressed,
            segments,
            holdout_name,
            bandits,
            trace,
            chosen,
        )
        explanation = msgspec.to_builtins(why)
    decision = Decision(decision_id, ref, actions, inputs.degraded, explanation)
    record = DecisionRecord(
        decision_id=decision_id,
        ts=now,
        ruleset=RecordedRuleset(plan.name, plan.version, plan.hash),
        request=request,
        inputs=recorded_inputs(plan, inputs),
        seed=seed,
        actions=actions,
        scores=oracle.scores if hasattr(oracle, "scores") else {},
        model_versions=getattr(oracle, "model_versions", dict)(),
        bandits=bandits,
        holdout=holdout_name,
        variants=dict(zip(plan.checked.experiments, variants, strict=True)),
        trace=sorted({o.rule for o in offers}),
        errors=rt.errors,
        v=RECORD_VERSION,
        candidates=candidates,
        probabilities=[1.0 if c.probability is None else c.probability for c in chosen],
        segments=[name for name, value in zip(plan.segment_names, segments, strict=False) if value],
    )
    return decision, record


__all__ = ["EvalRuntime", "OracleError", "decide"]

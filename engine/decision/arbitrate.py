"""Eligible offers → the actions to return.

Order of work, cheapest and most decisive first: drop suppressed actions,
actions for another channel, outside their validity dates, without the
required consent, at their contact cap, fatigued, or over a contact policy; score survivors (per-action
models in one batched call each, then the arbitration formula); let each
bandit pick one of its eligible arms; rank by priority then score; apply the
per-tag diversity limit; keep the top N.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from arbiter.engine.decision.policies import applies, blocking_limit, tiring_policy
from arbiter.engine.decision.runtime import EvalRuntime
from arbiter.engine.decision.sampling import sample
from arbiter.engine.decision.window_span import window_end, window_start
from arbiter.engine.plan import ActionSpec, Offer, Plan
from arbiter.engine.records import BanditChoice, DecideRequest, Inputs


@dataclass(slots=True)
class Candidate:
    spec: ActionSpec
    score: float
    weight: float
    priority: int
    rule: int
    probability: float | None = None
    #: Per-action model scores by model index (a model missing here was not scored).
    models: dict[int, float] | None = None


@dataclass(slots=True)
class Trace:
    """What arbitration did to each offered action, kept only when a decision explains itself.

    `dropped` maps an action index to the first reason it left: a filter code
    (suppressed, channel, dates, consent, degraded, cap, fatigue), `bandit`,
    `diversity` or `top-n`; `detail` adds the bandit's name or the full tag.
    """

    dropped: dict[int, str] = field(default_factory=dict)
    detail: dict[int, str] = field(default_factory=dict)
    scored: dict[int, Candidate] = field(default_factory=dict)
    ranks: dict[int, int] = field(default_factory=dict)


def _eligible(
    plan: Plan,
    request: DecideRequest,
    inputs: Inputs,
    rt: EvalRuntime,
    offers: Sequence[Offer],
    suppressed: set[int],
    trace: Trace | None,
) -> dict[int, Candidate]:
    best: dict[int, Candidate] = {}
    for o in offers:
        cur = best.get(o.action)
        if cur is None or (o.priority, o.weight) > (cur.priority, cur.weight):
            best[o.action] = Candidate(plan.actions[o.action], 0.0, o.weight, o.priority, o.rule)
    channel = request.context.get("channel")
    consents = inputs.profile.get("consents") or ()
    now = rt.now
    policies = bool(plan.checked.policies or plan.checked.fatigue_policies)
    out: dict[int, Candidate] = {}
    for idx, cand in best.items():
        spec = cand.spec
        # The first filter that drops the action, in the documented order.
        if idx in suppressed:
            why = "suppressed"
        elif spec.channels and channel is not None and channel not in spec.channels:
            why = "channel"
        elif spec.valid_from is not None and not (spec.valid_from <= now < (spec.valid_until or 0)):
            why = "dates"
        elif spec.consent is not None and spec.consent not in consents:
            why = "consent"
        elif inputs.degraded and (
            spec.cap is not None
            or spec.fatigue is not None
            or (policies and applies(plan, spec, channel))
        ):
            # Without Redis the contact count is unknown: never risk exceeding a cap.
            why = "degraded"
        elif spec.cap is not None and inputs.caps.get(spec.name, 0) >= spec.cap.count:
            why = "cap"
        elif (
            spec.fatigue is not None
            and inputs.rejections.get(spec.name, 0) >= spec.fatigue.rejections
        ) or (policies and tiring_policy(plan, spec, channel, inputs.rejections) is not None):
            # The action's own fatigue, or fatigue across the offers of its channel or tags.
            why = "fatigue"
        elif policies and blocking_limit(plan, spec, channel, inputs.caps) is not None:
            why = "policy"
        else:
            out[idx] = cand
            continue
        if trace is not None:
            trace.dropped[idx] = why
    return out


def _score(plan: Plan, rt: EvalRuntime, cands: dict[int, Candidate]) -> None:
    per_action: dict[int, dict[int, float]] = {idx: {} for idx in cands}
    for m, row_fn in plan.action_model_inputs.items():
        rows: list[list[float]] = []
        owners: list[int] = []
        for idx, cand in cands.items():
            row = row_fn(rt.P, rt.C, rt.A, rt, cand.spec.value, cand.spec.attributes)
            if row is not None:
                rows.append(row)
                owners.append(idx)
        if not rows:
            continue
        try:
            scores = rt.oracle.score(plan.model_names[m], rows)
        except Exception as exc:
            rt.errors.append(f"model {plan.model_names[m]}: {exc}")
            continue
        for idx, s in zip(owners, scores, strict=True):
            per_action[idx][m] = s
    for idx, cand in cands.items():
        cand.models = per_action[idx]
    formula = plan.formula
    assert formula is not None
    for idx, cand in cands.items():
        spec = cand.spec
        try:
            value = formula(
                rt.P,
                rt.C,
                rt.A,
                rt,
                spec.value,
                cand.weight,
                cand.priority,
                spec.attributes,
                per_action[idx],
            )
        except Exception as exc:
            rt.errors.append(f"arbitrate formula for {spec.name}: {type(exc).__name__}: {exc}")
            value = None
        # A candidate whose score cannot be computed (a missing input) scores 0 but stays
        # eligible: the formula ranks, the rules decide eligibility.
        cand.score = float(value) if isinstance(value, int | float) else 0.0


def _bandits(
    plan: Plan, rt: EvalRuntime, cands: dict[int, Candidate], seed: int, trace: Trace | None
) -> list[BanditChoice]:
    choices: list[BanditChoice] = []
    feature_fns = plan.bandit_features
    table = plan.arm_features
    for j, (name, decl) in enumerate(plan.checked.bandits.items()):
        arms = [plan.action_index[a] for a in decl.arms if plan.action_index[a] in cands]
        if not arms:
            continue
        shared = feature_fns[j](rt.P, rt.C, rt.A, rt)
        arm_features = [table[i] for i in arms]
        try:
            pmf, version = rt.oracle.bandit_pmf(name, shared, arm_features)
        except Exception as exc:
            rt.errors.append(f"bandit {name}: {exc}")
            n = len(arms)
            pmf, version = [1.0 / n] * n, -1
        # Each bandit draws from its own stream so adding one does not shift another's draws.
        pick = sample(pmf, seed ^ (j * 0x9E3779B97F4A7C15 & 0xFFFFFFFFFFFFFFFF))
        chosen = arms[pick]
        for i in arms:
            if i != chosen:
                del cands[i]
                if trace is not None:
                    trace.dropped[i] = "bandit"
                    trace.detail[i] = name
        cands[chosen].probability = pmf[pick]
        choices.append(
            BanditChoice(
                name,
                version,
                [plan.actions[i].name for i in arms],
                pmf,
                plan.actions[chosen].name,
                pmf[pick],
                shared,
                arm_features,
            )
        )
    return choices


def arbitrate(
    plan: Plan,
    request: DecideRequest,
    inputs: Inputs,
    rt: EvalRuntime,
    offers: Sequence[Offer],
    suppressed: set[int],
    seed: int,
    trace: Trace | None = None,
    *,
    scores_out: dict[str, float] | None = None,
) -> tuple[list[Candidate], list[BanditChoice]]:
    """Filter, score, let bandits choose, rank and cut the eligible offers.

    With a `trace`, records why each offered action that is not returned left.
    ``scores_out``, when given, receives every eligible candidate's score
    before bandits, ranking and top N (the decision record keeps them).
    """
    cands = _eligible(plan, request, inputs, rt, offers, suppressed, trace)
    if not cands:
        return [], []
    _score(plan, rt, cands)
    if trace is not None:
        trace.scored = dict(cands)
    if scores_out is not None:
        for cand in cands.values():
            scores_out[cand.spec.name] = cand.score
    choices = _bandits(plan, rt, cands, seed, trace) if plan.checked.bandits else []
    ranked = sorted(cands.values(), key=lambda c: (-c.priority, -c.score, c.spec.index))
    limit = request.limit if plan.top is None else min(request.limit, plan.top)
    out: list[Candidate] = []
    per_tag: dict[str, int] = {}
    for position, cand in enumerate(ranked):
        if len(out) >= limit:
            if trace is not None:
                for rank, rest in enumerate(ranked[position:], start=position + 1):
                    trace.dropped[rest.spec.index] = "top-n"
                    trace.ranks[rest.spec.index] = rank
            break
        if trace is not None:
            trace.ranks[cand.spec.index] = position + 1
        if plan.max_per_tag is not None and any(
            per_tag.get(tag, 0) >= plan.max_per_tag for tag in cand.spec.tags
        ):
            if trace is not None:
                trace.dropped[cand.spec.index] = "diversity"
                trace.detail[cand.spec.index] = next(
                    t for t in cand.spec.tags if per_tag.get(t, 0) >= plan.max_per_tag
                )
            continue
        out.append(cand)
        for tag in cand.spec.tags:
            per_tag[tag] = per_tag.get(tag, 0) + 1
    return out, choices


def fatigued(times: Sequence[float], now: float, limit: int, window: int, period: int) -> bool:
    """True when `limit` rejections fell within `window` and the last of them is under `period` old.

    `times` must be sorted. Either length is seconds, or -N for N calendar months
    (`window_span.window_start`): `within 1mo for 1mo` is a calendar month each.
    """
    # Suppressed until `period` after the last rejection: 2028-01-31 `for 1mo` ends 02-29.
    for i in range(limit - 1, len(times)):
        if now < window_end(period, times[i]) and times[i - limit + 1] >= window_start(
            window, times[i]
        ):
            return True
    return False

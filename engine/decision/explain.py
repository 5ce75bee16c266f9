"""Every decision explains itself: the fate of every declared action, as one typed value.

`explain` is called by `decide` when the request asks (`explain: true`,
`arbiter decide --explain`, every scenario). For each action, in declaration
order, it says whether it was returned (its rank, score and the formula's
terms with each one's source) or, if not, the FIRST reason, in the order the
engine applies them:

    not-offered:  no-rule (the closest rule and its false comparison, with the
                  actual values), standby (the default, when something else won)
    dropped:      holdout, suppressed, channel, dates, consent, degraded, cap,
                  fatigue, policy (the contact policy's limit, with counts), bandit (with the pmf by arm name), diversity, top-n

The shape is a stable contract (docs/explain.md; `version` changes only when a
field changes meaning), built from msgspec Structs and sent as plain JSON.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import msgspec

from arbiter.dsl import nodes as n
from arbiter.dsl import printing
from arbiter.engine.decision.arbitrate import Candidate, Trace
from arbiter.engine.decision.policies import blocking_limit, tiring_policy
from arbiter.engine.decision.runtime import EvalRuntime
from arbiter.engine.decision.why_not import Leaf, WhyNot
from arbiter.engine.plan import ActionSpec, Offer, Plan
from arbiter.engine.probes import RuleProbe
from arbiter.engine.records import BanditChoice, DecideRequest, Inputs

#: Bumped only when a field changes meaning or disappears; new fields keep the version.
EXPLANATION_VERSION = 1


class RuleRef(msgspec.Struct):
    """A rule of the ruleset: where it is and its source line."""

    at: str
    text: str


class Condition(msgspec.Struct, omit_defaults=True):
    """The comparison that kept a rule from firing, and the values it saw."""

    text: str
    at: str
    #: "false", "true" (where it had to be false), "unknown" (a value is missing) or
    #: "error" (it raised at run time, as the rule did)
    result: str
    values: dict[str, Any]
    segment: str | None = None  # the segment the comparison is in
    error: str | None = None  # what it raised, when result is "error"


class Term(msgspec.Struct, omit_defaults=True):
    """One input of the arbitration formula for one action, and where it came from."""

    name: str
    value: Any
    source: str  # action, rule, attribute, model, model-not-scored


class ActionFate(msgspec.Struct, omit_defaults=True):
    """What happened to one declared action in this decision."""

    action: str
    fate: str  # returned, dropped, not-offered
    reason: str  # offered, default, no-rule, standby, holdout, suppressed, channel, …
    message: str
    rank: int | None = None
    score: float | None = None
    probability: float | None = None
    rule: RuleRef | None = None  # the rule that offered it, or (no-rule) the closest one
    condition: Condition | None = None
    terms: list[Term] | None = None
    details: dict[str, Any] | None = None


class FiredRule(msgspec.Struct):
    rule: str
    text: str
    offers: str


class BanditOutcome(msgspec.Struct):
    bandit: str
    chosen: str
    pmf: list[float]
    arms: list[str]
    probabilities: dict[str, float]  # the pmf by arm name


class Explanation(msgspec.Struct):
    """The whole explanation of one decision."""

    version: int
    actions: list[ActionFate]
    segments: dict[str, bool]
    fired: list[FiredRule]
    suppressed: list[str]
    holdout: str | None
    bandits: list[BanditOutcome]
    errors: list[str]
    formula: str


def explain(
    plan: Plan,
    request: DecideRequest,
    inputs: Inputs,
    rt: EvalRuntime,
    offers: Sequence[Offer],
    suppressed: set[int],
    segments: tuple[Any, ...],
    holdout: str | None,
    bandits: list[BanditChoice],
    trace: Trace,
    returned: Sequence[Candidate],
) -> Explanation:
    """The explanation of a decision already made; it never changes the decision."""
    seg_values = dict(zip(plan.segment_names, segments, strict=True))
    why = WhyNot(plan.probes(), inputs.profile, request.context, inputs.aggregates, rt, segments)
    builder = _Builder(plan, request, inputs, rt, why, trace, bandits, offers)
    offered = {o.action for o in offers}
    fates = []
    for spec in plan.actions:
        position = next((k for k, c in enumerate(returned) if c.spec.index == spec.index), None)
        if position is not None:
            fates.append(builder.returned(spec, returned[position], position + 1))
        elif holdout is not None and spec.index in offered:
            message = f"the customer is in the holdout group '{holdout}': only the default applies"
            fates.append(
                ActionFate(spec.name, "dropped", "holdout", message, details={"group": holdout})
            )
        elif spec.index in offered:
            fates.append(builder.dropped(spec, spec.index in suppressed))
        else:
            fates.append(builder.not_offered(spec))
    return Explanation(
        version=EXPLANATION_VERSION,
        actions=fates,
        segments={k: v for k, v in seg_values.items() if v is not None},
        fired=[
            FiredRule(
                str(plan.rules[o.rule].span), plan.rules[o.rule].text, plan.actions[o.action].name
            )
            for o in offers
        ],
        suppressed=sorted(plan.actions[i].name for i in suppressed),
        holdout=holdout,
        bandits=[
            BanditOutcome(b.bandit, b.chosen, b.pmf, b.arms, dict(zip(b.arms, b.pmf, strict=True)))
            for b in bandits
        ],
        errors=list(rt.errors),
        formula=builder.formula_text,
    )


class _Builder:
    """Builds one `ActionFate` at a time for `explain`."""

    def __init__(
        self,
        plan: Plan,
        request: DecideRequest,
        inputs: Inputs,
        rt: EvalRuntime,
        why: WhyNot,
        trace: Trace,
        bandits: list[BanditChoice],
        offers: Sequence[Offer],
    ) -> None:
        self.plan = plan
        self.request = request
        self.inputs = inputs
        self.rt = rt
        self.trace = trace
        self.bandits = {b.bandit: b for b in bandits}
        self.why = why
        self.offers = offers
        decl = plan.checked.arbitrate
        self.formula = decl.formula if decl is not None else None
        self.formula_text = (
            printing.expr(self.formula) if self.formula is not None else "value * weight"
        )
        self._rules = why.probes.rules
        # The `when` rules offering each action, in source order: one pass, not one per action.
        self._offering: dict[str, list[RuleProbe]] = {}
        for rp in self._rules:
            if isinstance(rp.rule, n.WhenRule):
                self._offering.setdefault(rp.rule.action, []).append(rp)

    # ------------------------------------------------------------ helpers

    def _rule_ref(self, rule_id: int) -> RuleRef:
        info = self.plan.rules[rule_id]
        return RuleRef(str(info.span), info.text)

    def _condition(self, leaf: Leaf) -> Condition:
        return Condition(
            leaf.text, str(leaf.expr.span), leaf.result, leaf.values, leaf.segment, leaf.error
        )

    # ------------------------------------------------------------ returned

    def returned(self, spec: ActionSpec, cand: Candidate, rank: int) -> ActionFate:
        if cand.rule < 0:
            message = "returned as the default: no other action was left"
            return ActionFate(
                spec.name, "returned", "default", message, rank=rank, score=cand.score
            )
        rule = self._rule_ref(cand.rule)
        message = f"returned at rank {rank} with score {cand.score:g}, offered by `{rule.text}`"
        if cand.probability is not None:
            message += f"; chosen by a bandit with probability {cand.probability:g}"
        return ActionFate(
            spec.name,
            "returned",
            "offered",
            message,
            rank=rank,
            score=cand.score,
            probability=cand.probability,
            rule=rule,
            terms=self._terms(cand),
        )

    def _terms(self, cand: Candidate) -> list[Term]:
        spec = cand.spec
        terms = [
            Term("value", spec.value, "action"),
            Term("weight", cand.weight, "rule"),
            Term("priority", cand.priority, "rule"),
        ]
        if self.formula is None:
            return terms
        for name in sorted(_names_in(self.formula)):
            if name.startswith("action."):
                attr = name.split(".", 1)[1]
                terms.append(Term(name, spec.attributes.get(attr), "attribute"))
                continue
            if name not in self.plan.checked.models:
                continue
            index = self.plan.model_names.index(name)
            if self.plan.checked.models[name].per_action:
                score = (cand.models or {}).get(index)
            else:
                score = self.rt.computed_scores().get(index)
            source = "model" if score is not None else "model-not-scored"
            terms.append(Term(name, score, source))
        return terms

    # ------------------------------------------------------------ dropped

    def dropped(self, spec: ActionSpec, suppressed: bool) -> ActionFate:
        why = self.trace.dropped.get(spec.index, "suppressed" if suppressed else "top-n")
        name = spec.name
        cand = self.trace.scored.get(spec.index)
        rank = self.trace.ranks.get(spec.index)
        score = cand.score if cand is not None else None
        terms = self._terms(cand) if cand is not None else None
        channel = self.request.context.get("channel")
        details: dict[str, Any]
        if why == "suppressed":
            rule = self._suppressor(name)
            message = f"suppressed by `{rule.text}`" if rule else "suppressed by a rule"
            return ActionFate(name, "dropped", why, message, rule=rule)
        if why == "channel":
            channels = sorted(spec.channels)
            message = f"only for channels [{', '.join(channels)}], not {channel}"
            details = {"channel": channel, "channels": channels}
        elif why == "dates":
            start = _iso(spec.valid_from)
            end = _iso(spec.valid_until)
            assert spec.valid_from is not None and spec.valid_until is not None
            # As written: `valid A .. B` includes the whole of day B.
            written = (
                f"{printing.date(spec.valid_from)} .. {printing.date(spec.valid_until - 86400)}"
            )
            message = f"outside its validity dates ({written}; now {_iso(self.rt.now)})"
            details = {"valid_from": start, "valid_until": end, "now": _iso(self.rt.now)}
        elif why == "consent":
            have = sorted(self.inputs.profile.get("consents") or ())
            has = f"has {', '.join(have)}" if have else "has none"
            message = f'needs consent "{spec.consent}" (the customer {has})'
            details = {"consent": spec.consent, "consents": have}
        elif why == "degraded":
            message = "capped or fatigued actions are not offered while the store is unreachable"
            details = {}
        elif why == "cap":
            assert spec.cap is not None
            contacts = self.inputs.caps.get(name, 0)
            message = f"contact cap {spec.cap.text} reached ({contacts} so far)"
            details = {
                "limit": spec.cap.count,
                "window": printing.window(spec.cap.window_seconds),
                "contacts": contacts,
            }
        elif why == "fatigue":
            own = spec.fatigue
            if own is not None and self.inputs.rejections.get(name, 0) >= own.rejections:
                f: n.Fatigue | n.PolicyFatigue = own
                across = ""
            else:
                tiring = tiring_policy(self.plan, spec, channel, self.inputs.rejections)
                assert tiring is not None
                f = tiring
                across = f" of {tiring.scope} {tiring.name}"
            message = (
                f"fatigued: {f.rejections} rejections{across} within "
                f"{printing.window(f.window_seconds)}, so not offered for "
                f"{printing.window(f.period_seconds)}"
            )
            details = {
                "rejections": f.rejections,
                "window": printing.window(f.window_seconds),
                "period": printing.window(f.period_seconds),
            }
            if isinstance(f, n.PolicyFatigue):
                details |= {"scope": f.scope, "name": f.name}
        elif why == "policy":
            found = blocking_limit(self.plan, spec, channel, self.inputs.caps)
            assert found is not None
            policy, seen = found
            message = (
                f"contact policy reached: {policy.scope} {policy.name} allows {policy.text}"
                f" ({seen} so far)"
            )
            details = {
                "scope": policy.scope,
                "name": policy.name,
                "limit": policy.count,
                "window": printing.window(policy.window_seconds),
                "contacts": seen,
            }
        elif why == "bandit":
            bandit = self.trace.detail.get(spec.index, "")
            choice = self.bandits.get(bandit)
            pmf = dict(zip(choice.arms, choice.pmf, strict=True)) if choice else {}
            chosen = choice.chosen if choice else ""
            shown = ", ".join(f"{a} {p:.3g}" for a, p in pmf.items())
            message = f"bandit '{bandit}' chose {chosen} (probabilities: {shown})"
            details = {"bandit": bandit, "chosen": chosen, "probabilities": pmf}
        elif why == "diversity":
            tag = self.trace.detail.get(spec.index, "")
            message = (
                f"ranked {rank} but lost the diversity limit: max {self.plan.max_per_tag} "
                f"per tag, and tag '{tag}' was already taken"
            )
            details = {"tag": tag, "max_per_tag": self.plan.max_per_tag}
        else:  # top-n
            limit = (
                self.request.limit
                if self.plan.top is None
                else min(self.request.limit, self.plan.top)
            )
            message = (
                f"ranked {rank} with score {score:g}, below the top {limit}"
                if score is not None
                else f"below the top {limit}"
            )
            details = {"limit": limit}
        return ActionFate(
            name,
            "dropped",
            why,
            message,
            rank=rank if why in ("top-n", "diversity") else None,
            score=score,
            rule=self._rule_ref(cand.rule) if cand is not None else self._offering_rule(spec.index),
            terms=terms,
            details=details,
        )

    def _suppressor(self, action: str) -> RuleRef | None:
        for rp in self._rules:
            if (
                isinstance(rp.rule, n.SuppressRule)
                and rp.rule.action == action
                and self.why.fires(rp)
            ):
                return self._rule_ref(rp.rule_id)
        return None

    def _offering_rule(self, action: int) -> RuleRef | None:
        """The first rule that offered the action, as the evaluator reported it."""
        rule = next((o.rule for o in self.offers if o.action == action), None)
        return None if rule is None else self._rule_ref(rule)

    # ------------------------------------------------------------ not offered

    def not_offered(self, spec: ActionSpec) -> ActionFate:
        name = spec.name
        candidates = self._offering.get(name, [])
        is_default = self.plan.default == spec.index
        if not candidates:
            if is_default:
                message = "the default: returned only when no other action is left"
                return ActionFate(name, "not-offered", "standby", message)
            message = "no rule offers it"
            return ActionFate(name, "not-offered", "no-rule", message)
        # The closest rule; ties go to the first in the file.
        closest = min(candidates, key=self.why.misses)
        ref = self._rule_ref(closest.rule_id)
        leaf = self.why.culprit(closest)
        if leaf is None:  # pragma: no cover - the probes agree with the evaluator (tested)
            message = f"no rule offered it; `{ref.text}` holds on a second look"
            return ActionFate(name, "not-offered", "no-rule", message, rule=ref)
        cond = self._condition(leaf)
        shown = ", ".join(f"{k} = {_show(v)}" for k, v in cond.values.items())
        where = f" in segment {cond.segment}" if cond.segment else ""
        outcome = f"failed ({cond.error})" if cond.result == "error" else f"is {cond.result}"
        message = (
            f"no rule offered it: closest is `{ref.text}`, where `{cond.text}`{where} {outcome}"
        )
        if shown:
            message += f" ({shown})"
        if is_default:
            message += "; it is also the default, returned only when no other action is left"
        return ActionFate(name, "not-offered", "no-rule", message, rule=ref, condition=cond)


def _names_in(expr: n.Expr) -> set[str]:
    """The names an expression reads: models, `action.<attr>`, … (dotted)."""
    found: set[str] = set()
    stack: list[Any] = [expr]
    while stack:
        node = stack.pop()
        if isinstance(node, n.Ref):
            found.add(node.dotted)
        elif isinstance(node, n.Expr):
            stack.extend(getattr(node, f) for f in node.__dataclass_fields__ if f != "span")
        elif isinstance(node, tuple):
            stack.extend(node)
    return found


def _iso(epoch: float | None) -> str | None:
    if epoch is None:
        return None
    return datetime.fromtimestamp(epoch, UTC).isoformat().replace("+00:00", "Z")


def _show(value: Any) -> str:
    if value is None:
        return "missing"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)

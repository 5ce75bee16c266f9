"""Run a plan over a population and count what it decides: the studio's simulator.

Each member is a customer id and the `Inputs` the store read for them; each is
decided once per context, with `decide` itself (explanation on), so the mix is
exactly what `/v1/decide` would answer. The decision id of a member is fixed
per (customer, context), so two plans simulated over one population draw their
bandit samples from the same seeds and a change in the mix is the rules'
doing, not the dice's.

    mix = simulate(plan, population, contexts, oracle_for, now)
    mix.overall["welcome_offer"]       # how many decisions returned it first
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from arbiter.engine.decision.decide import decide
from arbiter.engine.decision.oracle import Oracle
from arbiter.engine.plan import Plan
from arbiter.engine.records import DecideRequest, Inputs

#: The action name counted when a decision returns nothing.
NOTHING = "(nothing)"


@dataclass
class Mix:
    """What one plan decided over a population: first actions counted overall,
    by channel (the context's `channel`, when it has one) and by true segment."""

    overall: Counter[str] = field(default_factory=Counter)
    by_channel: dict[str, Counter[str]] = field(default_factory=dict)
    by_segment: dict[str, Counter[str]] = field(default_factory=dict)
    first: dict[tuple[str, int], str] = field(default_factory=dict)  # (customer, context no.)
    decisions: int = 0

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict, counts sorted from most to least frequent."""
        return {
            "decisions": self.decisions,
            "overall": dict(self.overall.most_common()),
            "by_channel": {k: dict(v.most_common()) for k, v in sorted(self.by_channel.items())},
            "by_segment": {k: dict(v.most_common()) for k, v in sorted(self.by_segment.items())},
        }


def member_decision_id(customer_id: str, context_no: int) -> str:
    """A fixed decision id per (customer, context): repeatable bandit draws."""
    digest = hashlib.blake2b(f"{customer_id}\x1f{context_no}".encode(), digest_size=8)
    return f"sim-{digest.hexdigest()}"


def simulate(
    plan: Plan,
    population: Sequence[tuple[str, Inputs]],
    contexts: Sequence[Mapping[str, Any]],
    oracle_for: Callable[[], Oracle],
    now: float,
) -> Mix:
    """Decide for every member in every context; count the first action returned."""
    mix = Mix()
    limit = plan.top if plan.top is not None else 1
    for customer_id, inputs in population:
        for k, context in enumerate(contexts):
            request = DecideRequest(customer_id, dict(context), plan.name, limit, explain=True)
            decision, _ = decide(
                plan,
                request,
                inputs,
                decision_id=member_decision_id(customer_id, k),
                now=now,
                oracle=oracle_for(),
            )
            first = decision.actions[0].action if decision.actions else NOTHING
            mix.decisions += 1
            mix.overall[first] += 1
            mix.first[(customer_id, k)] = first
            channel = context.get("channel")
            if channel is not None:
                mix.by_channel.setdefault(str(channel), Counter())[first] += 1
            segments = (decision.explanation or {}).get("segments") or {}
            for name, value in segments.items():
                if value is True:
                    mix.by_segment.setdefault(name, Counter())[first] += 1
    return mix


def changes(
    before: Mix, after: Mix, contexts: Sequence[Mapping[str, Any]], limit: int = 20
) -> dict[str, Any]:
    """The members whose first action differs between two mixes, with examples."""
    changed = [
        (customer, k, was, after.first[(customer, k)])
        for (customer, k), was in before.first.items()
        if (customer, k) in after.first and after.first[(customer, k)] != was
    ]
    moves = Counter((was, now) for _, _, was, now in changed)
    return {
        "changed": len(changed),
        "of": len(before.first),
        "moves": [{"from": a, "to": b, "count": c} for (a, b), c in moves.most_common()],
        "examples": [
            {"customer_id": c, "context": dict(contexts[k]), "from": was, "to": now}
            for c, k, was, now in changed[:limit]
        ],
    }

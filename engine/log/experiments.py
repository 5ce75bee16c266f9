"""Experiment and holdout reports from the decision log and the outcomes.

`build_report` is pure: logged decisions and outcome events in, an
:class:`ExperimentReport` out (`to_json` for programs).
`engine.log.experiment_reads.load_report` reads them from Redis, and
`engine.log.experiment_render` draws a report for people (text, HTML).

The unit is the **customer**, the unit that was randomised (a customer's
variant is a hash of their id): a customer is *exposed* at their first logged
decision in which the split was in force, and belongs to the group that
decision recorded. Counting decisions instead would weigh frequent visitors
more and break the independence the tests assume. A customer *converts* if a
goal event of theirs falls in ``[first exposure, first exposure + within]``
(no end without ``within``); their reward is the sum of the goal's ``value``
property over those events (the number of events without ``value``). Without
a goal, the rewards of the customer's decisions (``POST /v1/feedback`` and
attributed events) are used: converted if any reward is positive, reward the
sum. That suits a bandit's arms, not a holdout, whose customers are shown no
rewarded action: give holdouts a goal.

Statistics are in `engine.log.experiment_stats`. The verdict refuses to
name a winner until every group has ``min_customers`` customers and
``min_conversions`` conversions, or when the sample-ratio check fails
(p < 0.001: the split is not what was declared, so any difference may come
from how customers were assigned). With several variants each is compared
with the control at ``alpha / (variants - 1)`` (Bonferroni).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from arbiter.dsl import nodes as n
from arbiter.dsl.checked import CheckedRuleset
from arbiter.dsl.errors import ArbiterError
from arbiter.engine.log.experiment_stats import (
    GroupCounts,
    Interval,
    Uplift,
    Welch,
    mean_interval,
    rate_uplift,
    sample_ratio_p,
    welch,
    wilson,
)
from arbiter.engine.records import DecisionRecord

__all__ = [
    "ExperimentReport",
    "GroupReport",
    "Outcome",
    "ReportError",
    "build_report",
    "split_of",
]

SRM_ALPHA = 0.001
TREATED = "treated"


class ReportError(ArbiterError):
    """The report cannot be made (an unknown experiment); ``code`` names why."""

    code = "unknown-experiment"

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True, slots=True)
class Outcome:
    """One goal event (or one reward) of a customer."""

    customer_id: str
    ts: float
    value: float


@dataclass(frozen=True, slots=True)
class Split:
    """What is compared: the groups (control first) with their declared shares, and the goal."""

    kind: str  # "experiment" or "holdout"
    name: str
    groups: tuple[tuple[str, float], ...]
    goal: n.Goal | None


def split_of(checked: CheckedRuleset, name: str) -> Split:
    """The experiment named ``name``, or the holdout (by its name or ``holdout``)."""
    if name in checked.experiments:
        decl = checked.experiments[name]
        return Split("experiment", name, decl.variants, decl.goal)
    holdout = checked.holdout
    if holdout is not None and name in (holdout.name, "holdout"):
        groups = ((holdout.name, holdout.fraction), (TREATED, 1 - holdout.fraction))
        return Split("holdout", holdout.name, groups, holdout.goal)
    known = sorted(checked.experiments) + ([holdout.name] if holdout else [])
    raise ReportError(
        "unknown_experiment",
        f"ruleset '{checked.name}' has no experiment or holdout '{name}'"
        + (f" (it has: {', '.join(known)})" if known else " (it declares none)"),
    )


def _group_of(split: Split, record: DecisionRecord) -> str | None:
    if split.kind == "experiment":
        return record.variants.get(split.name)
    # Every decision of a ruleset with a holdout records whether it was held out.
    return record.holdout if record.holdout is not None else TREATED


@dataclass
class GroupReport:
    """One group's figures; the comparison fields are None for the control."""

    name: str
    share: float
    customers: int
    decisions: int
    conversions: int
    rate: float
    rate_ci: Interval
    mean_reward: float
    reward_ci: Interval
    uplift: Uplift | None = None
    reward_difference: Welch | None = None


@dataclass
class ExperimentReport:
    """Everything `arbiter report` and `GET /v1/experiments/{name}` answer."""

    ruleset: str
    kind: str
    name: str
    goal: str
    control: str
    groups: list[GroupReport]
    sample_ratio_p: float
    sample_ratio_ok: bool
    verdict: str
    winner: str | None
    min_customers: int
    min_conversions: int
    alpha: float
    decisions_read: int = 0
    notes: list[str] = field(default_factory=list)
    since: float | None = None  # the decisions counted were made in [since, until]
    until: float | None = None

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (NaN, which JSON lacks, becomes null)."""
        out: dict[str, Any] = _clean(asdict(self))
        return out


def _clean(value: Any) -> Any:
    if isinstance(value, float):
        return None if math.isnan(value) or math.isinf(value) else value
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    return value


def _goal_text(goal: n.Goal | None) -> str:
    if goal is None:
        return "rewards (feedback and attributed events)"
    text = f"event {goal.event}"
    if goal.within is not None:
        text += f" within {_duration(goal.within)} of first exposure"
    if goal.value is not None:
        text += f", value {goal.value}"
    return text


def _duration(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"


def build_report(
    checked: CheckedRuleset,
    name: str,
    decisions: Iterable[DecisionRecord],
    outcomes: Iterable[Outcome],
    *,
    goal: n.Goal | None = None,
    min_customers: int = 1000,
    min_conversions: int = 20,
    alpha: float = 0.05,
) -> ExperimentReport:
    """The report of split ``name`` from the ruleset's logged decisions and the outcomes.

    ``outcomes`` are the goal's events (or, without a goal, one per reward
    with the rewarded decision's customer and time). ``goal`` overrides the
    declared one.
    """
    split = split_of(checked, name)
    goal = goal or split.goal
    first: dict[str, tuple[float, str]] = {}
    decisions_of: dict[str, int] = {}
    read = 0
    for record in decisions:
        if record.ruleset.name != checked.name:
            continue
        group = _group_of(split, record)
        if group is None:
            continue  # made before the experiment existed
        read += 1
        cid = record.request.customer_id
        decisions_of[cid] = decisions_of.get(cid, 0) + 1
        seen = first.get(cid)
        if seen is None or record.ts < seen[0]:
            first[cid] = (record.ts, group)
    within = goal.within if goal is not None and goal.within is not None else math.inf
    reward: dict[str, float] = {}
    converted: set[str] = set()
    for out in outcomes:
        seen = first.get(out.customer_id)
        if seen is None or not seen[0] <= out.ts <= seen[0] + within:
            continue
        reward[out.customer_id] = reward.get(out.customer_id, 0.0) + out.value
        if goal is not None or out.value > 0:
            converted.add(out.customer_id)
    names = [g for g, _ in split.groups]
    customers = dict.fromkeys(names, 0)
    conv = dict.fromkeys(names, 0)
    dec = dict.fromkeys(names, 0)
    rsum = dict.fromkeys(names, 0.0)
    rsq = dict.fromkeys(names, 0.0)
    notes: list[str] = []
    unknown = 0
    for cid, (_, group) in first.items():
        if group not in customers:
            unknown += 1  # a variant since removed from the declaration
            continue
        customers[group] += 1
        dec[group] += decisions_of[cid]
        conv[group] += cid in converted
        r = reward.get(cid, 0.0)
        rsum[group] += r
        rsq[group] += r * r
    if unknown:
        notes.append(f"{unknown} customers are in groups no longer declared; left out")
    counts = {g: GroupCounts(customers[g], conv[g], rsum[g], rsq[g]) for g in names}
    control = names[0]
    groups: list[GroupReport] = []
    for g, share in split.groups:
        c = counts[g]
        report = GroupReport(
            g,
            share,
            c.customers,
            dec[g],
            c.conversions,
            c.rate,
            wilson(c.conversions, c.customers),
            c.mean_reward,
            mean_interval(c),
        )
        if g != control:
            report.uplift = rate_uplift(counts[control], c)
            report.reward_difference = welch(counts[control], c)
        groups.append(report)
    srm_p = sample_ratio_p([customers[g] for g in names], [s for _, s in split.groups])
    srm_ok = not (srm_p < SRM_ALPHA)
    verdict, winner = _verdict(groups, srm_ok, min_customers, min_conversions, alpha)
    return ExperimentReport(
        checked.name,
        split.kind,
        split.name,
        _goal_text(goal),
        control,
        groups,
        srm_p,
        srm_ok,
        verdict,
        winner,
        min_customers,
        min_conversions,
        alpha,
        read,
        notes,
    )


def _verdict(
    groups: list[GroupReport], srm_ok: bool, min_customers: int, min_conversions: int, alpha: float
) -> tuple[str, str | None]:
    """A plain-language verdict and the winner (None: no winner called)."""
    small = [
        g.name for g in groups if g.customers < min_customers or g.conversions < min_conversions
    ]
    if small:
        return (
            f"Too early to call: {', '.join(small)} below the minimum sample "
            f"({min_customers} customers and {min_conversions} conversions per group).",
            None,
        )
    if not srm_ok:
        return (
            "Do not trust this result: the groups' sizes differ from the declared split "
            "(sample-ratio mismatch). Check how customers reach the decision.",
            None,
        )
    control = groups[0]
    level = alpha / max(1, len(groups) - 1)
    significant = [g for g in groups[1:] if g.uplift is not None and g.uplift.p_value < level]
    better = [g for g in significant if g.uplift is not None and g.uplift.absolute > 0]
    if better:
        best = max(better, key=lambda g: g.rate)
        assert best.uplift is not None
        return (
            f"{best.name} converts better than {control.name}: "
            f"{best.uplift.relative:+.1%} relative (p = {best.uplift.p_value:.3g}).",
            best.name,
        )
    if significant:
        worst = ", ".join(g.name for g in significant)
        return (f"{control.name} converts better than {worst} (significant).", control.name)
    return (
        f"No significant difference in conversion at alpha {alpha:g} "
        "(keep the experiment running to the planned sample, or accept no detectable effect).",
        None,
    )


# ------------------------------------------------------------------ reading Redis


def report_options(query: Mapping[str, Any]) -> dict[str, Any]:
    """Keyword options of `build_report` from parsed query/CLI values (absent ones left out)."""
    return {k: query[k] for k in ("min_customers", "min_conversions", "alpha") if k in query}

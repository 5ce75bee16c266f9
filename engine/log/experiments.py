"""Experiment and holdout reports from the decision log and the outcomes.

`build_report` is pure: logged decisions and outcome events in, an
:class:`ExperimentReport` out. `load_report` reads them from Redis (the
decision stream, the outcome stream, the reward stream). Renderers for
people (`render_text`, `render_html`) and `to_json` for programs are here too.

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

**A time range.** With ``since`` and ``until`` (epoch seconds) only the
decisions made in that range are counted, and only that part of each stream
is read (XRANGE by stream ids, which are arrival times in milliseconds): the
decision stream from ``since`` to ``until`` plus :data:`LOG_SLACK_S` (the log
writes behind the decision), the goal events from ``since`` to ``until +
within`` plus the slack (to the end without ``within``), the rewards from
``since`` on. A customer's first exposure is then their first decision in
the range. ``progress`` is told, per stream, which fraction of its time range
has been read.

Statistics are in `engine.log.experiment_stats`. The verdict refuses to
name a winner until every group has ``min_customers`` customers and
``min_conversions`` conversions, or when the sample-ratio check fails
(p < 0.001: the split is not what was declared, so any difference may come
from how customers were assigned). With several variants each is compared
with the control at ``alpha / (variants - 1)`` (Bonferroni).
"""

from __future__ import annotations

import html
import json
import math
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
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
from arbiter.engine.records import RECORD_DECODER, DecisionRecord
from arbiter.engine.store import keys

__all__ = [
    "ExperimentReport",
    "GroupReport",
    "Outcome",
    "ReportError",
    "build_report",
    "load_report",
    "render_html",
    "render_text",
    "split_of",
]

SRM_ALPHA = 0.001
TREATED = "treated"
#: How long after its time a decision may reach the decision stream (the log writes behind).
LOG_SLACK_S = 60.0
#: Told (stream label, fraction of its time range read) as a long read goes on.
Progress = Callable[[str, float], None]


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


def _id_ms(entry_id: bytes | str) -> int:
    raw = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
    return int(raw.split("-")[0])


async def _xrange(
    redis: Any,
    stream: str,
    since: float | None = None,
    until: float | None = None,
    *,
    label: str = "",
    progress: Progress | None = None,
    chunk: int = 1000,
) -> AsyncIterator[Any]:
    """The entries of ``stream`` that arrived in [since, until] (epoch seconds), in chunks.

    Stream ids start with their arrival time in ms, and XRANGE takes a bare
    time as the first (for the start) or the last (for the end) id of that ms.
    """
    start = "-" if since is None else str(int(since * 1000))
    end = "+" if until is None else str(int(until * 1000))
    low = None if since is None else int(since * 1000)
    high = int(time.time() * 1000) if until is None else int(until * 1000)
    while True:
        batch = await redis.xrange(stream, min=start, max=end, count=chunk)
        if not batch:
            if progress is not None:
                progress(label, 1.0)
            return
        for entry in batch:
            yield entry
        last = batch[-1][0]
        if progress is not None:
            low = _id_ms(batch[0][0]) if low is None else low
            progress(label, min(1.0, max(0.0, (_id_ms(last) - low) / max(1, high - low))))
        start = "(" + (last.decode() if isinstance(last, bytes) else str(last))


def _later(ts: float | None, by: float | None) -> float | None:
    return None if ts is None or by is None else ts + by


async def read_decisions(
    redis: Any,
    ruleset: str,
    since: float | None = None,
    until: float | None = None,
    progress: Progress | None = None,
) -> list[DecisionRecord]:
    """The ruleset's decisions made in [since, until] from the decision stream, oldest first."""
    out: list[DecisionRecord] = []
    needle = ruleset.encode()
    low = -math.inf if since is None else since
    high = math.inf if until is None else until
    entries = _xrange(
        redis,
        keys.DECISION_STREAM,
        since,
        _later(until, LOG_SLACK_S),
        label="decisions",
        progress=progress,
    )
    async for _, fields in entries:
        blob = fields.get(b"r")
        if blob is None or needle not in blob:
            continue  # cheap pre-filter before decoding
        record = RECORD_DECODER.decode(blob)
        if record.ruleset.name == ruleset and low <= record.ts <= high:
            out.append(record)
    return out


async def read_goal_events(
    redis: Any,
    goal: n.Goal,
    since: float | None = None,
    until: float | None = None,
    progress: Progress | None = None,
) -> list[Outcome]:
    """The goal's events from the outcome stream, with their value (1 without ``value``).

    With a range: those that arrived from ``since`` to ``until + within``
    (plus the log's slack), the latest a decision's window may end.
    """
    out: list[Outcome] = []
    kind = goal.event.encode()
    end = _later(_later(until, goal.within), LOG_SLACK_S)
    entries = _xrange(redis, keys.OUTCOME_STREAM, since, end, label="events", progress=progress)
    async for _, fields in entries:
        if fields.get(b"type") != kind:
            continue
        try:
            props = json.loads(fields.get(b"properties", b"{}"))
            value = 1.0 if goal.value is None else float(props.get(goal.value, 0.0))
            out.append(Outcome(fields[b"customer_id"].decode(), float(fields[b"ts"]), value))
        except (KeyError, ValueError, TypeError):
            continue
    return out


async def read_rewards(
    redis: Any,
    decisions: Iterable[DecisionRecord],
    since: float | None = None,
    progress: Progress | None = None,
) -> list[Outcome]:
    """Rewards of the given decisions from the reward stream (the first per decision and action).

    With ``since``, only the rewards that arrived from then on (a reward
    follows its decision).
    """
    by_id = {r.decision_id: r for r in decisions}
    seen: set[tuple[bytes, bytes]] = set()
    out: list[Outcome] = []
    entries = _xrange(redis, keys.REWARD_STREAM, since, label="rewards", progress=progress)
    async for _, fields in entries:
        key = (fields.get(b"decision_id", b""), fields.get(b"action", b""))
        record = by_id.get(key[0].decode())
        if record is None or key in seen:
            continue
        seen.add(key)
        try:
            value = float(fields[b"reward"])
        except (KeyError, ValueError):
            continue
        out.append(Outcome(record.request.customer_id, record.ts, value))
    return out


async def load_report(
    redis: Any,
    checked: CheckedRuleset,
    name: str,
    *,
    goal: n.Goal | None = None,
    since: float | None = None,
    until: float | None = None,
    progress: Progress | None = None,
    **options: Any,
) -> ExperimentReport:
    """Read the logs from Redis and build the report of split ``name`` (see `build_report`).

    ``since`` and ``until`` (epoch seconds) count only the decisions made in
    that range, reading only that part of the streams (see the module).
    """
    split = split_of(checked, name)
    goal = goal or split.goal
    decisions = await read_decisions(redis, checked.name, since, until, progress)
    if goal is not None:
        outcomes = await read_goal_events(redis, goal, since, until, progress)
    else:
        outcomes = await read_rewards(redis, decisions, since, progress)
    report = build_report(checked, name, decisions, outcomes, goal=goal, **options)
    report.since, report.until = since, until
    if goal is not None and not outcomes:
        report.notes.append(
            f"no '{goal.event}' events recorded yet: events are recorded for goals and "
            "rewards of live rulesets from the time they went live"
        )
    return report


# ------------------------------------------------------------------ rendering


def _pct(x: float | None, signed: bool = False) -> str:
    if x is None or math.isnan(x):
        return "-"
    return f"{x:+.2%}" if signed else f"{x:.2%}"


def _num(x: float | None, signed: bool = False) -> str:
    if x is None or math.isnan(x):
        return "-"
    return f"{x:+.4g}" if signed else f"{x:.4g}"


def _ci(ci: Interval, fmt: Any) -> str:
    if math.isnan(ci.low):
        return "-"
    return f"[{fmt(ci.low)}, {fmt(ci.high)}]"


def _p(p: float | None) -> str:
    if p is None or math.isnan(p):
        return "-"
    return f"{p:.3g}" if p >= 1e-4 else "<1e-4"


def _rows(report: ExperimentReport) -> list[list[str]]:
    head = [
        "group",
        "share",
        "customers",
        "decisions",
        "conversions",
        "rate [95% CI]",
        "uplift abs [95% CI]",
        "uplift rel [95% CI]",
        "p (z)",
        "mean reward [95% CI]",
        "reward diff [95% CI]",
        "p (Welch)",
    ]
    rows = [head]
    for g in report.groups:
        u, w = g.uplift, g.reward_difference
        rows.append(
            [
                g.name + (" (control)" if g.name == report.control else ""),
                _pct(g.share),
                str(g.customers),
                str(g.decisions),
                str(g.conversions),
                f"{_pct(g.rate)} {_ci(g.rate_ci, _pct)}",
                f"{_pct(u.absolute, True)} {_ci(u.absolute_ci, lambda x: _pct(x, True))}"
                if u
                else "",
                f"{_pct(u.relative, True)} {_ci(u.relative_ci, lambda x: _pct(x, True))}"
                if u
                else "",
                _p(u.p_value) if u else "",
                f"{_num(g.mean_reward)} {_ci(g.reward_ci, _num)}",
                f"{_num(w.difference, True)} {_ci(w.ci, lambda x: _num(x, True))}" if w else "",
                _p(w.p_value) if w else "",
            ]
        )
    return rows


def _range_text(report: ExperimentReport) -> str:
    if report.since is None and report.until is None:
        return ""

    def when(ts: float | None, default: str) -> str:
        if ts is None:
            return default
        return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(ts))

    return f", made from {when(report.since, 'the start')} to {when(report.until, 'now')}"


def render_text(report: ExperimentReport) -> str:
    """A table for a terminal."""
    rows = _rows(report)
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = [
        f"{report.kind} {report.name} of ruleset {report.ruleset}",
        f"goal: {report.goal}; {report.decisions_read} decisions read{_range_text(report)}",
        "",
    ]
    for i, row in enumerate(rows):
        lines.append("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
        if i == 0:
            lines.append("  ".join("-" * w for w in widths))
    srm = "ok" if report.sample_ratio_ok else "MISMATCH"
    lines += [
        "",
        f"sample ratio: chi-squared p = {_p(report.sample_ratio_p)} ({srm})",
        f"verdict: {report.verdict}",
    ]
    lines += [f"note: {note}" for note in report.notes]
    return "\n".join(lines) + "\n"


def render_html(report: ExperimentReport) -> str:
    """A self-contained HTML page: the table and a chart of each group's rate with its CI."""
    rows = _rows(report)
    esc = html.escape
    table = (
        "<table><thead><tr>"
        + "".join(f"<th>{esc(c)}</th>" for c in rows[0])
        + "</tr></thead><tbody>"
    )
    for row in rows[1:]:
        table += "<tr>" + "".join(f"<td>{esc(c)}</td>" for c in row) + "</tr>"
    table += "</tbody></table>"
    chart = _svg_chart(report)
    title = esc(f"{report.kind} {report.name} ({report.ruleset})")
    return (
        "<!doctype html><html><head><meta charset='utf-8'>"
        f"<title>{title}</title><style>"
        "body{font-family:system-ui,sans-serif;margin:2em;color:#222}"
        "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:4px 8px;"
        "text-align:right}th{background:#f4f4f4}td:first-child{text-align:left}"
        ".verdict{font-size:1.2em;margin:1em 0}"
        "</style></head><body>"
        f"<h1>{title}</h1><p>goal: {esc(report.goal)}; {report.decisions_read} decisions "
        f"read{esc(_range_text(report))}</p>"
        f"<p class='verdict'>{esc(report.verdict)}</p>{chart}{table}"
        f"<p>sample ratio: chi-squared p = {esc(_p(report.sample_ratio_p))} "
        f"({'ok' if report.sample_ratio_ok else 'MISMATCH'})</p>"
        + "".join(f"<p>note: {esc(note)}</p>" for note in report.notes)
        + "</body></html>\n"
    )


def _svg_chart(report: ExperimentReport) -> str:
    """Horizontal bars: each group's conversion rate, with its 95% interval as a whisker."""
    groups = [g for g in report.groups if not math.isnan(g.rate)]
    if not groups:
        return ""
    top = max(max(g.rate_ci.high for g in groups), 1e-9) * 1.1
    width, bar, left = 600, 28, 140
    height = len(groups) * (bar + 12) + 30
    parts = [
        f"<svg xmlns='http://www.w3.org/2000/svg' width='{width + left + 80}' height='{height}'>"
    ]
    for i, g in enumerate(groups):
        y = 10 + i * (bar + 12)
        w = g.rate / top * width
        lo, hi = g.rate_ci.low / top * width, g.rate_ci.high / top * width
        colour = "#999" if g.name == report.control else "#3a7bd5"
        parts.append(
            f"<text x='0' y='{y + bar * 0.7}' font-size='14'>{html.escape(g.name)}</text>"
            f"<rect x='{left}' y='{y}' width='{w:.1f}' height='{bar}' fill='{colour}'/>"
            f"<line x1='{left + lo:.1f}' x2='{left + hi:.1f}' y1='{y + bar / 2}' "
            f"y2='{y + bar / 2}' stroke='#000' stroke-width='2'/>"
            f"<text x='{left + hi + 6:.1f}' y='{y + bar * 0.7}' font-size='12'>{_pct(g.rate)}</text>"
        )
    parts.append("</svg>")
    return "".join(parts)


def report_options(query: Mapping[str, Any]) -> dict[str, Any]:
    """Keyword options of `build_report` from parsed query/CLI values (absent ones left out)."""
    return {k: query[k] for k in ("min_customers", "min_conversions", "alpha") if k in query}

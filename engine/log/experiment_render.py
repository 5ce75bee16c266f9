"""An experiment report drawn for people: a text table and a self-contained HTML page
with an SVG chart of each group's conversion rate and its interval."""

from __future__ import annotations

import html
import math
import time
from typing import Any

from arbiter.engine.log.experiment_stats import Interval
from arbiter.engine.log.experiments import ExperimentReport

__all__ = ["render_html", "render_text"]


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

"""A `ReplayReport` for people and programs: text, JSON, and one self-contained HTML page.

The HTML page has no script and loads nothing: inline CSS, tables and an SVG
bar chart of the action mix before and after, so it can be mailed, attached
to a CI run or opened offline.
"""

from __future__ import annotations

import html
from typing import Any

from arbiter.engine.log.whatif import ReplayReport

__all__ = ["summary_line", "to_html", "to_json", "to_text"]


def _identical(r: ReplayReport) -> int:
    return r.reproduced + (r.new_version - r.changed - r.rescored)


def summary_line(r: ReplayReport) -> str:
    """One line of totals (the first line of the text report)."""
    return (
        f"replayed {r.total - r.skipped}: {_identical(r)} identical, {r.mismatch_count} differ "
        f"under the same ruleset version, {r.changed} changed by a new ruleset version; "
        f"{r.skipped} skipped (ruleset not loaded)"
    )


def _pct(part: float, whole: float) -> str:
    return f"{100 * part / whole:.1f}%" if whole else "-"


def _mix(r: ReplayReport) -> list[tuple[str, int, int]]:
    rows = [(name, a.before, a.after) for name, a in r.actions.items()]
    return sorted(rows, key=lambda x: (-max(x[1], x[2]), x[0]))


def to_json(r: ReplayReport) -> dict[str, Any]:
    """The report as plain JSON-able data (stable keys; what CI scripts read)."""
    return {
        "replayed": r.total - r.skipped,
        "identical": _identical(r),
        "skipped": r.skipped,
        "notes": list(r.notes),
        "same_version": {
            "records": r.same_version,
            "reproduced": r.reproduced,
            "mismatches": r.mismatch_count,
            "first_mismatches": [{"decision_id": i, "difference": d} for i, d in r.mismatches],
        },
        "new_version": {
            "records": r.new_version,
            "changed": r.changed,
            "rescored": r.rescored,
            "newly_nothing": r.newly_nothing,
            "value_before": r.value_before,
            "value_after": r.value_after,
            "matrix": [
                {"before": b, "after": a, "count": n}
                for (b, a), n in sorted(r.matrix.items(), key=lambda x: (-x[1], x[0]))
            ],
            "actions": {
                k: {"before": v.before, "after": v.after, "gained": v.gained, "lost": v.lost}
                for k, v in sorted(r.actions.items())
            },
            "channels": {
                k: {"decisions": v.decisions, "changed": v.changed}
                for k, v in sorted(r.channels.items())
            },
            "segments": {
                k: {"decisions": v.decisions, "changed": v.changed}
                for k, v in sorted(r.segments.items())
            },
            "changes": {
                kind: {
                    "count": n,
                    "examples": [vars(e) for e in r.examples.get(kind, [])],
                }
                for kind, n in sorted(r.kinds.items(), key=lambda x: (-x[1], x[0]))
            },
        },
    }


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows, strict=True)]
    line = "  ".join(f"{{:<{w}}}" if i == 0 else f"{{:>{w}}}" for i, w in enumerate(widths))
    return ["    " + line.format(*header)] + ["    " + line.format(*row) for row in rows]


def to_text(r: ReplayReport, *, examples: bool = True) -> str:
    """The report as a terminal reads it."""
    out = [summary_line(r)]
    out += [f"NOTE: {n}" for n in r.notes]
    if r.mismatch_count:
        out += ["", f"MISMATCHES under the same ruleset version ({r.mismatch_count}):"]
        out += [f"  {i}: {d}" for i, d in r.mismatches]
        if r.mismatch_count > len(r.mismatches):
            out.append(f"  ... and {r.mismatch_count - len(r.mismatches)} more")
    if not r.new_version:
        return "\n".join(out) + "\n"
    n = r.new_version
    out += [
        "",
        f"WHAT-IF: {n} decisions replayed against a new ruleset version",
        f"  changed: {r.changed} ({_pct(r.changed, n)}); rescored only: {r.rescored}; "
        f"newly no action: {r.newly_nothing}",
        f"  value (sum of returned scores): {r.value_before:.6g} before, "
        f"{r.value_after:.6g} after ({_signed_pct(r.value_after - r.value_before, r.value_before)})",
        "",
        "  action mix (first action):",
    ]
    out += _table(
        ["action", "before", "after", "gained", "lost"],
        [
            [name, str(b), str(a), str(r.actions[name].gained), str(r.actions[name].lost)]
            for name, b, a in _mix(r)
        ],
    )
    out += ["", "  old -> new (first action):"]
    out += _table(
        ["before", "after", "decisions"],
        [[b, a, str(c)] for (b, a), c in sorted(r.matrix.items(), key=lambda x: (-x[1], x[0]))],
    )
    for title, parts in (("channel", r.channels), ("segment", r.segments)):
        out += ["", f"  per {title}:"]
        out += _table(
            [title, "decisions", "changed", "share"],
            [
                [k, str(v.decisions), str(v.changed), _pct(v.changed, v.decisions)]
                for k, v in sorted(parts.items(), key=lambda x: (-x[1].changed, x[0]))
            ],
        )
    if examples and r.kinds:
        out += ["", "  changes, with examples:"]
        for kind, count in sorted(r.kinds.items(), key=lambda x: (-x[1], x[0])):
            out.append(f"    {kind.replace('->', ' -> ')}: {count} decisions")
            for e in r.examples.get(kind, []):
                before = ", ".join(e.before) or "nothing"
                after = ", ".join(e.after) or "nothing"
                out.append(
                    f"      {e.decision_id}: CHANGED {before} -> {after} [new ruleset version]"
                )
                out.append(
                    f"        customer {e.customer_id}, channel {e.channel or '-'}, "
                    f"segments: {', '.join(e.segments) or '-'}"
                )
                out += [f"        then: {t}" for t in e.trace_before or ["no rule fired"]]
                out += [f"        now:  {t}" for t in e.trace_after or ["no rule fired"]]
    return "\n".join(out) + "\n"


def _signed_pct(delta: float, base: float) -> str:
    return f"{100 * delta / base:+.1f}%" if base else "-"


_CSS = """
body{font:14px/1.45 system-ui,sans-serif;margin:2rem auto;max-width:1100px;color:#1d1d1f;padding:0 1rem}
h1{font-size:1.5rem}h2{font-size:1.15rem;margin-top:2rem;border-bottom:1px solid #ddd}
table{border-collapse:collapse;margin:.5rem 0}td,th{padding:.25rem .6rem;border:1px solid #ddd;text-align:right}
th{background:#f4f4f6}td:first-child,th:first-child{text-align:left}
.cards{display:flex;gap:1rem;flex-wrap:wrap}.card{border:1px solid #ddd;border-radius:8px;padding:.8rem 1.2rem}
.card b{display:block;font-size:1.6rem}.bad{color:#b00020}.ok{color:#0a7d32}
.ex{border-left:3px solid #4a6cf7;padding:.3rem .8rem;margin:.6rem 0;background:#fafbff}
.cols{display:grid;grid-template-columns:1fr 1fr;gap:1rem}code{font-size:12px}
"""


def _h(x: object) -> str:
    return html.escape(str(x))


def _html_table(header: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{_h(c)}</th>" for c in header)
    body = "".join("<tr>" + "".join(f"<td>{_h(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def mix_chart(rows: list[tuple[str, int, int]]) -> str:
    """An SVG of grouped horizontal bars: each action's count before (grey) and after (blue)."""
    if not rows:
        return ""
    label_w, bar_w, row_h = 220, 520, 34
    top = max(max(b, a) for _, b, a in rows) or 1
    height = 30 + row_h * len(rows)
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{label_w + bar_w + 90}" '
        f'height="{height}" role="img" aria-label="action mix before and after">',
        '<rect x="0" y="0" width="12" height="12" fill="#b8b8c0"/>'
        '<text x="18" y="11" font-size="12">before</text>'
        '<rect x="80" y="0" width="12" height="12" fill="#4a6cf7"/>'
        '<text x="98" y="11" font-size="12">after</text>',
    ]
    for i, (name, before, after) in enumerate(rows):
        y = 24 + i * row_h
        parts.append(
            f'<text x="{label_w - 8}" y="{y + 17}" font-size="12" text-anchor="end">{_h(name)}</text>'
        )
        for j, (value, colour) in enumerate(((before, "#b8b8c0"), (after, "#4a6cf7"))):
            w = max(1.0, bar_w * value / top)
            yy = y + j * 13
            parts.append(
                f'<rect x="{label_w}" y="{yy}" width="{w:.1f}" height="12" fill="{colour}">'
                f"<title>{_h(name)} {('before', 'after')[j]}: {value}</title></rect>"
                f'<text x="{label_w + w + 4:.1f}" y="{yy + 10}" font-size="11">{value}</text>'
            )
    parts.append("</svg>")
    return "".join(parts)


def to_html(r: ReplayReport, title: str = "Arbiter replay report") -> str:
    """One self-contained HTML page: cards, a chart, tables and examples."""
    n = r.new_version
    cards = [
        ("replayed", r.total - r.skipped, ""),
        ("identical", _identical(r), "ok"),
        ("differ (same version)", r.mismatch_count, "bad" if r.mismatch_count else "ok"),
        ("changed (new version)", f"{r.changed} ({_pct(r.changed, n)})", ""),
        ("newly no action", r.newly_nothing, "bad" if r.newly_nothing else ""),
        ("value before → after", f"{r.value_before:.4g} → {r.value_after:.4g}", ""),
    ]
    body = [
        f"<h1>{_h(title)}</h1>",
        f"<p>{_h(summary_line(r))}</p>",
        *(f"<p class='bad'>{_h(n)}</p>" for n in r.notes),
        '<div class="cards">'
        + "".join(
            f'<div class="card"><span>{_h(k)}</span><b class="{c}">{_h(v)}</b></div>'
            for k, v, c in cards
        )
        + "</div>",
    ]
    if r.mismatch_count:
        body.append(f"<h2 class='bad'>Mismatches under the same ruleset ({r.mismatch_count})</h2>")
        body.append(
            _html_table(["decision", "first differing field"], [list(m) for m in r.mismatches])
        )
    if n:
        mix = _mix(r)
        body += ["<h2>Action mix (first action)</h2>", mix_chart(mix)]
        body.append(
            _html_table(
                ["action", "before", "after", "gained", "lost"],
                [
                    [k, str(b), str(a), str(r.actions[k].gained), str(r.actions[k].lost)]
                    for k, b, a in mix
                ],
            )
        )
        body += ["<h2>Old → new</h2>", _matrix_html(r)]
        for label, parts in (("channel", r.channels), ("segment", r.segments)):
            body.append(f"<h2>Per {label}</h2>")
            body.append(
                _html_table(
                    [label, "decisions", "changed", "share"],
                    [
                        [k, str(v.decisions), str(v.changed), _pct(v.changed, v.decisions)]
                        for k, v in sorted(parts.items(), key=lambda x: (-x[1].changed, x[0]))
                    ],
                )
            )
        body.append("<h2>Changes, with examples</h2>")
        for kind, count in sorted(r.kinds.items(), key=lambda x: (-x[1], x[0])):
            body.append(f"<h3>{_h(kind.replace('->', ' → '))}: {count}</h3>")
            for e in r.examples.get(kind, []):
                then = "<br>".join(_h(t) for t in e.trace_before) or "no rule fired"
                now = "<br>".join(_h(t) for t in e.trace_after) or "no rule fired"
                body.append(
                    f'<div class="ex"><code>{_h(e.decision_id)}</code> customer '
                    f"{_h(e.customer_id)}, channel {_h(e.channel or '-')}, segments "
                    f"{_h(', '.join(e.segments) or '-')}"
                    f'<div class="cols"><div><b>then</b>: {_h(", ".join(e.before) or "nothing")}'
                    f"<br><code>{then}</code></div><div><b>now</b>: "
                    f"{_h(', '.join(e.after) or 'nothing')}<br><code>{now}</code></div></div></div>"
                )
    return (
        f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{_h(title)}</title>'
        f"<style>{_CSS}</style></head><body>{''.join(body)}</body></html>\n"
    )


def _matrix_html(r: ReplayReport) -> str:
    """Old action (rows) by new action (columns), shaded by count: blue kept, orange moved."""
    names = sorted({b for b, _ in r.matrix} | {a for _, a in r.matrix})
    top = max(r.matrix.values(), default=1)
    rows = []
    for b in names:
        cells = [f"<td><b>{_h(b)}</b></td>"]
        for a in names:
            count = r.matrix.get((b, a), 0)
            if not count:
                cells.append("<td></td>")
                continue
            hue = "74,108,247" if a == b else "230,120,40"
            shade = 0.08 + 0.6 * count / top
            cells.append(f'<td style="background:rgba({hue},{shade:.2f})">{count}</td>')
        rows.append("<tr>" + "".join(cells) + "</tr>")
    header = "".join(f"<th>{_h(a)}</th>" for a in names)
    return f"<table><tr><th>before ↓ / after →</th>{header}</tr>{''.join(rows)}</table>"

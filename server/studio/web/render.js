// Rendering helpers: DOM building, the engine's explanation object shown generically
// (so fields the engine adds later appear without changes here), and bar charts.

export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "class") el.className = v;
    else if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else el.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

const TITLES = {
  segments: "Segments", fired: "Rules that fired", suppressed: "Suppressed by a rule",
  holdout: "Holdout", bandits: "Bandits", errors: "Evaluation problems",
  not_returned: "Why not the others", candidates: "Candidates", why_not: "Why not",
};

function title(key) {
  return TITLES[key] || key.replace(/_/g, " ").replace(/^./, (c) => c.toUpperCase());
}

function isEmpty(v) {
  return v === null || v === undefined || (Array.isArray(v) && !v.length) ||
    (typeof v === "object" && !Array.isArray(v) && !Object.keys(v).length);
}

function scalar(v) {
  if (typeof v === "number") return Number.isInteger(v) ? String(v) : v.toFixed(4).replace(/0+$/, "");
  if (typeof v === "boolean") return v ? "yes" : "no";
  if (v === null || v === undefined) return "—";
  if (typeof v === "object") return JSON.stringify(v);
  return String(v);
}

// Any JSON value as readable HTML: objects of booleans as chips, arrays of objects as
// tables, other objects as key/value tables, arrays of scalars as chips.
export function value(v) {
  if (Array.isArray(v)) {
    if (v.length && v.every((x) => x && typeof x === "object" && !Array.isArray(x))) {
      const cols = [...new Set(v.flatMap((x) => Object.keys(x)))];
      return h("table", {}, h("thead", {}, h("tr", {}, cols.map((c) => h("th", {}, title(c))))),
        h("tbody", {}, v.map((row) => h("tr", {}, cols.map((c) => h("td", {}, cell(row[c])))))));
    }
    return h("div", {}, v.map((x) => h("span", { class: "chip" }, scalar(x))));
  }
  if (v && typeof v === "object") {
    const entries = Object.entries(v);
    if (entries.length && entries.every(([, x]) => typeof x === "boolean")) {
      return h("div", {}, entries.map(([k, x]) => h("span", { class: `chip ${x}`, title: x ? "true" : "false" }, k)));
    }
    return h("table", {}, h("tbody", {}, entries.map(([k, x]) => h("tr", {}, h("th", {}, k), h("td", {}, cell(x))))));
  }
  return document.createTextNode(scalar(v));
}

function cell(v) {
  return v && typeof v === "object" ? value(v) : scalar(v);
}

export function explanation(explain) {
  const box = h("div", { class: "explain" });
  for (const [key, v] of Object.entries(explain || {})) {
    if (isEmpty(v)) continue;
    box.append(h("h4", {}, title(key)), value(v));
  }
  return box;
}

export function actionsCard(actions) {
  if (!actions.length) return h("p", {}, "No action: nothing would be shown.");
  return h("div", { class: "chosen" }, actions.map((a, i) =>
    h("div", { class: "card" },
      h("span", { class: `action${i === 0 ? " big" : ""}` }, a.action),
      h("div", { class: "meta" }, `score ${scalar(a.score)}` +
        (a.probability !== undefined ? ` · probability ${scalar(a.probability)}` : "")),
      a.payload && Object.keys(a.payload).length ? value(a.payload) : null)));
}

export function errorBox(err) {
  const lines = [err.message];
  return h("div", { class: "error-box", role: "alert" }, lines.join("\n"));
}

const COLORS = ["#2857d6", "#b4bfd6"];

// Horizontal bars, one group per label, one bar per series: [{name, counts}].
export function barChart(series, { label = "decisions" } = {}) {
  const labels = [...new Set(series.flatMap((s) => Object.keys(s.counts)))];
  labels.sort((a, b) => (series[0].counts[b] || 0) - (series[0].counts[a] || 0));
  const max = Math.max(1, ...series.flatMap((s) => Object.values(s.counts)));
  const barH = 14;
  const groupH = barH * series.length + 8;
  const left = 170;
  const width = 520;
  const height = labels.length * groupH + 4;
  const ns = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
  svg.setAttribute("class", "chart");
  svg.setAttribute("role", "img");
  svg.setAttribute("aria-label", `${label} per action: ` +
    labels.map((l) => `${l} ${series.map((s) => s.counts[l] || 0).join(" vs ")}`).join(", "));
  const add = (tag, attrs, text) => {
    const el = document.createElementNS(ns, tag);
    for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, v);
    if (text !== undefined) el.textContent = text;
    svg.append(el);
  };
  labels.forEach((l, i) => {
    const y = i * groupH;
    add("text", { x: left - 6, y: y + groupH / 2 + 2, "text-anchor": "end" }, l.length > 24 ? l.slice(0, 23) + "…" : l);
    series.forEach((s, j) => {
      const n = s.counts[l] || 0;
      const w = ((width - left - 50) * n) / max;
      add("rect", { x: left, y: y + j * barH + 2, width: Math.max(w, n ? 2 : 0), height: barH - 3, fill: COLORS[j % COLORS.length], rx: 2 });
      add("text", { x: left + w + 4, y: y + j * barH + barH - 3 }, String(n));
    });
  });
  const legend = series.length > 1
    ? h("div", { class: "legend" }, series.map((s, j) => h("span", {}, h("i", { style: `background:${COLORS[j]}` }), s.name)))
    : null;
  return h("div", {}, legend, svg);
}

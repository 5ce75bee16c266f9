// The editor's knowledge of .rules: highlighting (a stream tokenizer), completion of
// declared names (from the last /v1/check), and the lint source (the server's checker).
import {
  StreamLanguage, HighlightStyle, syntaxHighlighting, tags as t,
} from "./vendor/codemirror.js";

const KEYWORDS = new Set(("ruleset include profile context event model onnx inputs per action segment " +
  "value channels cap requires consent valid tags suppress after rejections within for payload " +
  "when offer weight priority if else bandit over features explore reward arbitrate by top max tag " +
  "holdout experiment default scenario events scores now expect nothing customer in and or not " +
  "between starts ends with contains matches is missing present one of set").split(" "));
const TYPES = new Set(["int", "number", "string", "bool", "time", "duration"]);
const AGGREGATES = new Set(["count", "sum", "min", "max", "avg", "distinct", "last_seen"]);

export const rulesLanguage = StreamLanguage.define({
  name: "rules",
  token(stream) {
    if (stream.eatSpace()) return null;
    if (stream.match(/^#.*/)) return "comment";
    if (stream.match(/^"([^"\\\n]|\\.)*"?/)) return "string";
    if (stream.match(/^\d{4}-\d{2}-\d{2}(T\d{2}:\d{2}(:\d{2})?Z?)?/)) return "number";
    if (stream.match(/^\d+(ms|s|m|h|d|w)(?![A-Za-z0-9_])/)) return "unit";
    if (stream.match(/^\d+(\.\d+)?%/)) return "number";
    if (stream.match(/^\d+(\.\d+)?([eE][+-]?\d+)?/)) return "number";
    if (stream.match(/^(==|!=|<=|>=|<|>|\+|-|\*|\/|\.\.)/)) return "operator";
    const word = stream.match(/^[A-Za-z_][A-Za-z0-9_]*/);
    if (word) {
      const w = word[0];
      if (w === "true" || w === "false" || w === "null") return "atom";
      if (KEYWORDS.has(w)) return "keyword";
      if (TYPES.has(w)) return "typeName";
      if (AGGREGATES.has(w)) return "function";
      return "variableName";
    }
    stream.next();
    return null;
  },
  languageData: { commentTokens: { line: "#" } },
  tokenTable: { function: t.function(t.variableName), unit: t.unit },
});

export const rulesHighlight = syntaxHighlighting(HighlightStyle.define([
  { tag: t.keyword, color: "#7a1fa2", fontWeight: "600" },
  { tag: t.comment, color: "#6a737d", fontStyle: "italic" },
  { tag: t.string, color: "#0a6b2d" },
  { tag: [t.number, t.unit], color: "#b34700" },
  { tag: t.atom, color: "#005cc5" },
  { tag: t.typeName, color: "#1660a8" },
  { tag: t.function(t.variableName), color: "#1660a8" },
  { tag: t.operator, color: "#555" },
]));

const KIND_LABEL = {
  segment: "segment", action: "action", profile: "profile field", context: "context field",
  event: "event", model: "model score", bandit: "bandit", experiment: "experiment",
};

// Completion: what may come at the cursor, from the names the checker last saw.
export function completionSource(getSymbols) {
  return (ctx) => {
    const before = ctx.matchBefore(/[A-Za-z_][A-Za-z0-9_.]*$/);
    const opener = ctx.matchBefore(/(offer|over \[|last_seen\(|(count|sum|min|max|avg)\()\s*[A-Za-z0-9_, ]*$/);
    if (!before && !ctx.explicit) return null;
    const symbols = getSymbols() || [];
    const text = before ? before.text : "";
    const dot = text.lastIndexOf(".");
    const from = before ? before.from + dot + 1 : ctx.pos;
    let options;
    if (dot >= 0) {
      const head = text.slice(0, dot);
      const kind = { profile: "profile", context: "context", experiment: "experiment" }[head];
      if (!kind) return null;
      options = symbols.filter((s) => s.kind === kind);
    } else if (opener && /^offer/.test(opener.text)) {
      options = symbols.filter((s) => s.kind === "action");
    } else if (opener && /^over/.test(opener.text)) {
      options = symbols.filter((s) => s.kind === "action");
    } else if (opener) {
      options = symbols.filter((s) => s.kind === "event");
    } else {
      options = symbols.filter((s) => ["segment", "model", "action"].includes(s.kind));
      options = options.concat([{ name: "profile", kind: "keyword" }, { name: "context", kind: "keyword" }]);
    }
    return {
      from,
      options: options.map((s) => ({
        label: s.name,
        type: s.kind === "action" ? "constant" : s.kind === "segment" ? "variable" : "property",
        detail: [KIND_LABEL[s.kind] || s.kind, s.detail].filter(Boolean).join(" · "),
      })),
      validFor: /^[A-Za-z0-9_]*$/,
    };
  };
}

// Converts the server's 1-based line/column diagnostics to editor ranges.
export function toEditorDiagnostics(doc, report) {
  const out = [];
  for (const d of report.diagnostics) {
    const inOtherFile = d.file !== report.file;
    let from = 0;
    let to = 0;
    if (!inOtherFile && d.line >= 1 && d.line <= doc.lines) {
      const line = doc.line(d.line);
      from = Math.min(line.from + Math.max(d.column - 1, 0), line.to);
      if (d.end_line >= d.line && d.end_line <= doc.lines && (d.end_line > d.line || d.end_column > d.column)) {
        to = Math.min(doc.line(d.end_line).from + d.end_column - 1, doc.length);
      } else {
        const word = /^[A-Za-z0-9_]+/.exec(doc.sliceString(from, line.to));
        to = from + (word ? word[0].length : 1);
      }
      to = Math.max(to, Math.min(from + 1, doc.length));
    }
    const message = (inOtherFile ? `${d.file}:${d.line}:${d.column}: ` : "") + d.message +
      (d.hint ? ` — ${d.hint}` : "");
    const diag = { from, to, severity: d.severity, message, source: d.code };
    if (d.fix && !inOtherFile) {
      diag.actions = [{
        name: `Change to '${d.fix}'`,
        apply(view, f, t2) { view.dispatch({ changes: { from: f, to: t2, insert: d.fix } }); },
      }];
    }
    out.push(diag);
  }
  return out;
}

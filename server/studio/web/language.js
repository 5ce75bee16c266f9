// The editor's knowledge of .rules: highlighting and folding (a Lezer parser generated
// from server/studio/bundle/rules.grammar, a port of dsl/grammar.lark), completion of
// declared names (from the last /v1/check), and the lint source (the server's checker).
import {
  LRLanguage, HighlightStyle, syntaxHighlighting, foldNodeProp, foldInside, indentNodeProp,
  delimitedIndent, styleTags, tags as t, rulesParser,
} from "./vendor/codemirror.js";

// Every keyword of the grammar is a node of its own name (kw<...> in rules.grammar).
const KEYWORDS = ("ruleset include profile context event model onnx inputs per action attributes " +
  "segment value channels cap requires consent valid tags suppress after rejections within for " +
  "payload contact policy channel tag when offer weight priority if else bandit over features " +
  "explore reward arbitrate by top max holdout experiment goal default trigger on unless decide " +
  "scenario events scores now expect nothing customer experiments in or and not between starts " +
  "ends with contains matches is missing present one of set ago");
const AGGREGATES = "count sum min max avg distinct last_seen contacts";
// The {…} blocks a user folds: declarations' bodies, rule blocks, scenarios, payloads.
const BLOCKS = "FieldBlock ActionBody PolicyBody RuleBlock ExperimentBody ScenarioBody " +
  "EventsBlock JsonObject JsonArray";

// Where a name is declared (highlighted apart from its uses).
const DEFINITIONS = "RulesetHeader/Name SegmentDecl/Name ActionDecl/Name ModelDecl/Name " +
  "BanditDecl/Name ExperimentDecl/Name TriggerDecl/Name EventDecl/Name";

export const rulesParserWithProps = rulesParser.configure({
  props: [
    styleTags({
      [KEYWORDS]: t.keyword,
      [AGGREGATES]: t.function(t.variableName),
      "true false null": t.bool,
      LineComment: t.lineComment,
      String: t.string,
      Number: t.number,
      Percent: t.number,
      Duration: t.unit,
      "Date DateTime": t.special(t.number),
      "SimpleType/Name": t.typeName,
      [DEFINITIONS]: t.definition(t.variableName),
      "FieldName/Name AttributeName/Name PropertyName/Name": t.propertyName,
      "Call/Name": t.function(t.variableName),
      "Ref/Name": t.variableName,
      CompareOp: t.compareOperator,
      ArithOp: t.arithmeticOperator,
      '"-"': t.arithmeticOperator,
      '"="': t.definitionOperator,
      '".."': t.punctuation,
      "( )": t.paren,
      "[ ]": t.squareBracket,
      "{ }": t.brace,
      ", :": t.separator,
    }),
    foldNodeProp.add({ [BLOCKS]: foldInside }),
    indentNodeProp.add({ [BLOCKS]: delimitedIndent({ closing: "}" }) }),
  ],
});

export const rulesLanguage = LRLanguage.define({
  name: "rules",
  parser: rulesParserWithProps,
  languageData: { commentTokens: { line: "#" }, closeBrackets: { brackets: ["(", "[", "{", '"'] } },
});

export const rulesHighlight = syntaxHighlighting(HighlightStyle.define([
  { tag: t.keyword, color: "#7a1fa2", fontWeight: "600" },
  { tag: t.comment, color: "#6a737d", fontStyle: "italic" },
  { tag: t.string, color: "#0a6b2d" },
  { tag: [t.number, t.unit, t.special(t.number)], color: "#b34700" },
  { tag: t.bool, color: "#005cc5" },
  { tag: t.definition(t.variableName), color: "#0b4f8a", fontWeight: "600" },
  { tag: t.propertyName, color: "#3b5c7a" },
  { tag: t.typeName, color: "#1660a8" },
  { tag: t.function(t.variableName), color: "#1660a8" },
  { tag: [t.compareOperator, t.arithmeticOperator, t.definitionOperator], color: "#555" },
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

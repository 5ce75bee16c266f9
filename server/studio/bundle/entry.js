// The CodeMirror 6 pieces the studio uses, and the .rules parser generated from
// rules.grammar (Lezer), re-exported from one prebuilt module
// (server/studio/web/vendor/codemirror.js). Rebuild: npm ci && npm run build.
export { EditorState, StateEffect, StateField } from "@codemirror/state";
export {
  EditorView, keymap, lineNumbers, highlightActiveLine, highlightActiveLineGutter,
  drawSelection, placeholder,
} from "@codemirror/view";
export { defaultKeymap, history, historyKeymap, indentWithTab } from "@codemirror/commands";
export {
  LRLanguage, HighlightStyle, syntaxHighlighting, syntaxTree, bracketMatching, indentOnInput,
  foldNodeProp, foldInside, foldGutter, foldKeymap, foldAll, unfoldAll, foldedRanges, indentNodeProp,
  delimitedIndent,
} from "@codemirror/language";
export { tags, styleTags, highlightTree, tagHighlighter } from "@lezer/highlight";
export { linter, lintGutter, forceLinting, setDiagnostics, lintKeymap } from "@codemirror/lint";
export {
  autocompletion, completionKeymap, closeBrackets, closeBracketsKeymap, startCompletion,
} from "@codemirror/autocomplete";
export { parser as rulesParser } from "./rules.parser.js";

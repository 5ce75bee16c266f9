// The CodeMirror 6 pieces the studio uses, re-exported from one prebuilt module
// (server/studio/web/vendor/codemirror.js). Rebuild: npm ci && npm run build.
export { EditorState, StateEffect, StateField } from "@codemirror/state";
export {
  EditorView, keymap, lineNumbers, highlightActiveLine, highlightActiveLineGutter,
  drawSelection, placeholder,
} from "@codemirror/view";
export { defaultKeymap, history, historyKeymap, indentWithTab } from "@codemirror/commands";
export {
  StreamLanguage, HighlightStyle, syntaxHighlighting, bracketMatching, indentOnInput,
} from "@codemirror/language";
export { tags } from "@lezer/highlight";
export { linter, lintGutter, forceLinting, setDiagnostics, lintKeymap } from "@codemirror/lint";
export {
  autocompletion, completionKeymap, closeBrackets, closeBracketsKeymap, startCompletion,
} from "@codemirror/autocomplete";

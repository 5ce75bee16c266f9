// The rule studio page: an editor checked by the server as you type, and panels that
// try, test, simulate and publish the text. Every decision shown comes from the engine
// through the API; nothing here re-implements the rules.
import {
  EditorState, EditorView, keymap, lineNumbers, highlightActiveLine, highlightActiveLineGutter,
  drawSelection, defaultKeymap, history, historyKeymap, bracketMatching, indentOnInput,
  linter, lintGutter, forceLinting, lintKeymap, autocompletion, completionKeymap, closeBrackets,
  closeBracketsKeymap, foldGutter, foldKeymap,
} from "./vendor/codemirror.js";
import { call, ApiError, apiKey } from "./api.js";
import { rulesLanguage, rulesHighlight, completionSource, toEditorDiagnostics } from "./language.js";
import { h, explanation, actionsCard, errorBox, barChart, value } from "./render.js";

const $ = (id) => document.getElementById(id);
const studio = { ruleset: null, symbols: [], report: null, lastTry: null, prefill: false };
window.studio = studio; // for tests and the curious: the last check report and try

// ------------------------------------------------------------------ editor

async function lintSource(view) {
  const text = view.state.doc.toString();
  // Checking a draft needs a key with rulesets:read: ask for one rather than send a
  // request the server can only refuse.
  if (!apiKey()) return [];
  let report;
  try {
    report = await call("POST", "/v1/check", { text, ruleset: studio.ruleset });
  } catch (err) {
    setStatus("bad", `Cannot check: ${err.message}`);
    return [];
  }
  if (view.state.doc.toString() !== text) return [];
  if (report.symbols) studio.symbols = report.symbols;
  prefillForms(); // before the report, in the same turn: who waits for a report finds them filled
  studio.report = report;
  const diagnostics = toEditorDiagnostics(view.state.doc, report);
  showProblems(view, report, diagnostics);
  return diagnostics;
}

function setStatus(kind, text) {
  const el = $("status");
  el.className = kind;
  el.textContent = text;
}

function showProblems(view, report, diagnostics) {
  const errors = report.diagnostics.filter((d) => d.severity === "error").length;
  const warnings = report.diagnostics.length - errors;
  if (!report.diagnostics.length) setStatus("ok", "✓ No problems: ready to try and publish");
  else {
    const parts = [];
    if (errors) parts.push(`${errors} error${errors === 1 ? "" : "s"}: fix before publishing`);
    if (warnings) parts.push(`${warnings} warning${warnings === 1 ? "" : "s"}`);
    setStatus(errors ? "bad" : "warn", parts.join(", "));
  }
  const list = $("problems");
  list.replaceChildren(...report.diagnostics.map((d, i) => {
    const fix = diagnostics[i].actions?.[0];
    return h("li", {},
      h("button", { type: "button", class: "goto", onclick: () => goTo(view, d.line, d.column) },
        h("span", { class: `sev-${d.severity}` }, d.severity === "error" ? "Error" : "Warning"),
        ` line ${d.line}:${d.column} — ${d.message}`, d.hint ? ` (${d.hint})` : "",
        h("span", { class: "meta" }, ` [${d.code}]`)),
      fix ? h("button", { type: "button", class: "fix", onclick: () => {
        fix.apply(view, diagnostics[i].from, diagnostics[i].to);
        view.focus();
      } }, fix.name) : null);
  }));
}

function goTo(view, line, column = 1) {
  const doc = view.state.doc;
  const l = doc.line(Math.max(1, Math.min(line, doc.lines)));
  const pos = Math.min(l.from + Math.max(column - 1, 0), l.to);
  view.dispatch({ selection: { anchor: pos }, effects: EditorView.scrollIntoView(pos, { y: "center" }) });
  view.focus();
}

async function formatDoc(view) {
  try {
    const { text } = await call("POST", "/v1/format", { text: view.state.doc.toString(), ruleset: studio.ruleset });
    if (text !== view.state.doc.toString()) {
      view.dispatch({ changes: { from: 0, to: view.state.doc.length, insert: text } });
    }
    setStatus("ok", "Formatted");
    forceLinting(view);
  } catch (err) {
    setStatus("bad", `Cannot format: ${err.message.split("\n")[0]}`);
  }
  return true;
}

const view = new EditorView({
  parent: $("editor"),
  state: EditorState.create({
    doc: "",
    extensions: [
      lineNumbers(), foldGutter(), highlightActiveLineGutter(), highlightActiveLine(), drawSelection(), history(),
      bracketMatching(), closeBrackets(), indentOnInput(), rulesLanguage, rulesHighlight,
      lintGutter(), linter(lintSource, { delay: 400 }),
      autocompletion({ override: [completionSource(() => studio.symbols)] }),
      keymap.of([
        { key: "Shift-Alt-f", run: (v) => { formatDoc(v); return true; } },
        { key: "Mod-Enter", run: () => { runTry(); return true; } },
        ...closeBracketsKeymap, ...defaultKeymap, ...historyKeymap, ...completionKeymap, ...lintKeymap,
        ...foldKeymap,
      ]),
      EditorView.contentAttributes.of({ "aria-label": ".rules text" }),
      EditorView.updateListener.of((u) => {
        if (!u.docChanged || !studio.ruleset) return;
        // Keep the user's unpublished edits across reloads; the live text needs no keeping.
        const text = u.state.doc.toString();
        const key = `arbiter-draft:${studio.ruleset}`;
        if (text === studio.liveText) localStorage.removeItem(key);
        else localStorage.setItem(key, text);
      }),
    ],
  }),
});
studio.view = view;
$("format").addEventListener("click", () => formatDoc(view));

function setText(text) {
  view.dispatch({ changes: { from: 0, to: view.state.doc.length, insert: text } });
}

// ------------------------------------------------------------------ rulesets

async function loadRulesets() {
  try {
    const { rulesets } = await call("GET", "/v1/rulesets");
    const select = $("ruleset");
    select.replaceChildren(...rulesets.map((r) => h("option", { value: r.name, selected: r.default }, r.name)));
    studio.ruleset = select.value;
    const draft = localStorage.getItem(`arbiter-draft:${studio.ruleset}`);
    if (draft) {
      studio.liveText = (await call("GET", `/v1/rulesets/${encodeURIComponent(studio.ruleset)}`)).text;
      setText(draft);
      $("note").textContent = "· your unpublished draft (Load live version discards it)";
    } else {
      await loadLive();
    }
    studio.prefill = true;
    prefillForms(); // now if a check already named the declarations, else when one does
    loadVersions();
    studio.loaded = true;
  } catch (err) {
    setStatus("bad", err instanceof ApiError && err.status === 401
      ? "Enter an API key (top right) to open the rulesets" : `Cannot list rulesets: ${err.message}`);
  }
}

async function loadLive() {
  const live = await call("GET", `/v1/rulesets/${encodeURIComponent(studio.ruleset)}`);
  studio.liveText = live.text;
  studio.liveVersion = live.version_no;
  setText(live.text);
  $("note").textContent = "";
}

$("ruleset").addEventListener("change", async (e) => {
  studio.ruleset = e.target.value;
  const draft = localStorage.getItem(`arbiter-draft:${studio.ruleset}`);
  try {
    await loadLive();
    $("note").textContent = "";
    if (draft) { setText(draft); $("note").textContent = "· your unpublished draft (Load live version discards it)"; }
    loadVersions();
  } catch (err) { setStatus("bad", err.message); }
});
$("load-live").addEventListener("click", async () => {
  try { await loadLive(); setStatus("ok", "Live version loaded"); } catch (err) { setStatus("bad", err.message); }
});
const keyInput = $("api-key");
keyInput.value = sessionStorage.getItem("arbiter-key") || "";
keyInput.addEventListener("change", () => {
  sessionStorage.setItem("arbiter-key", keyInput.value.trim());
  // A key never replaces text being edited: open the rulesets only if they could not be yet.
  if (!studio.loaded) loadRulesets();
  else loadVersions();
});

// ------------------------------------------------------------------ tabs

const tabs = [...document.querySelectorAll("[role=tab]")];
function selectTab(tab) {
  for (const t of tabs) {
    const on = t === tab;
    t.setAttribute("aria-selected", String(on));
    t.tabIndex = on ? 0 : -1;
    $(t.getAttribute("aria-controls")).hidden = !on;
  }
  tab.focus();
  if (tab.id === "tab-publish") loadVersions();
}
tabs.forEach((t, i) => {
  t.addEventListener("click", () => selectTab(t));
  t.addEventListener("keydown", (e) => {
    const step = { ArrowRight: 1, ArrowLeft: -1 }[e.key];
    if (step) { e.preventDefault(); selectTab(tabs[(i + step + tabs.length) % tabs.length]); }
    if (e.key === "Home") { e.preventDefault(); selectTab(tabs[0]); }
    if (e.key === "End") { e.preventDefault(); selectTab(tabs[tabs.length - 1]); }
  });
});

// ------------------------------------------------------------------ try it

function example(kind) {
  const out = {};
  for (const s of studio.symbols.filter((x) => x.kind === kind)) {
    const d = s.detail;
    if (d === "int" || d === "number") out[s.name] = 1;
    else if (d.startsWith("one of")) out[s.name] = d.replace(/^one of \[/, "").split(/[,\]]/)[0].trim();
    else if (d.startsWith("set")) out[s.name] = [];
    else if (d === "string" && s.name === "page") out[s.name] = "/";
  }
  return out;
}

// Example profile and context in the empty forms, from the declarations, once the first
// check has named them (the check calls this as its report arrives). Never into a field
// being typed in: a value set between a user's (or a test's) selecting and typing would
// have the typed text spliced onto the example.
function prefillForms() {
  if (!studio.prefill || !studio.symbols.length) return;
  studio.prefill = false;
  const once = (id, v) => {
    const field = $(id);
    if (field.value.trim() || document.activeElement === field) return;
    field.value = JSON.stringify(v, null, 0).replace(/,"/g, ', "');
  };
  once("try-profile", example("profile"));
  once("try-context", example("context"));
  const ctx = example("context");
  delete ctx.channel;
  once("sim-context", ctx);
}

function readJson(id) {
  const text = $(id).value.trim();
  if (!text) return {};
  try {
    const v = JSON.parse(text);
    if (v && typeof v === "object" && !Array.isArray(v)) return v;
  } catch { /* fall through */ }
  const label = document.querySelector(`label[for=${id}]`)?.firstChild?.textContent.trim() || id;
  throw new Error(`${label} must be a JSON object, like {"visits_30d": 3}`);
}

for (const radio of document.querySelectorAll("input[name=who]")) {
  radio.addEventListener("change", async () => {
    const stored = radio.value === "stored" && radio.checked;
    $("sample-fields").hidden = stored;
    $("stored-fields").hidden = !stored;
    if (stored) {
      try {
        const { customers } = await call("GET", "/v1/studio/customers?limit=200");
        $("customer-list").replaceChildren(...customers.map((c) => h("option", { value: c })));
      } catch (err) { $("try-out").replaceChildren(errorBox(err)); }
    }
  });
}

async function runTry() {
  const out = $("try-out");
  out.replaceChildren(h("p", { class: "meta" }, "Deciding…"));
  $("try-save").disabled = true;
  try {
    const stored = document.querySelector("input[name=who]:checked").value === "stored";
    const body = { text: view.state.doc.toString(), ruleset: studio.ruleset, context: readJson("try-context") };
    if (stored) body.customer_id = $("try-customer").value.trim();
    else Object.assign(body, { profile: readJson("try-profile"), events: $("try-events").value });
    const result = await call("POST", "/v1/studio/try", body);
    studio.lastTry = result;
    const d = result.decision;
    out.replaceChildren(...[
      h("h3", {}, "This customer would get"),
      actionsCard(d.actions),
      h("p", { class: "meta" }, `ruleset ${d.ruleset.name} (draft ${d.ruleset.version})` + (d.degraded ? " · degraded" : "")),
      h("h3", {}, "Why"),
      explanation(d.explanation),
      result.not_returned.length ? h("div", {}, h("h4", {}, "Why not the others"), value(result.not_returned)) : null,
      Object.keys(result.scores || {}).length ? h("div", {}, h("h4", {}, "Model scores"), value(result.scores)) : null,
      h("details", {}, h("summary", {}, "What the engine read"), value(result.inputs)),
    ].filter(Boolean));
    $("try-save").disabled = false;
  } catch (err) {
    out.replaceChildren(errorBox(err));
    if (err.diagnostics && err.field === "text") forceLinting(view);
  }
}
$("try-run").addEventListener("click", runTry);
$("try-save").addEventListener("click", () => {
  if (!studio.lastTry) return;
  const doc = view.state.doc;
  const sep = doc.toString().endsWith("\n") ? "\n" : "\n\n";
  view.dispatch({ changes: { from: doc.length, insert: sep + studio.lastTry.scenario } });
  goTo(view, view.state.doc.lines - 1);
  $("try-out").prepend(h("p", { class: "notice" }, "Saved as a scenario at the end of the text. Rename it as you like."));
});

// ------------------------------------------------------------------ scenarios

$("scen-run").addEventListener("click", async () => {
  const out = $("scen-out");
  out.replaceChildren(h("p", { class: "meta" }, "Running…"));
  try {
    const r = await call("POST", "/v1/studio/scenarios", { text: view.state.doc.toString(), ruleset: studio.ruleset });
    out.replaceChildren(
      h("p", {}, h("span", { class: r.failed ? "fail" : "pass" }, `${r.passed} passed` + (r.failed ? `, ${r.failed} failed` : ""))),
      ...r.results.map((s) => h("div", { class: `card scenario${s.passed ? "" : " failed"}` },
        h("span", { class: s.passed ? "pass" : "fail" }, s.passed ? "✓ pass " : "✗ fail "),
        h("a", { href: "#", onclick: (e) => { e.preventDefault(); goTo(view, s.line); } }, s.name),
        h("span", { class: "meta" }, ` line ${s.line}`),
        s.passed ? null : h("div", {},
          h("table", {}, h("tbody", {},
            h("tr", {}, h("th", {}, "expected"), h("td", {}, s.expected.join(", ") || "nothing")),
            h("tr", {}, h("th", {}, "got"), h("td", {}, s.got.join(", ") || "nothing")))),
          s.expected_not_returned.length ? h("div", {}, h("h4", {}, "Why not the expected action"), value(s.expected_not_returned)) : null,
          s.not_returned.length ? h("div", {}, h("h4", {}, "Offered but not returned"), value(s.not_returned)) : null,
          s.errors.length ? h("div", {}, h("h4", {}, "Problems"), value(s.errors)) : null,
          h("details", {}, h("summary", {}, "Explanation"), explanation(s.explanation))))));
  } catch (err) { out.replaceChildren(errorBox(err)); }
});

// ------------------------------------------------------------------ simulate

$("sim-compare").addEventListener("change", (e) => {
  $("sim-file").hidden = e.target.value !== "file";
  if (e.target.value === "file") $("sim-file").click();
});

async function simulateBody(compare) {
  const body = {
    text: view.state.doc.toString(), ruleset: studio.ruleset, context: readJson("sim-context"),
    sample: Number($("sim-sample").value) || 200, by_channel: $("sim-by-channel").checked,
    population: $("sim-population").value, compare_live: compare === "live",
  };
  if (compare === "file") {
    const file = $("sim-file").files[0];
    if (!file) throw new Error("Choose the .rules file to compare with");
    body.compare_text = await file.text();
  }
  return body;
}

function mixView(r) {
  const series = [{ name: "this text", counts: r.draft.overall }];
  if (r.compared) series.push({ name: r.compared.label, counts: r.compared.overall });
  const who = r.population === "generated" ? "generated customers (no event history)" : "stored customers";
  const parts = [
    h("p", {}, `${r.customers} ${who} × ${r.contexts.length} context${r.contexts.length === 1 ? "" : "s"} = ${r.draft.decisions} decisions (first action counted).`),
    h("h3", {}, "Action mix"), barChart(series),
  ];
  if (r.changes) {
    const c = r.changes;
    parts.push(h("h3", {}, `${c.changed} of ${c.of} decisions change`));
    if (c.moves.length) parts.push(value(c.moves));
    if (c.examples.length) parts.push(h("details", {}, h("summary", {}, "Examples"), value(c.examples.map((e) => ({
      customer: e.customer_id, channel: e.context.channel ?? "", from: e.from, to: e.to })))));
  }
  const channels = Object.keys(r.draft.by_channel);
  if (channels.length > 1) {
    parts.push(h("h3", {}, "By channel"));
    for (const ch of channels) parts.push(h("h4", {}, ch), barChart([{ name: "this text", counts: r.draft.by_channel[ch] },
      ...(r.compared ? [{ name: r.compared.label, counts: r.compared.by_channel[ch] || {} }] : [])]));
  }
  const segs = r.draft.by_segment;
  if (Object.keys(segs).length) {
    parts.push(h("h3", {}, "By segment"), value(Object.fromEntries(Object.entries(segs).map(([s, counts]) =>
      [s, Object.entries(counts).map(([a, n]) => `${a} ${n}`).join(", ")]))));
  }
  return parts;
}

$("sim-run").addEventListener("click", async () => {
  const out = $("sim-out");
  out.replaceChildren(h("p", { class: "meta" }, "Simulating…"));
  try {
    const r = await call("POST", "/v1/studio/simulate", await simulateBody($("sim-compare").value));
    out.replaceChildren(...mixView(r));
  } catch (err) { out.replaceChildren(errorBox(err)); }
});

// ------------------------------------------------------------------ publish

function diffView(text) {
  return h("pre", { class: "diff" }, text.split("\n").map((line) =>
    h("span", { class: line.startsWith("+") && !line.startsWith("+++") ? "add" : line.startsWith("-") && !line.startsWith("---") ? "del" : "" }, line + "\n")));
}

// Publishing always shows the change first: the review ends with the button that
// publishes exactly the text reviewed.
$("pub-preview").addEventListener("click", async () => {
  const out = $("pub-out");
  const text = view.state.doc.toString();
  out.replaceChildren(h("p", { class: "meta" }, "Comparing with the live version…"));
  try {
    const d = await call("POST", "/v1/studio/diff", { text, ruleset: studio.ruleset });
    const parts = [h("h3", {}, `Changes against live v${d.live_version_no}`), d.same ? h("p", {}, "No changes.") : diffView(d.diff)];
    try {
      const r = await call("POST", "/v1/studio/simulate", await simulateBody("live"));
      parts.push(h("h3", {}, "What if: stored customers"), ...mixView(r));
    } catch (err) { parts.push(h("p", { class: "meta" }, `No what-if counts: ${err.message}`)); }
    parts.push(h("div", { class: "buttons" },
      h("button", { type: "button", id: "pub-confirm", class: "primary", onclick: () => publish(text) }, "Publish this version")));
    out.replaceChildren(...parts);
  } catch (err) { out.replaceChildren(errorBox(err)); }
});

async function publish(text) {
  const out = $("pub-out");
  if (text !== view.state.doc.toString()) {
    out.replaceChildren(h("div", { class: "error-box", role: "alert" }, "The text changed since this review: review the changes again."));
    return;
  }
  const author = $("pub-author").value.trim();
  try {
    const r = await call("PUT", `/v1/rulesets/${encodeURIComponent(studio.ruleset)}`, text,
      author ? { "X-Arbiter-Author": author } : {});
    studio.liveText = text;
    localStorage.removeItem(`arbiter-draft:${studio.ruleset}`);
    $("note").textContent = "";
    out.replaceChildren(h("p", { class: "notice", role: "status" }, `Published: version ${r.version_no} (${r.version}) is live.`));
    loadVersions();
  } catch (err) {
    const msg = err.status === 422 ? "Not published: the checker found errors (marked in the editor)." : `Not published: ${err.message}`;
    out.replaceChildren(h("div", { class: "error-box", role: "alert" }, msg));
    forceLinting(view);
  }
}

async function loadVersions() {
  if (!studio.ruleset) return;
  const box = $("pub-versions");
  try {
    const { versions } = await call("GET", `/v1/studio/rulesets/${encodeURIComponent(studio.ruleset)}/versions`);
    const live = versions.find((v) => v.live);
    box.replaceChildren(
      h("table", {}, h("thead", {}, h("tr", {}, h("th", {}, "version"), h("th", {}, "published"), h("th", {}, "by"), h("th", {}, "lines"), h("th", {}, ""))),
        h("tbody", {}, versions.map((v) => h("tr", {},
          h("td", {}, `v${v.version_no}`), h("td", {}, v.published_at ? new Date(v.published_at * 1000).toLocaleString() : "from file"),
          h("td", {}, v.author || "—"), h("td", {}, v.lines), h("td", {}, v.live ? h("strong", {}, "live") : ""))))),
      h("div", { class: "buttons" },
        h("button", { type: "button", id: "pub-rollback", disabled: !live || live.version_no <= 1, onclick: rollback },
          live && live.version_no > 1 ? `Roll back to v${live.version_no - 1}` : "Roll back")));
  } catch (err) { box.replaceChildren(errorBox(err)); }
}

async function rollback() {
  const out = $("pub-out");
  try {
    const r = await call("POST", `/v1/rulesets/${encodeURIComponent(studio.ruleset)}/rollback`);
    out.replaceChildren(h("p", { class: "notice", role: "status" }, `Rolled back: version ${r.version_no} is live again.`,
      " ", h("button", { type: "button", onclick: async () => { await loadLive(); } }, "Load it in the editor")));
    loadVersions();
  } catch (err) { out.replaceChildren(errorBox(err)); }
}

if (apiKey()) loadRulesets();
else setStatus("bad", "Enter an API key (top right) to open the rulesets");

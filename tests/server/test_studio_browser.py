"""The rule studio in a real headless Chromium, against `arbiter serve` on real Redis.

Walks what a marketer does: type a rule with an error and see it marked at its
line, accept the did-you-mean fix, try a profile (the expected action and why
another was not chosen), save the try as a scenario, run the scenarios,
simulate with a chart, publish and see `/v1/decide` change, roll back. Every
step leaves a screenshot in `.artifacts/studio/`. No console errors allowed.
"""

from __future__ import annotations

import gzip
import json
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import httpx2 as httpx
import pytest
from support.browser import chromium, screenshot  # noqa: F401  (fixture)
from support.paths import ROOT_DIR
from support.redis import flush_redis

KEY = "studio-admin-key"
AUTH = {"Authorization": f"Bearer {KEY}"}
RULES = ROOT_DIR / "rulesets" / "retail.rules"
ACCOUNT_PAGE = {"channel": "web", "page": "/account", "device": "mobile"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.fixture(scope="module")
def server(redis_server: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`arbiter serve` on the retail example, with an admin key, on a free port."""
    flush_redis(redis_server.url)
    port = _free_port()
    env = {
        **os.environ,
        "ARBITER_REDIS_URL": redis_server.url,
        "ARBITER_ADMIN_KEY": KEY,
        "ARBITER_DATA_DIR": str(tmp_path_factory.mktemp("studio-data")),
        "ARBITER_LEARNER": "off",
    }
    env.pop("ARBITER_DECIDE_KEY", None)
    log = tmp_path_factory.mktemp("studio-log") / "serve.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "arbiter.server.cli",
                "serve",
                "--port",
                str(port),
                "--rules",
                str(RULES),
            ],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(300):
            if proc.poll() is not None:
                pytest.fail(f"arbiter serve exited: {log.read_text()}")
            try:
                if httpx.get(base + "/readyz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        else:
            pytest.fail(f"arbiter serve did not become ready: {log.read_text()}")
        for i in range(12):  # stored customers for Try and Simulate
            profile = {
                "visits_30d": 1 if i % 3 == 0 else 7,
                "orders_90d": i % 4,
                "lifetime_value": 150.0 * i,
            }
            r = httpx.put(f"{base}/v1/profiles/shopper-{i:02d}", json=profile, headers=AUTH)
            assert r.status_code == 200, r.text
        yield base
    finally:
        proc.terminate()
        proc.wait(timeout=20)


@pytest.fixture
def console() -> list[str]:
    """The console errors of the test's page (a test expecting one removes it)."""
    return []


@pytest.fixture
def page(chromium: Any, server: str, console: list[str]) -> Iterator[Any]:  # noqa: F811
    """A fresh browser page at /studio, the key entered; fails the test on any console error."""
    context = chromium.new_context(viewport={"width": 1280, "height": 800})
    pg = context.new_page()
    pg.set_default_timeout(15_000)
    problems = console
    pg.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    pg.on("pageerror", lambda e: problems.append(str(e)))
    pg.goto(server + "/studio")
    pg.fill("#api-key", KEY)
    pg.dispatch_event("#api-key", "change")
    pg.wait_for_function("window.studio && window.studio.loaded")
    wait_checked(pg)
    yield pg
    context.close()
    assert not problems, f"console errors: {problems}"


def wait_checked(pg: Any) -> None:
    """Wait until the status line shows the result of a check of the current text."""
    pg.wait_for_function(
        "window.studio.report && document.getElementById('status').textContent !== 'Checking…'"
    )


def set_text(pg: Any, text: str) -> None:
    pg.evaluate(
        "t => { const v = window.studio.view; v.dispatch({changes: {from: 0, to: v.state.doc.length, insert: t}}); }",
        text,
    )


def to_end(pg: Any) -> None:
    """Put the cursor at the end of the text, as a user does (click, Ctrl+End), and let the
    editor finish scrolling there before typing (keys typed mid-scroll can be dropped)."""
    pg.click(".cm-content")
    pg.keyboard.press("Control+End")
    pg.wait_for_function(
        "window.studio.view.state.selection.main.head === window.studio.view.state.doc.length"
    )
    last = -1.0
    while True:  # until the scroll position stops moving
        top = pg.evaluate(
            "() => new Promise(r => requestAnimationFrame(() => requestAnimationFrame("
            "() => r(document.querySelector('.cm-scroller').scrollTop))))"
        )
        if top == last:
            return
        last = top


def doc(pg: Any) -> str:
    text: str = pg.evaluate("window.studio.view.state.doc.toString()")
    return text


def decide(server: str, customer: str) -> list[str]:
    body = {"customer_id": customer, "context": ACCOUNT_PAGE, "explain": True}
    r = httpx.post(f"{server}/v1/decide", json=body)
    assert r.status_code == 200, r.text
    return [a["action"] for a in r.json()["actions"]]


def test_typed_error_is_marked_at_its_line_and_the_fix_applies(page: Any) -> None:
    lines = doc(page).splitlines()
    to_end(page)
    page.keyboard.type("\nwhen vip offer vip_early_acess\n")
    page.wait_for_selector(".cm-lintRange-error")
    error_line = len(lines) + 2  # typed after the last line, past one empty line
    marked = page.locator(".cm-lintRange-error").first
    assert marked.inner_text() == "vip_early_acess"
    first = page.locator("#problems li").first.inner_text()
    assert f"line {error_line}:16" in first and "no action named 'vip_early_acess'" in first
    assert page.locator("#status").inner_text().startswith("1 error:")
    gutter_line = page.locator(".cm-lineNumbers .cm-gutterElement", has_text=str(error_line))
    assert gutter_line.count() >= 1
    screenshot(page, "01-error-marked")
    fix = page.locator("#problems button.fix")  # the did-you-mean quick fix
    assert fix.inner_text() == "Change to 'vip_early_access'"
    fix.focus()
    page.keyboard.press("Enter")
    page.wait_for_function("!document.querySelector('.cm-lintRange-error')")
    assert "when vip offer vip_early_access" in doc(page)
    page.wait_for_function("document.getElementById('status').textContent.startsWith('✓')")
    screenshot(page, "02-fix-applied")


def test_completion_offers_declared_names(page: Any) -> None:
    to_end(page)
    page.keyboard.type("\nwhen profile.loy")
    page.wait_for_selector(".cm-tooltip-autocomplete")
    options = page.locator(".cm-tooltip-autocomplete li").all_inner_texts()
    assert any("loyalty_tier" in o for o in options)
    page.wait_for_timeout(200)  # CodeMirror ignores Enter for 75 ms after the list opens
    page.keyboard.press("Enter")
    assert doc(page).endswith("when profile.loyalty_tier")
    # an unpublished edit survives a reload of the page
    page.reload()
    page.wait_for_function("window.studio && window.studio.loaded")
    assert doc(page).endswith("when profile.loyalty_tier")
    assert "unpublished draft" in page.locator("#note").inner_text()


def test_the_forms_hold_examples_as_soon_as_the_check_answered(page: Any) -> None:
    # They were filled by a timer up to 200 ms (on a loaded machine, far more) after the
    # check: a value set while a user, or a test, had selected a field to type over it
    # had the typed text appended to the example ("Context must be a JSON object").
    # The page fixture has just seen the report: nothing may change them any more.
    for field in ("#try-profile", "#try-context", "#sim-context"):
        value = page.input_value(field)
        assert value.startswith("{"), (field, value)
        assert isinstance(json.loads(value), dict)
    assert "channel" in json.loads(page.input_value("#try-context"))


def test_try_a_sample_shows_the_action_and_why_not_another(page: Any) -> None:
    page.fill("#try-profile", '{"visits_30d": 6, "orders_90d": 1, "consents": []}')
    page.fill("#try-context", '{"channel": "email"}')
    page.fill("#try-events", "add_to_cart: 2 3h ago, page_view: 1 2h ago")
    page.click("#try-run")
    out = page.locator("#try-out")
    out.locator(".action.big, .error-box").first.wait_for()  # the answer, or what went wrong
    assert not out.locator(".error-box").count(), out.inner_text()
    assert out.locator(".action.big").inner_text() == "personal_recs"
    text = out.inner_text()
    assert "cart_abandoner" in text  # a true segment
    assert "Why not the others" in text and 'needs consent "email"' in text
    assert "null" not in text and "undefined" not in text
    screenshot(page, "03-try")
    page.click("#try-save")
    assert 'scenario "this sample gets personal_recs" {' in doc(page)
    assert doc(page).rstrip().endswith("expect [personal_recs]\n}".rstrip())


def test_scenarios_pass_and_a_failing_one_says_why(page: Any) -> None:
    set_text(page, doc(page).replace('cap 1 per 7d\n  requires consent "email"', "cap 1 per 7d"))
    page.click("#tab-scenarios")
    page.click("#scen-run")
    page.locator("#scen-out .scenario").first.wait_for()
    out = page.locator("#scen-out")
    assert out.locator(".scenario.failed").count() == 1
    failed = out.locator(".scenario.failed").inner_text()
    assert "without email consent no cart email is sent" in failed
    assert "personal_recs" in failed and "cart_recovery_email" in failed  # expected vs got
    assert (
        "Why not the expected action" in failed
        and "the default: returned only when no other action is left" in failed
    )
    assert out.locator(".scenario:not(.failed)").count() >= 10
    assert "1 failed" in out.inner_text()
    screenshot(page, "04-scenarios")


def test_simulate_draws_the_action_mix(page: Any) -> None:
    set_text(
        page,
        doc(page).replace(
            "when new_visitor offer welcome_offer", "when new_visitor offer free_shipping"
        ),
    )
    page.click("#tab-simulate")
    page.fill("#sim-context", '{"page": "/account", "device": "mobile"}')
    page.click("#sim-run")
    page.locator("#sim-out svg.chart, #sim-out .error-box").first.wait_for(timeout=60_000)
    assert page.locator("#sim-out .error-box").count() == 0, page.locator("#sim-out").inner_text()
    chart = page.locator("#sim-out svg.chart").first
    label = chart.get_attribute("aria-label") or ""
    assert "free_shipping" in label and "welcome_offer" in label
    text = page.locator("#sim-out").inner_text()
    assert "12 stored customers \u00d7 3 contexts = 36 decisions" in text
    assert "decisions change" in text
    screenshot(page, "05-simulate")


def test_publish_changes_decide_and_rollback_restores_it(page: Any, server: str) -> None:
    # A fresh new visitor at each step: welcome_offer is capped once shown.
    assert "welcome_offer" in decide(server, "shopper-00")
    set_text(
        page,
        doc(page).replace(
            "when new_visitor offer welcome_offer", "when new_visitor offer free_shipping"
        ),
    )
    page.click("#tab-publish")
    page.fill("#pub-author", "Maria")
    page.click("#pub-preview")
    page.locator("#pub-out pre.diff").wait_for()
    assert "+when new_visitor offer free_shipping" in page.locator("#pub-out pre.diff").inner_text()
    page.locator("#pub-out svg.chart").first.wait_for()
    screenshot(page, "06-publish-preview")
    page.click("#pub-confirm")
    page.locator("#pub-out .notice").wait_for()
    assert "is live" in page.locator("#pub-out").inner_text()
    actions = decide(server, "shopper-03")
    assert "free_shipping" in actions and "welcome_offer" not in actions
    page.wait_for_selector("#pub-versions td:has-text('Maria')")
    screenshot(page, "07-published")
    page.click("#pub-rollback")
    page.wait_for_selector("#pub-out .notice:has-text('Rolled back')")
    assert "welcome_offer" in decide(server, "shopper-06")
    screenshot(page, "08-rolled-back")


def test_publish_with_an_error_is_refused_and_nothing_changes(
    page: Any, server: str, console: list[str]
) -> None:
    before = httpx.get(f"{server}/v1/rulesets/retail_web", headers=AUTH).json()["version_no"]
    set_text(page, doc(page).replace("default personal_recs", "default personal_rec"))
    page.click("#tab-publish")
    page.click("#pub-preview")
    page.click("#pub-confirm")
    page.locator("#pub-out .error-box").wait_for()
    assert "checker found errors" in page.locator("#pub-out").inner_text()
    # the browser logs the refused what-if and PUT itself; those are expected
    refused = (
        "Failed to load resource: the server responded with a status of 422 (Unprocessable Entity)"
    )
    assert console.count(refused) == 2
    console[:] = [m for m in console if m != refused]
    assert (
        httpx.get(f"{server}/v1/rulesets/retail_web", headers=AUTH).json()["version_no"] == before
    )


def test_keyboard_only_and_a_phone_screen(chromium: Any, server: str) -> None:  # noqa: F811
    context = chromium.new_context(viewport={"width": 390, "height": 844})
    pg = context.new_page()
    errors: list[str] = []
    pg.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    pg.goto(server + "/studio")
    pg.focus("#api-key")
    pg.keyboard.type(KEY)
    pg.keyboard.press("Tab")  # leaving the field commits it
    pg.wait_for_function("window.studio && window.studio.loaded")
    wait_checked(pg)
    assert pg.evaluate("document.documentElement.scrollWidth") <= 390
    pg.focus("#tab-try")
    pg.keyboard.press("ArrowRight")
    assert pg.evaluate("document.activeElement.id") == "tab-scenarios"
    assert pg.is_visible("#panel-scenarios") and not pg.is_visible("#panel-try")
    pg.keyboard.press("Tab")
    assert pg.evaluate("document.activeElement.id") == "scen-run"
    pg.keyboard.press("Enter")
    pg.locator("#scen-out .scenario").first.wait_for()
    assert "passed" in pg.locator("#scen-out").inner_text()
    pg.focus("#tab-scenarios")
    pg.keyboard.press("ArrowLeft")
    for _ in range(30):  # Tab to the Decide button, then press it
        if pg.evaluate("document.activeElement.id") == "try-run":
            break
        pg.keyboard.press("Tab")
    assert pg.evaluate("document.activeElement.id") == "try-run"
    pg.keyboard.press("Enter")
    pg.locator("#try-out .action.big").wait_for()
    pg.locator("#tab-try").scroll_into_view_if_needed()
    screenshot(pg, "09-phone")
    context.close()
    assert not errors, errors


def test_the_page_transfers_under_500_kb_gzipped(server: str) -> None:
    html = httpx.get(server + "/studio").text
    assets = ["studio.css", "app.js", "api.js", "language.js", "render.js", "vendor/codemirror.js"]
    total = len(gzip.compress(html.encode()))
    for name in assets:
        r = httpx.get(f"{server}/studio/static/{name}", headers={"Accept-Encoding": "gzip"})
        assert r.status_code == 200
        assert r.headers.get("content-encoding") == "gzip"
        total += int(r.headers.get("content-length") or len(gzip.compress(r.content)))
    assert total < 500_000, total


def test_explanation_fields_the_page_does_not_know_are_still_shown(page: Any) -> None:
    # The engine's explanation grows (why-not reasons per action); the page renders any
    # JSON it is given, so new fields need no change here.
    text = page.evaluate(
        """async () => {
          const { explanation } = await import('/studio/static/render.js');
          const box = explanation({
            segments: { vip: true, lapsed: false },
            why_not: [{ action: 'vip_voucher', reason: 'condition', failed: { left: 'profile.orders_90d', op: '>=', values: [2, 3] } }],
            candidates: [{ action: 'welcome_offer', terms: { weight: 1, value: 5 }, score: 0.25 }],
            empty: [],
          });
          document.body.append(box);
          return box.innerText;
        }"""
    )
    assert "Why not" in text and "vip_voucher" in text and "profile.orders_90d" in text
    assert "Candidates" in text and "welcome_offer" in text and "0.25" in text
    assert "Empty" not in text  # empty fields are left out


# ------------------------------------------------------------------ the Lezer grammar

#: Syntax errors the editor's parser must also see (codes of dsl/errors; the others,
#: such as an impossible date or an ambiguous unit, are the checker's, not the grammar's).
GRAMMAR_ERRORS = {
    "syntax",
    "double-equals",
    "logical-operator",
    "missing-comma",
    "missing-offer",
    "missing-ruleset",
    "single-quote",
    "unclosed-brace",
    "unknown-statement",
}
PARSE = """async (texts) => {
  const { rulesParserWithProps } = await import('/studio/static/language.js');
  return texts.map((text) => {
    const errors = [];
    rulesParserWithProps.parse(text).iterate({
      enter(n) { if (n.type.isError) errors.push(text.slice(0, n.from).split('\\n').length); },
    });
    return errors;
  });
}"""


def example_rulesets() -> list[tuple[str, str, str | None]]:
    """Every example ruleset: (path, text, the code of the language's first syntax error)."""
    from arbiter import dsl

    files = sorted(ROOT_DIR.glob("rulesets/*.rules")) + sorted(
        ROOT_DIR.glob("tests/cases/**/*.rules")
    )
    out = []
    for f in files:
        text = f.read_text(encoding="utf-8")
        try:
            dsl.parse(text, str(f))
            code = None
        except dsl.RulesError as exc:
            code = exc.first.code
        out.append((str(f.relative_to(ROOT_DIR)), text, code))
    return out


def test_the_editor_parser_reads_every_example_ruleset_as_the_language_does(page: Any) -> None:
    examples = example_rulesets()
    errors = page.evaluate(PARSE, [text for _, text, _ in examples])
    accepted = [
        (name, e) for (name, _, code), e in zip(examples, errors, strict=True) if code is None
    ]
    assert len(accepted) > 50
    assert [(name, e) for name, e in accepted if e] == []  # no error node where Lark parses
    refused = [
        (name, e)
        for (name, _, code), e in zip(examples, errors, strict=True)
        if code in GRAMMAR_ERRORS
    ]
    assert len(refused) >= 9
    assert [name for name, e in refused if not e] == []  # and an error node where it does not


def test_highlighting_and_folding_come_from_the_lezer_grammar(page: Any) -> None:
    # The editor's own parser and style tags, read through a highlighter that names tags.
    tokens = page.evaluate(
        """async () => {
          const { rulesParserWithProps } = await import('/studio/static/language.js');
          const { highlightTree, tagHighlighter, tags: t } = await import('/studio/static/vendor/codemirror.js');
          const named = tagHighlighter([
            { tag: t.keyword, class: 'keyword' }, { tag: t.unit, class: 'duration' },
            { tag: t.lineComment, class: 'comment' }, { tag: t.string, class: 'string' },
            { tag: t.number, class: 'number' }, { tag: t.bool, class: 'bool' },
            { tag: t.typeName, class: 'type' }, { tag: t.propertyName, class: 'field' },
            { tag: t.variableName, class: 'name' },
            { tag: t.definition(t.variableName), class: 'definition' },
            { tag: t.function(t.variableName), class: 'function' },
            { tag: t.compareOperator, class: 'compare' },
          ]);
          const text = window.studio.view.state.doc.toString();
          const out = {};
          highlightTree(rulesParserWithProps.parse(text), named, (from, to, cls) => {
            const word = text.slice(from, to);
            (out[cls] = out[cls] || []).includes(word) || out[cls].push(word);
          });
          return out;
        }"""
    )
    text = RULES.read_text(encoding="utf-8")
    first_comment = next(line for line in text.splitlines() if line.startswith("#"))
    keywords = {"ruleset", "segment", "action", "when", "offer", "and", "scenario", "within"}
    assert keywords <= set(tokens["keyword"])
    assert '"../models/churn.onnx"' in tokens["string"]
    assert {"24h", "7d"} <= set(tokens["duration"])
    assert {"1000", "0.6"} <= set(tokens["number"])
    assert first_comment in tokens["comment"]
    assert {"count", "last_seen"} <= set(tokens["function"])
    assert {"vip", "welcome_offer"} <= set(tokens["definition"])
    assert {"int", "number", "time"} <= set(tokens["type"])
    assert {">", ">=", "=="} <= set(tokens["compare"])
    # A keyword where a name may stand is a name: `channel` (a contact policy's word)
    # is a field of the context.
    assert "channel" in tokens["field"] and "lifetime_value" in tokens["field"]
    # The editor shows it: a keyword in its colour, and the blocks fold.
    keyword = page.locator(".cm-content span", has_text=re.compile(r"^segment$")).first
    assert keyword.evaluate("e => getComputedStyle(e).color") == "rgb(122, 31, 162)"
    folds = page.locator(".cm-foldGutter .cm-gutterElement span[title='Fold line']")
    assert folds.count() >= 2  # profile { … } and context { … } on the first screen
    folded = page.evaluate(
        """async () => {
          const m = await import('/studio/static/vendor/codemirror.js');
          const view = window.studio.view;
          m.foldAll(view);
          const ranges = [];
          m.foldedRanges(view.state).between(0, view.state.doc.length, (from, to) => {
            ranges.push(view.state.doc.lineAt(from).text.trim());
          });
          return ranges;
        }"""
    )
    page.wait_for_selector(".cm-foldPlaceholder")
    assert "profile {" in folded and "action welcome_offer {" in folded
    assert any(line.startswith("scenario ") for line in folded)
    screenshot(page, "11-folded")

"""The rule studio: its page (`GET /studio`), `POST /v1/check`, `POST /v1/format`, and
the draft endpoints under `/v1/studio/` (try, scenarios, simulate, diff, customers).

None of these makes anything live: publishing and rollback are the ordinary
`PUT /v1/rulesets/{name}` and `POST /v1/rulesets/{name}/rollback`, behind the
same write key. Checking, formatting, trying a sample profile and running
scenarios read nothing stored and need the `decide` key (open when none is
set); reading stored customers (try one, simulate over them) needs `admin`,
like `GET /v1/profiles`.
"""

from __future__ import annotations

import asyncio
import difflib
import json
import time
from pathlib import Path
from typing import Annotated, Any, Literal

import msgspec
from fastapi import APIRouter, Query, Request
from fastapi.responses import FileResponse, Response
from pydantic import BaseModel, Field
from redis.exceptions import RedisError
from starlette.middleware.gzip import GZipMiddleware
from starlette.staticfiles import StaticFiles

from arbiter import dsl
from arbiter.engine.decision.decide import decide

# The scenario runner's why-not for offered actions that were not returned, until the
# engine's own explanation carries one for every action (the language issue's work).
from arbiter.engine.decision.scenarios import run_scenarios, scenario_inputs
from arbiter.engine.decision.simulate import changes, simulate
from arbiter.engine.records import ENCODER, DecideRequest, Inputs
from arbiter.engine.validate import ValueProblem, normalize_all
from arbiter.server.errors import ApiError
from arbiter.server.routes.admin import Auth
from arbiter.server.rulesets import LiveRuleset
from arbiter.server.security.access import authorize
from arbiter.server.state import AppState, new_decision_id
from arbiter.server.studio import workbench as wb
from arbiter.server.studio import worker as studio_worker

WEB_DIR = Path(__file__).parent / "web"
# A draft's characters: at most 6 bytes each in JSON (a \uXXXX escape), so a
# text at this limit still fits the server's 1 MiB body limit and a longer one is
# a 422 naming the field, never a 413.
MAX_TEXT = 150_000
MAX_SAMPLE = 2_000

router = APIRouter(lifespan=studio_worker.lifespan)


def _statuses(*extra: tuple[int, str]) -> dict[int | str, dict[str, Any]]:
    """The error answers a studio route documents (all `{error: {code, message, field?}}`)."""
    base = [
        (401, "missing key"),
        (403, "the key lacks the scope"),
        (
            422,
            "invalid body, or `.rules` text with errors (`rules_invalid`, with `diagnostics`); `field` names the field",
        ),
    ]
    return {code: {"description": text} for code, text in sorted([*base, *extra])}


def mount(app: Any) -> None:
    """Serve the page's static files (ES modules, CSS, the CodeMirror bundle)."""
    # Compressed: the page's whole transfer stays well under 500 KB (the bundle is ~120 KB gzipped).
    static = GZipMiddleware(StaticFiles(directory=WEB_DIR), minimum_size=1000)
    app.mount("/studio/static", static, name="studio-static")


@router.get("/studio", tags=["studio"], include_in_schema=False)
async def studio_page() -> Response:
    """The rule studio (static HTML; it talks to the API with the key the user enters)."""
    return FileResponse(WEB_DIR / "index.html", media_type="text/html")


# ----------------------------------------------------------------- bodies


class Draft(BaseModel):
    text: str = Field(max_length=MAX_TEXT, description="the .rules text")
    ruleset: str | None = Field(
        default=None,
        max_length=128,
        description="the ruleset it is a version of (its includes and model paths resolve next to that file); default: the default ruleset",
    )


class TryIn(Draft):
    context: dict[str, Any] = Field(default_factory=dict)
    customer_id: str | None = Field(default=None, min_length=1, max_length=256)
    profile: dict[str, Any] = Field(default_factory=dict)
    events: str = Field(
        default="",
        max_length=10_000,
        description="scenario syntax: `add_to_cart: 2 3h ago, page_view: 1`",
    )


class SimulateIn(Draft):
    context: dict[str, Any] = Field(default_factory=dict)
    sample: int = Field(default=200, ge=1, le=MAX_SAMPLE)
    by_channel: bool = True
    population: Literal["stored", "generated"] = Field(
        default="stored",
        description="stored customers, or customers generated from the declared profile",
    )
    compare_live: bool = True
    compare_text: str | None = Field(
        default=None,
        max_length=MAX_TEXT,
        description="another version's .rules text to compare with (instead of the live one)",
    )


# ---------------------------------------------------------------- helpers


def _st(request: Request) -> AppState:
    state: AppState = request.app.state.arbiter
    return state


def _worker(request: Request) -> studio_worker.Worker:
    worker: studio_worker.Worker = request.app.state.studio_worker
    return worker


def _cache(request: Request) -> wb.DraftCache:
    cache: wb.DraftCache | None = getattr(request.app.state, "studio_drafts", None)
    if cache is None:
        cache = wb.DraftCache(_st(request).rulesets.resources)
        request.app.state.studio_drafts = cache
    return cache


def _path(st: AppState, name: str | None) -> Path:
    key = name or st.rulesets.default
    if key is not None and key in st.rulesets.live:
        return st.rulesets.live[key].path
    return st.rulesets.folder() / f"{key or 'draft'}.rules"


def _invalid(exc: dsl.RulesError, field: str = "text") -> ApiError:
    return ApiError(
        422,
        "rules_invalid",
        exc.format(),
        field,
        extra={"diagnostics": [wb.diagnostic_json(d) for d in exc.diagnostics]},
    )


async def _compile(request: Request, body: Draft, text: str | None = None) -> LiveRuleset:
    try:
        return await _cache(request).compile(_path(_st(request), body.ruleset), text or body.text)
    except dsl.RulesError as exc:
        raise _invalid(exc) from None


def _decision_json(decision: Any) -> Any:
    return json.loads(ENCODER.encode(decision))


async def _redis(awaitable: Any) -> Any:
    try:
        return await awaitable
    except (RedisError, OSError) as exc:
        raise ApiError(
            503, "unavailable", f"cannot reach Redis: {type(exc).__name__}: {exc}"
        ) from None


# ---------------------------------------------------------- check, format


@router.post("/v1/check", tags=["studio"], responses=_statuses())
async def check_text(body: Draft, request: Request, authorization: Auth = None) -> Any:
    """Check `.rules` text with the CLI's checker (models included); nothing is activated.

    Answers 200 whether or not the text has errors: `ok`, `diagnostics` (code,
    severity, message, line/column and end, hint, `fix` = the did-you-mean
    name) and `symbols` (declared names, for completion; null on a syntax error).
    """
    st = _st(request)
    # Drafts are rules: reading or checking them is for rule authors, never the public key.
    await authorize(request, "rulesets:read")
    path = _path(st, body.ruleset)
    return await _worker(request).run(studio_worker.check, str(path), body.text)


@router.post("/v1/format", tags=["studio"], responses=_statuses())
async def format_text(body: Draft, request: Request, authorization: Auth = None) -> Any:
    """The canonical form of the text (`arbiter fmt`); 422 with the diagnostics if it does not parse."""
    st = _st(request)
    await authorize(request, "rulesets:read")
    path = str(_path(st, body.ruleset))
    answer = await _worker(request).run(studio_worker.format_text, path, body.text)
    if "text" not in answer:
        extra = {"diagnostics": answer["diagnostics"]}
        raise ApiError(422, "rules_invalid", answer["message"], "text", extra=extra)
    return answer


# ------------------------------------------------------------------- try


@router.post(
    "/v1/studio/try",
    tags=["studio"],
    responses=_statuses((404, "unknown customer"), (503, "Redis unreachable")),
)
async def try_draft(body: TryIn, request: Request, authorization: Auth = None) -> Any:
    """Decide with the draft for a stored customer or a sample; the engine's decision and
    explanation, and the try as a scenario block ready to append."""
    st = _st(request)
    await authorize(request, "rulesets:read")
    if body.customer_id is not None:
        await authorize(request, "profiles:read")  # a stored customer's data
    now = st.clock()
    if body.customer_id is not None:
        live = await _compile(request, body)
        try:
            context = normalize_all(live.context_schema, body.context, "context.")
        except ValueProblem as p:
            raise ApiError(422, "invalid_request", str(p), p.field) from None
        inputs: Inputs = await _redis(st.admin_store.fetch(body.customer_id, live.plan.needs, now))
        if not inputs.profile and not any(inputs.aggregates.values()):
            raise ApiError(
                404, "unknown_customer", f"nothing is stored on '{body.customer_id}'", "customer_id"
            )
        customer = body.customer_id
        scenario = wb.stored_scenario("try for " + customer, customer, inputs, body.context, now)
    else:
        block = wb.sample_block(body.profile, body.context, body.events)
        text, first_line = wb.with_sample(body.text, block)
        try:
            live = await _cache(request).compile(_path(st, body.ruleset), text)
        except dsl.RulesError as exc:
            sample_field = "sample" if exc.first.span.line >= first_line else "text"
            raise _invalid(exc, sample_field) from None
        sample = wb.first_scenario_after(live.plan.checked.scenarios, first_line)
        inputs = scenario_inputs(live.plan, sample, now)
        context = normalize_all(live.context_schema, sample.context, "context.")
        customer = "studio-sample"
        scenario = sample
    limit = live.plan.top if live.plan.top is not None else 1
    request_ = DecideRequest(customer, context, live.name, limit, explain=True)
    decision, record = decide(
        live.plan,
        request_,
        inputs,
        decision_id=new_decision_id(now),
        now=now,
        oracle=wb.oracle_for(live),
    )
    got = tuple(a.action for a in decision.actions)
    explanation = decision.explanation or {}
    # Why every other action was not chosen: the engine's own explanation (its first
    # reason per action, docs/explain.md), never a second reimplementation.
    why_not = [
        (fate["action"], fate["message"])
        for fate in explanation.get("actions") or ()
        if fate["fate"] != "returned"
    ]
    parsed = await asyncio.to_thread(dsl.parse, body.text, str(_path(st, body.ruleset)))
    saved = wb.scenario_text(parsed, _named(scenario, got, body))
    return {
        "decision": _decision_json(decision),
        "inputs": json.loads(msgspec.json.encode(inputs)),
        "scores": record.scores,
        "errors": record.errors,
        "not_returned": [{"action": a, "why": why} for a, why in why_not],
        "scenario": saved,
    }


def _named(scenario: Any, got: tuple[str, ...], body: TryIn) -> Any:
    from dataclasses import replace

    first = got[0] if got else "nothing"
    who = f"customer {body.customer_id}" if body.customer_id else "this sample"
    return replace(
        scenario,
        name=f"{who} gets {first}",
        expect=got,
        now=None if not body.customer_id else scenario.now,
    )


# ------------------------------------------------------------- scenarios


@router.post("/v1/studio/scenarios", tags=["studio"], responses=_statuses())
async def run_draft_scenarios(body: Draft, request: Request, authorization: Auth = None) -> Any:
    """Run the draft's scenario blocks (`arbiter test`): pass/fail, expected vs got, why."""
    await authorize(request, "rulesets:read")
    live = await _compile(request, body)
    results = await asyncio.to_thread(run_scenarios, live.plan)
    return {
        "passed": sum(r.passed for r in results),
        "failed": sum(not r.passed for r in results),
        "results": [
            {
                "name": r.name,
                "line": r.span.line,
                "passed": r.passed,
                "expected": list(r.expected),
                "got": list(r.got),
                "customer_id": r.customer_id,
                "explanation": json.loads(ENCODER.encode(dict(r.explanation))),
                "not_returned": [{"action": a, "why": why} for a, why in r.dropped],
                "expected_not_returned": _expected_why_not(live, r),
                "errors": list(r.errors),
            }
            for r in results
        ],
    }


def _expected_why_not(live: LiveRuleset, r: Any) -> list[dict[str, str]]:
    """For each expected action the scenario did not get: the runner's reason when a
    rule offered it, else what the explanation shows (no rule offered it, or the default)."""
    dropped = dict(r.dropped)
    fired = {f.get("offers") for f in r.explanation.get("fired") or ()}
    out = []
    for action in r.expected:
        if action in r.got:
            continue
        if action in dropped:
            why = dropped[action]
        elif action == live.plan.checked.default and r.got:
            why = f"it is the default, returned only when nothing is chosen; got {', '.join(r.got)}"
        elif action not in fired:
            why = "no rule offered it for this customer (see the segments and rules that fired)"
        else:
            why = "offered but not returned"
        out.append({"action": action, "why": why})
    return out


# -------------------------------------------------------------- simulate


@router.post(
    "/v1/studio/simulate",
    tags=["studio"],
    responses=_statuses((409, "no stored profiles"), (503, "Redis unreachable")),
)
async def simulate_draft(body: SimulateIn, request: Request, authorization: Auth = None) -> Any:
    """Decide with the draft for a sample of stored customers: the action mix, and with
    `compare_live` the live version's mix and the customers whose decision changes."""
    st = _st(request)
    await authorize(request, "rulesets:read")
    await authorize(request, "profiles:read")  # decides over stored customers' data
    live = await _compile(request, body)
    now = st.clock()
    try:
        context = normalize_all(live.context_schema, body.context, "context.")
    except ValueProblem as p:
        raise ApiError(422, "invalid_request", str(p), p.field) from None
    contexts = wb.contexts_for(live, context, body.by_channel)
    other: LiveRuleset | None = None
    label = ""
    if body.compare_text is not None:
        try:
            other = await _cache(request).compile(_path(st, body.ruleset), body.compare_text)
        except dsl.RulesError as exc:
            raise _invalid(exc, "compare_text") from None
        label = "the other version"
    elif body.compare_live:
        other = st.rulesets.live.get(live.name)
        label = f"live v{other.version_no}" if other else ""
    started = time.perf_counter()
    if body.population == "generated":
        population = wb.generated_population(live, body.sample, now)
        base = population if other is None else wb.generated_population(other, body.sample, now)
    else:
        customers = await _redis(wb.stored_customers(st.admin_redis, body.sample))
        if not customers:
            raise ApiError(
                409,
                "no_profiles",
                "no customer profiles are stored yet: PUT /v1/profiles/{id} first, "
                "or simulate a generated population",
                "population",
            )
        population = [
            (c, await _redis(st.admin_store.fetch(c, live.plan.needs, now))) for c in customers
        ]
        base = []
        if other is not None:
            base = [
                (c, await _redis(st.admin_store.fetch(c, other.plan.needs, now))) for c in customers
            ]
    draft_mix = await asyncio.to_thread(
        simulate, live.plan, population, contexts, lambda: wb.oracle_for(live), now
    )
    answer: dict[str, Any] = {
        "customers": len(population),
        "population": body.population,
        "contexts": contexts,
        "draft": draft_mix.to_json(),
        "compared": None,
        "changes": None,
    }
    if other is not None:
        compared = other
        other_mix = await asyncio.to_thread(
            simulate, compared.plan, base, contexts, lambda: wb.oracle_for(compared), now
        )
        answer["compared"] = {
            "label": label,
            "version": compared.plan.version,
            "version_no": compared.version_no or None,
            **other_mix.to_json(),
        }
        answer["changes"] = changes(other_mix, draft_mix, contexts)
    answer["elapsed_ms"] = round((time.perf_counter() - started) * 1000, 1)
    return answer


# ------------------------------------------------------------ diff, data


@router.post("/v1/studio/diff", tags=["studio"], responses=_statuses())
async def diff_draft(body: Draft, request: Request, authorization: Auth = None) -> Any:
    """A unified diff of the draft against the live version's text."""
    st = _st(request)
    await authorize(request, "rulesets:read")  # the answer holds the live rules text
    name = body.ruleset or st.rulesets.default
    current = st.rulesets.live.get(name) if name else None
    old = current.text if current is not None else ""
    lines = difflib.unified_diff(
        old.splitlines(keepends=True),
        body.text.splitlines(keepends=True),
        fromfile=f"live v{current.version_no}" if current else "(none)",
        tofile="draft",
    )
    return {
        "ruleset": name,
        "live_version_no": current.version_no if current else None,
        "diff": "".join(lines),
        "same": old == body.text,
    }


@router.get(
    "/v1/studio/customers", tags=["studio"], responses=_statuses((503, "Redis unreachable"))
)
async def list_customers(
    request: Request,
    limit: Annotated[int, Query(ge=1, le=MAX_SAMPLE)] = 50,
    authorization: Auth = None,
) -> Any:
    """Ids of stored customers (a sample, in id order), to pick one in the Try panel."""
    st = _st(request)
    await authorize(request, "profiles:read")
    unknown = sorted(set(request.query_params) - {"limit"})
    if unknown:
        raise ApiError(
            422, "invalid_request", f"unknown query parameter '{unknown[0]}'", unknown[0]
        )
    return {"customers": await _redis(wb.stored_customers(st.admin_redis, limit))}


@router.get(
    "/v1/studio/rulesets/{name}/versions",
    tags=["studio"],
    responses=_statuses((404, "unknown ruleset"), (503, "Redis unreachable")),
)
async def list_versions(name: str, request: Request, authorization: Auth = None) -> Any:
    """Every stored version of a ruleset: number, size, first differing line, live or not."""
    from arbiter.engine.store import keys

    st = _st(request)
    await authorize(request, "rulesets:read")
    if name not in st.rulesets.live:
        raise ApiError(404, "unknown_ruleset", f"no ruleset named '{name}'", "name")
    raw = await _redis(st.admin_redis.lrange(keys.ruleset_versions(name), 0, -1))
    meta = await _redis(st.admin_redis.hgetall(keys.ruleset_meta(name)))
    live_no = st.rulesets.live[name].version_no
    out = []
    for i, blob in enumerate(raw, start=1):
        info = json.loads(meta.get(str(i).encode(), b"{}"))
        out.append(
            {
                "version_no": i,
                "live": i == live_no,
                "lines": blob.count(b"\n"),
                "published_at": info.get("at"),
                "author": info.get("author"),
            }
        )
    return {"ruleset": name, "versions": out[::-1]}

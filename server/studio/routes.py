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

import difflib
import json
import time
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request
from fastapi.responses import FileResponse, Response
from pydantic import BaseModel, Field
from redis.exceptions import RedisError
from starlette.middleware.gzip import GZipMiddleware
from starlette.staticfiles import StaticFiles

from arbiter.engine.records import Inputs
from arbiter.server.errors import ApiError
from arbiter.server.routes.admin import Auth
from arbiter.server.security.access import authorize
from arbiter.server.state import AppState
from arbiter.server.studio import jobs
from arbiter.server.studio import workbench as wb
from arbiter.server.studio import worker as studio_worker
from arbiter.server.studio.pool import JobPool

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


def _jobs(request: Request) -> JobPool:
    """The app's pool for try, scenarios and simulate (processes start on first use)."""
    pool: JobPool | None = getattr(request.app.state, "studio_jobs", None)
    if pool is None:
        settings = _st(request).settings
        pool = JobPool(settings.studio_workers, settings.studio_job_timeout_s)
        request.app.state.studio_jobs = pool
    return pool


def _draft(request: Request, ruleset: str | None, text: str) -> jobs.Draft:
    """What a job needs to rebuild a draft in its process: path, text, model loader."""
    st = _st(request)
    return (str(_path(st, ruleset)), text, st.rulesets.resources)


def _path(st: AppState, name: str | None) -> Path:
    key = name or st.rulesets.default
    if key is not None and key in st.rulesets.live:
        return st.rulesets.live[key].path
    return st.rulesets.folder() / f"{key or 'draft'}.rules"


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
    answer = await _worker(request).run(studio_worker.check, str(path), body.text)
    # A studio is open: have a job process ready for its first try or simulation.
    _jobs(request).warm()
    return answer


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

_BUSY = (503, "Redis unreachable, or every studio worker busy or the job over its time limit")


@router.post(
    "/v1/studio/try",
    tags=["studio"],
    responses=_statuses((404, "unknown customer"), _BUSY),
)
async def try_draft(body: TryIn, request: Request, authorization: Auth = None) -> Any:
    """Decide with the draft for a stored customer or a sample; the engine's decision and
    explanation, and the try as a scenario block ready to append."""
    st = _st(request)
    await authorize(request, "rulesets:read")
    if body.customer_id is not None:
        await authorize(request, "profiles:read")  # a stored customer's data
    now = st.clock()
    draft = _draft(request, body.ruleset, body.text)
    async with _jobs(request).slot() as slot:
        if body.customer_id is None:
            return await slot.run(
                jobs.try_sample, draft, body.profile, body.context, body.events, now
            )
        needs = await slot.run(jobs.needs, draft, body.context)
        inputs: Inputs = await _redis(st.admin_store.fetch(body.customer_id, needs, now))
        if not inputs.profile and not any(inputs.aggregates.values()):
            raise ApiError(
                404, "unknown_customer", f"nothing is stored on '{body.customer_id}'", "customer_id"
            )
        return await slot.run(jobs.try_stored, draft, body.customer_id, inputs, body.context, now)


# ------------------------------------------------------------- scenarios


@router.post("/v1/studio/scenarios", tags=["studio"], responses=_statuses(_BUSY))
async def run_draft_scenarios(body: Draft, request: Request, authorization: Auth = None) -> Any:
    """Run the draft's scenario blocks (`arbiter test`): pass/fail, expected vs got, why."""
    await authorize(request, "rulesets:read")
    draft = _draft(request, body.ruleset, body.text)
    async with _jobs(request).slot() as slot:
        return await slot.run(jobs.scenarios, draft)


# -------------------------------------------------------------- simulate


@router.post(
    "/v1/studio/simulate",
    tags=["studio"],
    responses=_statuses((409, "no stored profiles"), _BUSY),
)
async def simulate_draft(body: SimulateIn, request: Request, authorization: Auth = None) -> Any:
    """Decide with the draft for a sample of stored customers: the action mix, and with
    `compare_live` the live version's mix and the customers whose decision changes."""
    st = _st(request)
    await authorize(request, "rulesets:read")
    await authorize(request, "profiles:read")  # decides over stored customers' data
    now = st.clock()
    draft = _draft(request, body.ruleset, body.text)
    other: jobs.Draft | None = None
    label = ""
    version_no = None
    if body.compare_text is not None:
        other = _draft(request, body.ruleset, body.compare_text)
        label = "the other version"
    started = time.perf_counter()
    async with _jobs(request).slot() as slot:
        plan = await slot.run(jobs.simulation_plan, draft, other, body.context, body.by_channel)
        if other is None and body.compare_live and plan["name"] in st.rulesets.live:
            current = st.rulesets.live[plan["name"]]
            other = (str(current.path), current.text, st.rulesets.resources)
            label, version_no = f"live v{current.version_no}", current.version_no or None
            plan = await slot.run(jobs.simulation_plan, draft, other, body.context, body.by_channel)
        contexts = plan["contexts"]
        if body.population == "generated":
            answer = await slot.run(
                jobs.simulation, draft, other, contexts, now, None, None, body.sample
            )
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
            population = await _population(st, customers, plan["needs"], now)
            base = None
            if other is not None:
                base = await _population(st, customers, plan["other_needs"], now)
            answer = await slot.run(jobs.simulation, draft, other, contexts, now, population, base)
    if answer["compared"] is not None:
        answer["compared"] = {"label": label, "version_no": version_no, **answer["compared"]}
    answer = {"population": body.population, "contexts": contexts, **answer}
    answer["elapsed_ms"] = round((time.perf_counter() - started) * 1000, 1)
    return answer


async def _population(
    st: AppState, customers: list[str], needs: Any, now: float
) -> list[tuple[str, Inputs]]:
    return [(c, await _redis(st.admin_store.fetch(c, needs, now))) for c in customers]


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

"""`GET /v1/experiments/{name}`: an experiment's or holdout's report (engine.log.experiments)."""

from __future__ import annotations

import re
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import HTMLResponse, PlainTextResponse
from redis.exceptions import RedisError

from arbiter.dsl import nodes as n
from arbiter.dsl.checked import CheckedRuleset
from arbiter.server.errors import ApiError
from arbiter.server.security.access import authorize
from arbiter.server.state import AppState
from arbiter.server.times import parse_instant

router = APIRouter()
Auth = Annotated[str | None, Header(alias="Authorization", include_in_schema=False)]
_DURATION = re.compile(r"^(\d+)(s|m|h|d|w)$")
_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_goal(
    checked: CheckedRuleset, event: str | None, within: str | None, value: str | None
) -> n.Goal | None:
    """A goal from query or command-line text, checked against the ruleset; ValueError names
    the bad part as ``field: problem``."""
    if event is None:
        if within is not None or value is not None:
            raise ValueError("goal: within and value need a goal event")
        return None
    if checked.events and event not in checked.events:
        raise ValueError(f"goal: ruleset '{checked.name}' declares no event '{event}'")
    seconds: float | None = None
    if within is not None:
        m = _DURATION.match(within)
        if m is None or int(m.group(1)) == 0:
            raise ValueError("within: a positive duration such as 7d, 12h or 30m")
        seconds = float(int(m.group(1)) * _UNIT[m.group(2)])
    fields = checked.events.get(event, {})
    if value is not None and (value not in fields or not fields[value].is_numeric):
        raise ValueError(f"value: event '{event}' has no number property '{value}'")
    return n.Goal(event, seconds, value)


def parse_range(
    since: str | None, until: str | None, now: float
) -> tuple[float | None, float | None]:
    """``since`` and ``until`` parsed (`server.times.parse_instant`); ValueError as ``field: problem``."""
    bounds: list[float | None] = []
    for field, text in (("since", since), ("until", until)):
        try:
            bounds.append(None if text is None else parse_instant(text, now))
        except ValueError as exc:
            raise ValueError(f"{field}: {exc}") from None
    low, high = bounds
    if low is not None and high is not None and low > high:
        raise ValueError(f"until: {until!r} is before since {since!r}")
    return low, high


@router.get("/v1/experiments/{name}", tags=["experiments"])
async def get_experiment(
    name: str,
    request: Request,
    ruleset: str | None = None,
    goal: str | None = None,
    within: str | None = None,
    value: str | None = None,
    since: str | None = None,
    until: str | None = None,
    format: Annotated[str, Query(pattern="^(json|text|html)$")] = "json",
    min_customers: Annotated[int, Query(ge=1)] = 1000,
    min_conversions: Annotated[int, Query(ge=0)] = 20,
    alpha: Annotated[float, Query(gt=0, lt=1)] = 0.05,
    authorization: Auth = None,
) -> Any:
    """Per group: customers, decisions, conversions, rates and mean reward with 95% intervals,
    uplift over the control, p-values, the sample-ratio check and a verdict.

    ``since`` and ``until`` (epoch seconds, an ISO date or time, or a duration
    before now such as ``7d``) count only the decisions made in that range,
    and read only that part of the logs."""
    # Imported here: the statistics pull in scipy, which would slow every worker's start.
    from arbiter.engine.log.experiment_reads import load_report
    from arbiter.engine.log.experiment_render import render_html, render_text
    from arbiter.engine.log.experiments import ReportError

    st: AppState = request.app.state.arbiter
    # Results are business data: a read scope of their own (docs/operations.md).
    await authorize(request, "reports:read")
    live = st.rulesets.get(ruleset)
    if live is None:
        raise ApiError(404, "unknown_ruleset", f"no ruleset named '{ruleset}'", "ruleset")
    checked = live.plan.checked
    try:
        override = parse_goal(checked, goal, within, value)
        low, high = parse_range(since, until, st.clock())
    except ValueError as exc:
        field, _, message = str(exc).partition(": ")
        raise ApiError(422, "invalid_request", message, field) from None
    try:
        report = await load_report(
            st.admin_redis,
            checked,
            name,
            goal=override,
            since=low,
            until=high,
            min_customers=min_customers,
            min_conversions=min_conversions,
            alpha=alpha,
        )
    except ReportError as exc:
        raise ApiError(404, exc.code, str(exc), "name") from None
    except (RedisError, OSError) as exc:
        raise ApiError(503, "unavailable", f"cannot reach Redis: {exc}") from None
    if format == "html":
        return HTMLResponse(render_html(report))
    if format == "text":
        return PlainTextResponse(render_text(report))
    return report.to_json()

"""The new playbook lines decide the same on real Redis, over HTTP, as in the scenario runner.

For each scenario of `tests/cases/good/contact_policy.rules` (a cross-offer SMS/email
policy, contact history, suppress by tag), `tests/cases/good/calendar.rules` (hour of
day and weekday in non-UTC zones) and `tests/cases/good/grouped_windows.rules` (the same
category 3+ times in 24h, distinct categories, calendar months): the profile goes in with
`PUT /v1/profiles`, each past contact is written by the store's own after-decision script
(what the decision log writer runs for a returned action), each event is sent with
`POST /v1/events` at the scenario's clock, the app's clock is set to the scenario's
`now`, and `POST /v1/decide` must return exactly what `arbiter test` computed (the example
`rulesets/fashion.rules` too; `calendar_months.rules` counts calendar months at month
ends and in leap years). Scenario times lie within 400 days of today or later:
Redis expires window hashes on its own, real clock.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import redis
from fastapi.testclient import TestClient
from support.paths import CASES_DIR, RULESETS_DIR
from support.server import ADMIN, settings

from arbiter import dsl
from arbiter.engine.codegen.compiler import compile_plan
from arbiter.engine.decision.policies import contacts_of, rejections_of
from arbiter.engine.decision.scenarios import DEFAULT_NOW, run_scenario
from arbiter.engine.decision.window_span import keep_seconds
from arbiter.engine.store.client import connect
from arbiter.engine.store.profiles import AFTER_DECISION_LUA, ProfileStore
from arbiter.server.app import create_app

FILES = [
    CASES_DIR / "good" / "contact_policy.rules",
    CASES_DIR / "good" / "calendar.rules",
    CASES_DIR / "good" / "grouped_windows.rules",
    # Calendar months at month ends and in a leap year: caps, policy, contacts(), now() - 1mo.
    CASES_DIR / "good" / "calendar_months.rules",
    RULESETS_DIR / "fashion.rules",  # the example a team copies for grouped windows
]


async def reject(url: str, customer: str, name: str, ts: float, keep: int) -> None:
    client = connect(url, socket_timeout=5)
    try:
        await ProfileStore(client).record_rejection(customer, name, ts, keep)
    finally:
        await client.aclose()


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_scenarios_decide_alike_on_redis(redis_url: str, tmp_path: Path, path: Path) -> None:
    plan = compile_plan(dsl.load_checked(path))
    assert plan.checked.scenarios
    sync = redis.Redis.from_url(redis_url)
    store = ProfileStore(sync)  # only to build the after-decision command, as the writer does
    app = create_app(settings(redis_url, tmp_path, rules_path=str(path)))
    with TestClient(app) as c:
        state = app.state.arbiter
        for k, sc in enumerate(plan.checked.scenarios):
            result = run_scenario(plan, sc)
            assert result.passed, result.name
            cid = f"{result.customer_id}-{k}"
            now = sc.now if sc.now is not None else DEFAULT_NOW
            assert c.put(f"/v1/profiles/{cid}", json=sc.profile, headers=ADMIN).status_code == 200
            state.clock = lambda now=now: now  # events arrive at the scenario's time
            for i, ev in enumerate(sc.events):
                if ev.event in plan.checked.events:
                    props = {} if ev.prop is None else {ev.prop: ev.label or ev.amount}
                    sent = [
                        {"customer_id": cid, "type": ev.event, "ts": now - ev.ago_seconds}
                        | ({"properties": props} if props else {})
                        for _ in range(1 if ev.prop is not None else int(ev.amount))
                    ]
                    answer = c.post("/v1/events", json={"events": sent}, headers=ADMIN)
                    assert answer.status_code == 202, answer.text
                    continue
                spec = plan.action(ev.event)  # otherwise a past contact
                if ev.prop == "rejected":
                    # What `POST /v1/feedback` with a reward <= 0 records.
                    targets = rejections_of(plan, spec, None)
                    if spec.fatigue is not None:
                        fatigue = spec.fatigue
                        keep = keep_seconds(fatigue.window_seconds) + keep_seconds(
                            fatigue.period_seconds
                        )
                        targets.append((spec.name, keep))
                    for name, keep in targets:
                        for _ in range(int(ev.amount)):
                            asyncio.run(reject(redis_url, cid, name, now - ev.ago_seconds, keep))
                    continue
                contacts = contacts_of(plan, spec, None)
                if spec.cap is not None:
                    contacts.append((spec.name, spec.cap.window_seconds))
                for j in range(int(ev.amount)):
                    ts = now - ev.ago_seconds
                    key_list, args = store.after_decision_command(
                        cid, b"0-1", f"past-{k}-{i}-{j}", 3600, contacts, ts
                    )
                    sync.eval(AFTER_DECISION_LUA, len(key_list), *key_list, *args)
            state.clock = lambda now=now: now  # the decision's clock is the scenario's
            limit = plan.top if plan.top is not None else 1
            body = {"customer_id": cid, "context": sc.context, "limit": limit}
            answer = c.post("/v1/decide", json=body).json()
            got = tuple(a["action"] for a in answer["actions"])
            assert got == result.got, f"{sc.name}: HTTP {got}, scenario {result.got}"
    sync.close()

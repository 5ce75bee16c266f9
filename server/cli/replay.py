"""The `arbiter` commands that decide from rules: decide (one decision), replay (logged ones)."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from typing import Any

from arbiter.engine.plan import Plan
from arbiter.server.cli.common import compile_rules, redis_url, rule_paths

__all__ = ["cmd_decide", "cmd_replay"]


# ------------------------------------------------------------------ decide


def cmd_decide(args: argparse.Namespace) -> int:
    """One decision from the command line, against Redis or a literal profile.

    The context, profile and events are validated and converted exactly as
    `POST /v1/decide`, `PUT /v1/profiles` and `POST /v1/events` do
    (`engine.validate`): a value outside its enum or an unreadable time is an
    error naming the field, and with `--profile` the aggregates are those of the
    given `--events` (none: every count is 0).
    """
    from arbiter.engine.decision.decide import decide
    from arbiter.engine.decision.literal_inputs import (
        events_from_json,
        literal_inputs,
        normalize_values,
    )
    from arbiter.engine.decision.oracle import LiveOracle
    from arbiter.engine.records import ENCODER, DecideRequest
    from arbiter.engine.scoring.loading import load_models
    from arbiter.engine.validate import ValueProblem, validate_request

    path = rule_paths([args.rules])[0]
    plan = compile_rules(path)
    now = time.time()
    context = _json_object(args.context, "--context")
    request = DecideRequest(args.customer, context, limit=args.limit, explain=args.explain)
    validate_request(request, plan.checked.context)
    if args.profile is not None:
        profile = normalize_values(
            plan.checked.profile, _json_object(args.profile, "--profile"), "profile."
        )
        events = events_from_json(plan, _json(args.events or "[]", "--events"), now)
        inputs = literal_inputs(plan, profile, events, now)
    elif args.events is not None:
        raise ValueProblem("events", "--events needs --profile (without it, Redis is read)")
    else:
        inputs = asyncio.run(_fetch(plan, args.customer, now))
    oracle = LiveOracle(load_models(plan, path.parent), {})
    decision, _ = decide(
        plan, request, inputs, decision_id=f"cli-{int(now * 1000)}", now=now, oracle=oracle
    )
    print(json.dumps(json.loads(ENCODER.encode(decision)), indent=2))
    return 0


def _json(text: str, option: str) -> Any:
    """A command-line JSON value; unreadable JSON is a usage error (exit 2) naming the option."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{option}: not valid JSON: {exc}") from None


def _json_object(text: str, option: str) -> dict[str, Any]:
    """A command-line JSON object, or a `ValueProblem` naming the option."""
    from arbiter.engine.validate import ValueProblem

    value = _json(text, option)
    if not isinstance(value, dict):
        raise ValueProblem(option, "expected a JSON object")
    return value


async def _fetch(plan: Plan, customer_id: str, now: float) -> Any:
    from arbiter.engine.store.client import connect
    from arbiter.engine.store.profiles import ProfileStore

    url, embedded = redis_url()
    client = connect(url, socket_timeout=5)
    try:
        return await ProfileStore(client).fetch(customer_id, plan.needs, now)
    finally:
        await client.aclose()
        if embedded is not None:
            embedded.stop()


# ------------------------------------------------------------------ replay


def cmd_replay(args: argparse.Namespace) -> int:
    """Replay logged decisions against the rules; exit 1 if a same-version replay differs."""
    from arbiter.engine.log.replay import read_jsonl, read_stream, replay
    from arbiter.engine.store.client import connect_sync

    plans = {}
    for path in rule_paths([args.rules]):
        plan = compile_rules(path)
        plans[plan.name] = plan
    embedded = None
    client = None
    if args.source and not args.source.startswith(
        ("redis://", "rediss://", "unix://", "redis+cluster://")
    ):
        records = read_jsonl(args.source)
    else:
        url = args.source
        if url is None:
            url, embedded = redis_url()
        client = connect_sync(url)
        from arbiter.engine.store import keys

        records = read_stream(client, keys.DECISION_STREAM, args.limit)
    total = identical = mismatched = changed = skipped = 0
    try:
        for record in records:
            found = plans.get(record.ruleset.name)
            if found is None:
                skipped += 1
                continue
            result = replay(found, record)
            total += 1
            if result.identical:
                identical += 1
            elif result.same_plan:
                mismatched += 1
            else:
                changed += 1
            if args.verbose or not result.identical:
                tag = "" if result.same_plan else " [new ruleset version]"
                print(result.describe() + tag)
    finally:
        if client is not None:
            client.close()
        if embedded is not None:
            embedded.stop()
    print(
        f"replayed {total}: {identical} identical, {mismatched} differ under the same ruleset version, "
        f"{changed} changed by a new ruleset version; {skipped} skipped (ruleset not loaded)"
    )
    if total == 0:
        print("no decisions to replay", file=sys.stderr)
    return 1 if mismatched else 0

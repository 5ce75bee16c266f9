"""The studio's work on draft text: compile without activating, try, scenarios, simulate.

Everything here goes through the same functions the CLI and `/v1/decide`
use: `dsl.diagnose` (the checker), `rulesets.build` (check, compile, load the
ONNX models), `engine.decision.decide` (with its explanation), the scenario
runner and `engine.decision.simulate`. Nothing is made live; publishing is the
ordinary `PUT /v1/rulesets/{name}`.
"""

from __future__ import annotations

import json
import math
import random
import re
from collections.abc import Mapping, Sequence
from dataclasses import replace
from functools import lru_cache
from pathlib import Path
from typing import Any

from arbiter import dsl
from arbiter.dsl import nodes as n
from arbiter.dsl.diagnose import Diagnosis
from arbiter.dsl.errors import Diagnostic
from arbiter.dsl.formatter import format_ruleset
from arbiter.dsl.outline import outline
from arbiter.engine.decision.oracle import LiveOracle
from arbiter.engine.records import Inputs
from arbiter.engine.store import keys
from arbiter.server.rulesets import LiveRuleset, Resources, build

#: Drafts compiled lately, by (path, text): a studio session re-runs one text often.
CACHE_SIZE = 8
#: The name given to the sample scenario the Try panel builds from its form.
TRY_NAME = "studio try"
_DID_YOU_MEAN = re.compile(r"did you mean '([^']+)'\?")


def diagnostic_json(d: Diagnostic) -> dict[str, Any]:
    """A diagnostic for editors: `to_json()` plus its end and the did-you-mean replacement."""
    out = d.to_json()
    out["end_line"] = d.span.end_line
    out["end_column"] = d.span.end_column
    match = _DID_YOU_MEAN.search(d.hint or "")
    out["fix"] = match.group(1) if match else None
    return out


def check_report(diagnosis: Diagnosis, main_file: str) -> dict[str, Any]:
    """`POST /v1/check`'s answer: diagnostics of the main file, those of includes, names."""
    return {
        "ok": not diagnosis.errors,
        "diagnostics": [diagnostic_json(d) for d in diagnosis.diagnostics],
        "symbols": [s.to_json() for s in outline(diagnosis.ruleset)]
        if diagnosis.ruleset is not None
        else None,
        "file": main_file,
    }


def formatted(path: Path, text: str) -> str:
    """The canonical text (`arbiter fmt`); raises `dsl.RulesError` on a syntax error."""
    return format_ruleset(dsl.parse(text, str(path)))


# In the studio's worker processes only (server/studio/jobs.py): a session re-runs one
# text often (try after try, then simulate), and a job's steps share its build.
@lru_cache(maxsize=CACHE_SIZE)
def compiled(path: Path, text: str, resources: Resources | None) -> LiveRuleset:
    """Check, compile and load models for `text` (never made live); raises `dsl.RulesError`."""
    return build(path, text, 0, resources)


def oracle_for(live: LiveRuleset) -> LiveOracle:
    """The draft's own ONNX models; bandits draw uniformly (a draft has no trained policy)."""
    return LiveOracle(live.models, {})


# ------------------------------------------------------------------ try


def sample_block(profile: Mapping[str, Any], context: Mapping[str, Any], events: str) -> str:
    """A scenario block for the Try panel's sample: the language's own literal syntax.

    Profile and context are JSON objects, which the `.rules` object syntax
    accepts as written; `events` is the scenario syntax (`add_to_cart: 2 3h ago`).
    """
    parts = [f"scenario {json.dumps(TRY_NAME)} {{"]
    if profile:
        parts.append(f"  profile {json.dumps(dict(profile))}")
    if context:
        parts.append(f"  context {json.dumps(dict(context))}")
    if events.strip():
        parts.append(f"  events {{ {events.strip()} }}")
    parts += ["  expect nothing", "}"]
    return "\n".join(parts)


def with_sample(text: str, block: str) -> tuple[str, int]:
    """The draft with the sample block appended, and the block's first line."""
    base = text if text.endswith("\n") else text + "\n"
    return base + "\n" + block + "\n", base.count("\n") + 2


def scenario_text(ruleset: n.Ruleset, scenario: n.ScenarioDecl) -> str:
    """One scenario block printed by the formatter (enum values bare, as `arbiter fmt` does)."""
    schemas = tuple(d for d in ruleset.decls if isinstance(d, n.SchemaDecl))
    span = n.Span(ruleset.span.file, 1, 1, 1, 1)
    placed = replace(scenario, span=span)
    printed = format_ruleset(n.Ruleset(ruleset.name, span, (*schemas, placed), ""))
    return printed[printed.index("scenario ") :]


def stored_scenario(
    name: str, customer_id: str, inputs: Inputs, context: Mapping[str, Any], now: float
) -> n.ScenarioDecl:
    """A scenario for a stored customer's try: their profile as read (aggregates cannot be
    turned back into events, so a saved scenario keeps the attributes only)."""
    return n.ScenarioDecl(
        n.NO_SPAN,
        name,
        profile=dict(inputs.profile),
        context=dict(context),
        customer=customer_id,
        now=now,
    )


# ------------------------------------------------------------ population


def customer_of(profile_key: str) -> str | None:
    """The customer id in a profile key (`arb:{id}:p`), the escaping of `keys` undone."""
    head = f"{keys.PREFIX}:{{"
    if not profile_key.startswith(head) or not profile_key.endswith("}:p"):
        return None
    safe = profile_key[len(head) : -3]
    return safe.replace("%7D", "}").replace("%7B", "{").replace("%25", "%")


async def stored_customers(redis: Any, limit: int) -> list[str]:
    """Up to `limit` customer ids with a stored profile, in id order (a stable sample)."""
    found: set[str] = set()
    async for raw in redis.scan_iter(match=f"{keys.PREFIX}:{{*}}:p", count=500):
        cid = customer_of(raw.decode() if isinstance(raw, bytes) else str(raw))
        if cid is not None:
            found.add(cid)
        if len(found) >= limit * 4:
            break
    return sorted(found)[:limit]


#: How far back a generated customer's time attributes go.
GENERATED_SPAN_S = 400 * 86400


def generated_population(live: LiveRuleset, size: int, now: float) -> list[tuple[str, Inputs]]:
    """`size` synthetic customers drawn from the declared profile (seeded: the same each time).

    Numbers are log-uniform over 0..~3,000 so that thresholds small and large are crossed;
    enums and booleans uniform; times within the last 400 days; sets a random subset of the
    consents the actions require. They have no event history: counts are 0, last-seen
    times missing.
    """
    rng = random.Random(f"{live.name}:{size}")
    consents = sorted({a.consent for a in live.plan.checked.actions.values() if a.consent})
    out: list[tuple[str, Inputs]] = []
    for k in range(size):
        profile: dict[str, Any] = {}
        for name, ty in live.profile_schema.items():
            if ty.kind == "number":
                profile[name] = math.floor(10 ** rng.uniform(0, 3.5)) - 1
            elif ty.kind == "enum" and ty.members:
                profile[name] = rng.choice(ty.members)
            elif ty.kind == "bool":
                profile[name] = rng.random() < 0.5
            elif ty.kind == "time":
                profile[name] = now - rng.uniform(0, GENERATED_SPAN_S)
            elif ty.kind == "set":
                profile[name] = sorted(c for c in consents if rng.random() < 0.5)
        aggregates = {
            spec.key: (0.0 if spec.fn in ("count", "sum") else None)
            for spec in live.plan.needs.aggregates
        }
        out.append((f"generated-{k:05d}", Inputs(profile, aggregates)))
    return out


def contexts_for(
    live: LiveRuleset, context: Mapping[str, Any], by_channel: bool
) -> list[dict[str, Any]]:
    """The contexts to simulate: the given one, or one per declared channel."""
    channel = live.plan.checked.context.get("channel")
    if by_channel and channel is not None and channel.kind == "enum":
        return [{**context, "channel": c} for c in channel.members]
    return [dict(context)]


def first_scenario_after(checked_scenarios: Sequence[n.ScenarioDecl], line: int) -> n.ScenarioDecl:
    """The sample scenario (the one appended at `line`)."""
    for sc in checked_scenarios:
        if sc.span.line >= line:
            return sc
    raise LookupError("the sample scenario was not found")

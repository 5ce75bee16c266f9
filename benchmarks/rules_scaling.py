"""Rule evaluation scaling: 100, 1,000 and 10,000 generated rules, three evaluators.

Run from the repository root::

    .venv/bin/python -m benchmarks.rules_scaling [--sizes 100,1000,10000] [--decisions 300]

For each size it generates a ruleset of realistic shape (see `generate`),
then reports:

- compile time: `dsl.parse`, `dsl.check` and `engine.compile_plan` (indexed);
- per-decision evaluation time, the median over many random profiles and
  contexts, of
  (a) Arbiter's generated evaluator with indexing (`compile_plan`, the default),
  (b) the naive evaluator: the same code generator with `optimize=False`,
      which tests every rule one by one in source order (generated Python,
      not an interpreter: a strong baseline),
  (c) GoRules ZEN (`zen-engine`) evaluating the same rules as one decision
      table with the "collect" hit policy, through a `ZenEngine` with a
      static loader (`engine.evaluate(key, context)`, its fastest path).

Before timing, (a), (b) and (c) must agree on the fired offers and
suppressions for a sample of inputs; the run stops if they do not.
"""

from __future__ import annotations

import argparse
import gc
import json
import platform
import random
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from arbiter import dsl, engine
from arbiter.engine.codegen.compiler import compile_plan

# ------------------------------------------------------------------ the shape

COUNTRIES = [
    "DE",
    "FR",
    "GB",
    "IT",
    "ES",
    "NL",
    "BE",
    "AT",
    "CH",
    "PL",
    "SE",
    "NO",
    "DK",
    "FI",
    "IE",
    "PT",
    "CZ",
    "HU",
    "RO",
    "GR",
    "US",
    "CA",
    "MX",
    "BR",
    "AR",
    "JP",
    "KR",
    "CN",
    "IN",
    "AU",
    "NZ",
    "ZA",
    "EG",
    "NG",
    "TR",
    "IL",
    "AE",
    "SA",
    "SG",
    "HK",
]
TIERS = ("bronze", "silver", "gold", "platinum")
CHANNELS = ("web", "app", "email")
PAGES = ("home", "product", "cart", "checkout", "search", "account")
DEVICES = ("desktop", "mobile", "tablet")

#: Segment name -> its conjuncts, in the shared conjunct form below.
SEGMENTS: dict[str, list[tuple[Any, ...]]] = {
    "vip": [("gt", "profile.ltv", 1000), ("ge", "profile.orders_90d", 3)],
    "new_visitor": [("le", "profile.visits_30d", 1)],
    "engaged": [("ge", "profile.visits_30d", 5), ("ge", "profile.orders_90d", 1)],
    "mobile_app": [("eq", "context.device", "mobile"), ("eq", "context.channel", "app")],
}

HEADER = """ruleset scaling

profile { ltv: number, orders_90d: int, visits_30d: int, country: string,
          tier: one of [bronze, silver, gold, platinum], lang: string }
context { channel: one of [web, app, email],
          page: one of [home, product, cart, checkout, search, account],
          category: string, device: one of [desktop, mobile, tablet] }
"""

Conjunct = tuple[Any, ...]


@dataclass
class GenRule:
    """One generated rule: `when`/`suppress`, its conjuncts, and the enclosing `if`'s."""

    kind: str  # offer | suppress
    action: str
    conjuncts: list[Conjunct]
    weight: float = 1.0
    priority: int = 0
    block: int | None = None  # index into GenRuleset.blocks


@dataclass
class GenRuleset:
    text: str
    rules: list[GenRule]
    blocks: list[list[Conjunct]] = field(default_factory=list)
    categories: int = 0


def _render(c: Conjunct) -> str:
    op = c[0]
    if op == "seg":
        return str(c[1])
    name = c[1]
    if op == "eq":
        enum = name.split(".")[1] in ("channel", "page", "device", "tier")
        return f"{name} == {c[2]}" if enum else f'{name} == "{c[2]}"'
    if op == "in":
        enum = name.split(".")[1] in ("channel", "page", "device", "tier")
        items = ", ".join(v if enum else f'"{v}"' for v in c[2])
        return f"{name} in [{items}]"
    if op == "between":
        return f"{name} between {c[2]} and {c[3]}"
    sym = {"gt": ">", "ge": ">=", "lt": "<", "le": "<="}[op]
    return f"{name} {sym} {c[2]}"


def generate(n_rules: int, seed: int = 7) -> GenRuleset:
    """A ruleset of about `n_rules` rules shaped like a large retail catalogue's.

    Most rules are specific to one product category (`context.category`, one
    of about n/6 values: big rulesets are big because they cover more of
    the catalogue, so one customer matches a handful of rules at any size),
    combined with equality tests on country, tier, channel, page and device,
    numeric ranges on lifetime value, orders and visits, and four shared
    segments. About one rule in ten sits inside an `if context.channel ==
    email { … }` block, one in twenty is a `suppress`, and a few broad rules
    apply to every category.
    """
    rnd = random.Random(seed)
    n_categories = max(8, n_rules // 6)
    n_actions = max(12, n_rules // 10)
    actions = [f"offer_{i:05d}" for i in range(n_actions)]

    def cat() -> Conjunct:
        return ("eq", "context.category", f"c{rnd.randrange(n_categories):05d}")

    def ltv() -> int:
        return rnd.choice((100, 250, 500, 1000, 2000, 5000))

    templates: list[tuple[float, Callable[[], tuple[str, list[Conjunct]]]]] = [
        (0.30, lambda: ("offer", [cat(), ("eq", "profile.country", rnd.choice(COUNTRIES[:20]))])),
        (
            0.15,
            lambda: (
                "offer",
                [cat(), ("in", "profile.tier", ("gold", "platinum")), ("gt", "profile.ltv", ltv())],
            ),
        ),
        (0.12, lambda: ("offer", [("seg", "vip"), cat(), ("eq", "context.channel", "web")])),
        (
            0.10,
            lambda: (
                "offer",
                [("between", "profile.ltv", (lo := ltv()), lo * rnd.choice((2, 4))), cat()],
            ),
        ),
        (
            0.10,
            lambda: (
                "offer",
                [
                    ("eq", "context.channel", "app"),
                    cat(),
                    ("ge", "profile.orders_90d", rnd.choice((1, 2, 3, 5))),
                ],
            ),
        ),
        (
            0.08,
            lambda: (
                "offer",
                [("seg", "new_visitor"), ("eq", "context.page", rnd.choice(PAGES)), cat()],
            ),
        ),
        (0.05, lambda: ("offer", [cat(), ("seg", "engaged"), ("eq", "profile.lang", "de")])),
        (
            0.05,
            lambda: (
                "suppress",
                [cat(), ("in", "profile.country", tuple(rnd.sample(COUNTRIES[:20], 3)))],
            ),
        ),
        (0.05, lambda: ("offer", [("seg", "mobile_app"), cat()])),
    ]
    weights = [w for w, _ in templates]
    makers = [m for _, m in templates]

    rules: list[GenRule] = [
        GenRule("offer", actions[0], [("seg", "new_visitor"), ("eq", "context.page", "home")]),
        GenRule("offer", actions[1], [("seg", "vip"), ("gt", "profile.ltv", 5000)], 2.0, 1),
        GenRule("offer", actions[2], [("eq", "profile.tier", "platinum")]),
        GenRule("offer", actions[3], [("seg", "engaged"), ("eq", "context.channel", "app")]),
    ]
    blocks: list[list[Conjunct]] = []
    while len(rules) < n_rules:
        block: int | None = None
        size = 1
        if rnd.random() < 0.02:
            blocks.append([("eq", "context.channel", "email")])
            block = len(blocks) - 1
            size = min(rnd.randint(3, 8), n_rules - len(rules))
        for _ in range(size):
            kind, conj = rnd.choices(makers, weights)[0]()
            weight = rnd.choice((1.0, 1.0, 1.5, 2.0))
            priority = 1 if rnd.random() < 0.05 else 0
            rules.append(GenRule(kind, rnd.choice(actions), conj, weight, priority, block))

    lines = [HEADER]
    for name, conj in SEGMENTS.items():
        lines.append(f"segment {name} = " + " and ".join(_render(c) for c in conj))
    lines.append("")
    for a in actions:
        lines.append(f"action {a} {{ value {rnd.randint(1, 50)} }}")
    lines.append("")
    open_block: int | None = None
    for r in rules:
        if r.block != open_block:
            if open_block is not None:
                lines.append("}")
            if r.block is not None:
                cond = " and ".join(_render(c) for c in blocks[r.block])
                lines.append(f"if {cond} {{")
            open_block = r.block
        indent = "    " if r.block is not None else ""
        cond = " and ".join(_render(c) for c in r.conjuncts)
        if r.kind == "suppress":
            lines.append(f"{indent}suppress {r.action} when {cond}")
        else:
            opts = ""
            if r.weight != 1.0:
                opts += f" weight {r.weight}"
            if r.priority:
                opts += f" priority {r.priority}"
            lines.append(f"{indent}when {cond} offer {r.action}{opts}")
    if open_block is not None:
        lines.append("}")
    return GenRuleset("\n".join(lines) + "\n", rules, blocks, n_categories)


def random_inputs(
    rs: GenRuleset, count: int, seed: int = 11
) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """Random (profile, context) pairs; each field is missing 5% of the time."""
    rnd = random.Random(seed)
    out = []
    for _ in range(count):
        profile: dict[str, Any] = {
            "ltv": round(rnd.lognormvariate(6.0, 1.3), 2),
            "orders_90d": rnd.choice((0, 0, 1, 1, 2, 3, 4, 6, 9)),
            "visits_30d": rnd.choice((0, 1, 1, 2, 3, 5, 8, 13)),
            "country": rnd.choice(COUNTRIES),
            "tier": rnd.choice(TIERS),
            "lang": rnd.choice(("de", "en", "fr", "it")),
        }
        context: dict[str, Any] = {
            "channel": rnd.choice(CHANNELS),
            "page": rnd.choice(PAGES),
            "category": f"c{rnd.randrange(rs.categories):05d}",
            "device": rnd.choice(DEVICES),
        }
        for d in (profile, context):
            for key in list(d):
                if rnd.random() < 0.05:
                    del d[key]
        out.append((profile, context))
    return out


# ------------------------------------------------------------------ GoRules ZEN


def _zen_cell(c: Conjunct) -> str:
    op = c[0]
    if op == "eq":
        return json.dumps(c[2])
    if op == "in":
        return ", ".join(json.dumps(v) for v in c[2])
    if op == "between":
        return f"[{c[2]}..{c[3]}]"
    return {"gt": ">", "ge": ">=", "lt": "<", "le": "<="}[op] + f" {c[2]}"


def to_jdm(rs: GenRuleset) -> dict[str, Any]:
    """The same rules as one ZEN decision table, hit policy "collect".

    Segments are expanded into their conjuncts and an enclosing `if`'s
    condition is prepended, so each row is the rule's full condition. A field
    tested twice in one rule gets a second column.
    """
    columns: dict[tuple[str, int], str] = {}
    rows = []
    for i, r in enumerate(rs.rules):
        conj = list(rs.blocks[r.block]) if r.block is not None else []
        for c in r.conjuncts:
            conj.extend(SEGMENTS[c[1]] if c[0] == "seg" else [c])
        seen: dict[str, int] = {}
        row = {"_id": f"r{i}", "o_kind": json.dumps(r.kind), "o_action": json.dumps(r.action)}
        for c in conj:
            k = seen.get(c[1], 0)
            seen[c[1]] = k + 1
            col = columns.setdefault((c[1], k), f"i{len(columns)}")
            row[col] = _zen_cell(c)
        rows.append(row)
    inputs = [
        {"id": col, "name": f"{name}#{k}", "field": name} for (name, k), col in columns.items()
    ]
    for row in rows:
        for col in columns.values():
            row.setdefault(col, "")
    table = {
        "hitPolicy": "collect",
        "inputs": inputs,
        "outputs": [
            {"id": "o_kind", "name": "kind", "field": "kind"},
            {"id": "o_action", "name": "action", "field": "action"},
        ],
        "rules": rows,
    }
    pos = {"x": 0, "y": 0}
    return {
        "contentType": "application/vnd.gorules.decision",
        "nodes": [
            {"id": "in", "type": "inputNode", "name": "request", "position": pos},
            {
                "id": "table",
                "type": "decisionTableNode",
                "name": "rules",
                "position": pos,
                "content": table,
            },
            {"id": "out", "type": "outputNode", "name": "response", "position": pos},
        ],
        "edges": [
            {"id": "e1", "sourceId": "in", "targetId": "table"},
            {"id": "e2", "sourceId": "table", "targetId": "out"},
        ],
    }


# ------------------------------------------------------------------ running


def fired_arbiter(
    plan: engine.Plan, rt_for: Callable[..., Any], P: dict[str, Any], C: dict[str, Any]
) -> tuple[frozenset[str], frozenset[str]]:
    """(offered actions, suppressed actions) of one evaluation."""
    offers, suppressed, _ = plan.evaluate(P, C, (), rt_for(plan, P, C))
    names = plan.actions
    return frozenset(names[o.action].name for o in offers), frozenset(
        names[i].name for i in suppressed
    )


def fired_zen(result: dict[str, Any]) -> tuple[frozenset[str], frozenset[str]]:
    rows = result["result"]
    return (
        frozenset(r["action"] for r in rows if r["kind"] == "offer"),
        frozenset(r["action"] for r in rows if r["kind"] == "suppress"),
    )


def per_call_median(calls: Sequence[Callable[[], object]], repeat: int) -> float:
    """Median over inputs of the mean time of `repeat` back-to-back calls, in µs."""
    samples = []
    gc_was = gc.isenabled()
    gc.disable()
    try:
        for call in calls:
            call()  # warm: first-touch costs are not per-decision costs
            t0 = time.perf_counter()
            for _ in range(repeat):
                call()
            samples.append((time.perf_counter() - t0) / repeat)
    finally:
        if gc_was:
            gc.enable()
    return statistics.median(samples) * 1e6


@dataclass
class Row:
    rules: int
    parse: float
    check: float
    compile: float
    compile_naive: float
    zen_load: float
    ours: float
    naive: float
    zen: float
    fired: float


def measure(n_rules: int, decisions: int, verify: int, repeat: int) -> Row:
    import zen

    from arbiter.engine.decision.decide import EvalRuntime

    rs = generate(n_rules)
    t0 = time.perf_counter()
    tree = dsl.parse(rs.text, f"scaling-{n_rules}.rules")
    t1 = time.perf_counter()
    checked = dsl.check(tree)
    t2 = time.perf_counter()
    plan = compile_plan(checked)
    t3 = time.perf_counter()
    naive = compile_plan(checked, optimize=False)
    t4 = time.perf_counter()
    jdm = to_jdm(rs)
    zen_engine = zen.ZenEngine({"loader": {"type": "static", "content": {"rules": jdm}}})
    inputs = random_inputs(rs, max(decisions, verify))
    zen_engine.evaluate("rules", {"profile": inputs[0][0], "context": inputs[0][1]})
    t5 = time.perf_counter()

    def rt_for(p: engine.Plan, P: dict[str, Any], C: dict[str, Any]) -> Any:
        return EvalRuntime(p, 0.0, (), None, P, C, ())  # type: ignore[arg-type]

    fired = 0
    for P, C in inputs[:verify]:
        ours = fired_arbiter(plan, rt_for, P, C)
        reference = fired_arbiter(naive, rt_for, P, C)
        theirs = fired_zen(zen_engine.evaluate("rules", {"profile": P, "context": C}))
        if not ours == reference == theirs:
            raise SystemExit(
                f"{n_rules} rules: evaluators disagree on {P} {C}:\n"
                f"  arbiter {ours}\n  naive   {reference}\n  zen     {theirs}"
            )
        fired += len(ours[0])

    sample = inputs[:decisions]
    ours_calls, naive_calls, zen_calls = [], [], []
    for P, C in sample:
        rt_o, rt_n = rt_for(plan, P, C), rt_for(naive, P, C)
        ctx = {"profile": P, "context": C}
        ours_calls.append(lambda P=P, C=C, rt=rt_o: plan.evaluate(P, C, (), rt))
        naive_calls.append(lambda P=P, C=C, rt=rt_n: naive.evaluate(P, C, (), rt))
        zen_calls.append(lambda ctx=ctx: zen_engine.evaluate("rules", ctx))
    # Fewer repetitions for the slow evaluators keep the run short; each is still a median.
    return Row(
        n_rules,
        t1 - t0,
        t2 - t1,
        t3 - t2,
        t4 - t3,
        t5 - t4,
        per_call_median(ours_calls, repeat),
        per_call_median(naive_calls, max(1, repeat // 10)),
        per_call_median(zen_calls, max(1, repeat // 10)),
        fired / max(1, verify),
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--sizes", default="100,1000,10000", help="comma-separated rule counts")
    parser.add_argument("--decisions", type=int, default=300, help="random inputs timed per size")
    parser.add_argument("--verify", type=int, default=500, help="inputs checked across engines")
    parser.add_argument("--repeat", type=int, default=50, help="calls per input (a)")
    args = parser.parse_args(argv)

    from importlib.metadata import version

    print(
        f"Python {platform.python_version()} on {platform.machine()}, "
        f"zen-engine {version('zen-engine')}, lark {version('lark')}"
    )
    rows = []
    for size in (int(s) for s in args.sizes.split(",")):
        row = measure(size, args.decisions, args.verify, args.repeat)
        rows.append(row)
        print(f"  {size} rules measured", file=sys.stderr)

    print()
    print(
        "| rules | parse s | check s | compile s | (a) Arbiter µs | (b) naive µs "
        "| (c) ZEN µs | (b)/(a) | (c)/(a) | offers/decision |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r.rules:,} | {r.parse:.2f} | {r.check:.2f} | {r.compile:.2f} "
            f"| {r.ours:.2f} | {r.naive:.1f} | {r.zen:.1f} "
            f"| {r.naive / r.ours:.1f}x | {r.zen / r.ours:.1f}x | {r.fired:.2f} |"
        )
    print()
    print("naive compile (optimize=False) s: " + ", ".join(f"{r.compile_naive:.2f}" for r in rows))
    print("ZEN load + first evaluation s:    " + ", ".join(f"{r.zen_load:.2f}" for r in rows))
    first, last = rows[0], rows[-1]
    print(
        f"(a) at {last.rules:,} rules costs {last.ours / first.ours:.2f}x (a) at {first.rules:,}; "
        f"parse+check+compile of {last.rules:,} rules: "
        f"{last.parse + last.check + last.compile:.2f} s"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

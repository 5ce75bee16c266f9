"""A linked anonymous id decides as its customer: same holdout, same experiment variants."""

from __future__ import annotations

from support.paths import CASES_DIR

from arbiter import dsl
from arbiter.engine.codegen.compiler import compile_plan
from arbiter.engine.decision.decide import decide, in_holdout
from arbiter.engine.decision.oracle import LiveOracle
from arbiter.engine.records import DecideRequest, Inputs


def test_holdout_and_variants_follow_the_resolved_id() -> None:
    plan = compile_plan(dsl.load_checked(CASES_DIR / "good" / "splits.rules"))
    customers = [f"c{i}" for i in range(200)]
    held = next(c for c in customers if in_holdout(plan, c))
    free = next(c for c in customers if not in_holdout(plan, c))

    def answer(request_id: str, resolved: str | None) -> tuple[list[str], dict[str, str]]:
        decision, record = decide(
            plan,
            DecideRequest(request_id),
            Inputs(resolved_id=resolved),
            decision_id="d1",
            now=0.0,
            oracle=LiveOracle({}, {}),
        )
        return [a.action for a in decision.actions], record.variants

    assert answer(free, held) == answer(held, None)
    assert answer(held, free) == answer(free, None)
    assert answer(held, None)[0] == ["control_default"]
    assert answer(free, None)[0] != ["control_default"]

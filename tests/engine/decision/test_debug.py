"""A run-time error inside generated code is told at its `.rules` file:line, twice:
in the decision's errors, and in the traceback of the exception (frames rewritten
from the generated module to the rule's line, as Jinja does for templates)."""

from __future__ import annotations

import logging
import traceback
from pathlib import Path

import pytest

from arbiter import dsl, engine
from arbiter.engine import DecideRequest, Inputs
from arbiter.engine.decision.oracle import LiveOracle

RULES = """\
ruleset ratios

profile { orders: int, visits: int }
context { channel: one of [web] }

action browse_more { value 1, channels [web] }
action fallback { value 1, channels [web] }

# visits per order: a customer with no orders divides by zero
when profile.visits / profile.orders > 3
    offer browse_more
default fallback
"""


def test_division_by_zero_is_reported_at_the_rule_line(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "ratios.rules"
    path.write_text(RULES)
    plan = engine.compile_plan(dsl.load_checked(path))
    with caplog.at_level(logging.DEBUG, logger="arbiter.rules"):
        decision, record = engine.decide(
            plan,
            DecideRequest("c1", {"channel": "web"}),
            Inputs(profile={"orders": 0, "visits": 7}),
            decision_id="d1",
            now=1.8e9,
            oracle=LiveOracle({}, {}),
        )
    # The failing rule alone is skipped; the default still answers.
    assert [a.action for a in decision.actions] == ["fallback"]
    assert record.errors == [
        f"{path}:10:1: ZeroDivisionError: division by zero in "
        "`when profile.visits / profile.orders > 3`"
    ]

    (logged,) = [r for r in caplog.records if r.name == "arbiter.rules"]
    assert logged.exc_info is not None
    exc = logged.exc_info[1]
    assert isinstance(exc, ZeroDivisionError)
    text = "".join(traceback.format_exception(exc))
    # The innermost frame is the rule, with its source line from the .rules file;
    # no frame of the generated module is left.
    assert f'File "{path}", line 10, in rule at {path}:10:1' in text
    assert "    when profile.visits / profile.orders > 3\n" in text
    assert "^^^" not in text  # no caret under an unrelated part of the line
    assert plan.filename not in text
    last = traceback.extract_tb(exc.__traceback__)[-1]
    assert (last.filename, last.lineno) == (str(path), 10)


def test_without_debug_logging_the_traceback_is_left_alone(tmp_path: Path) -> None:
    # Rewriting costs a few exec calls; it is done only when someone will read it.
    path = tmp_path / "ratios.rules"
    path.write_text(RULES)
    plan = engine.compile_plan(dsl.load_checked(path))
    logging.getLogger("arbiter.rules").setLevel(logging.INFO)
    try:
        _, record = engine.decide(
            plan,
            DecideRequest("c1", {"channel": "web"}),
            Inputs(profile={"orders": 0, "visits": 7}),
            decision_id="d1",
            now=1.8e9,
            oracle=LiveOracle({}, {}),
        )
    finally:
        logging.getLogger("arbiter.rules").setLevel(logging.NOTSET)
    assert record.errors[0].startswith(f"{path}:10:1: ZeroDivisionError")

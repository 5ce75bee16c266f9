"""Arbiter's pytest plugin: decide, replay and evaluate rulesets in your own tests and CI.

Installing Arbiter registers this module under the ``pytest11`` entry point,
so its fixtures are available in any project that depends on Arbiter, with
no import and no conftest (disable it with ``-p no:arbiter``):

- ``arbiter_ruleset(path)``: a compiled ruleset to decide with, in process,
  from a profile, a context and events (no Redis); ``.profile(...)`` and
  ``.event(...)`` check names against the ruleset's declarations;
  ``.assert_decides(...)`` fails with the fired rules and dropped actions;
- ``arbiter_replay(*logs, rules=...)``: replay decision logs (files,
  ``.gz``, directories); ``.assert_reproduces()`` and
  ``.assert_no_decision_changes(allow=...)`` fail with each record's id, the
  first differing field, and both traces;
- ``arbiter_evaluate(*logs, rules=..., rewards=...)``: off-policy estimates;
  ``.assert_value_not_worse(margin=...)``.

Paths are relative to pytest's root directory. See docs/testing.md.
"""

from __future__ import annotations

import difflib
import hashlib
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

from arbiter import dsl
from arbiter.engine.codegen.compiler import compile_plan
from arbiter.engine.decision.decide import decide
from arbiter.engine.decision.literal_inputs import LiteralEvent, aggregate
from arbiter.engine.decision.oracle import LiveOracle
from arbiter.engine.decision.scenarios import DEFAULT_NOW, ScenarioOracle
from arbiter.engine.log.evaluate import Evaluation, collect, evaluate
from arbiter.engine.log.files import read_records
from arbiter.engine.log.parallel import ReplaySetup, replay_log, split_logs
from arbiter.engine.log.report import to_text
from arbiter.engine.log.whatif import ReplayReport
from arbiter.engine.plan import Plan
from arbiter.engine.records import DecideRequest, Decision, Inputs

__all__ = ["Evaluated", "Replayed", "RulesetUnderTest"]

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")
_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def _seconds(ago: float | str) -> float:
    if isinstance(ago, int | float):
        return float(ago)
    m = _DURATION.match(ago)
    if not m:
        raise ValueError(f"'{ago}' is not a duration like 30s, 15m, 2h, 3d or 1w")
    return float(m.group(1)) * _SECONDS[m.group(2)]


def _unknown(kind: str, name: str, known: Iterable[str]) -> str:
    close = difflib.get_close_matches(name, list(known), n=1)
    hint = f"; did you mean '{close[0]}'?" if close else ""
    return f"no {kind} '{name}' is declared{hint}"


class RulesetUnderTest:
    """A compiled ruleset and what a test needs to decide with it."""

    def __init__(self, plan: Plan, models_dir: Path) -> None:
        self.plan = plan
        self._models_dir = models_dir
        self._models: Any = None

    @property
    def name(self) -> str:
        """The ruleset's name."""
        return self.plan.name

    def profile(self, **attributes: Any) -> dict[str, Any]:
        """A profile; an attribute the ruleset does not declare is an error (a typo)."""
        declared = self.plan.checked.profile
        for key in attributes:
            if key not in declared:
                raise ValueError(_unknown("profile attribute", key, declared))
        return dict(attributes)

    def event(self, type: str, ago: float | str = 0, **properties: float) -> dict[str, Any]:
        """An event ``ago`` before the decision (seconds, or "2h", "3d")."""
        if type not in self.plan.checked.events:
            raise ValueError(_unknown("event", type, self.plan.checked.events))
        return {"type": type, "ago": _seconds(ago), "properties": properties}

    def inputs(
        self,
        profile: Mapping[str, Any] | None = None,
        events: Sequence[Mapping[str, Any]] = (),
        *,
        now: float = DEFAULT_NOW,
        contacts: Mapping[str, int] | None = None,
    ) -> Inputs:
        """What the store would read: the profile, aggregates of ``events``, cap counters."""
        evs = []
        for e in events:
            props = e.get("properties") or {}
            numbers = {k: v for k, v in props.items() if not isinstance(v, str)}
            labels = {k: v for k, v in props.items() if isinstance(v, str)}
            evs.append(LiteralEvent(e["type"], now - _seconds(e.get("ago", 0)), numbers, labels))
        aggregates = {spec.key: aggregate(evs, spec, now) for spec in self.plan.needs.aggregates}
        caps = {a: int((contacts or {}).get(a, 0)) for a, _w in self.plan.needs.capped_actions}
        return Inputs(dict(profile or {}), aggregates, caps, {})

    def decide(
        self,
        profile: Mapping[str, Any] | None = None,
        context: Mapping[str, Any] | None = None,
        *,
        events: Sequence[Mapping[str, Any]] = (),
        customer_id: str = "test-customer",
        now: float = DEFAULT_NOW,
        limit: int = 1,
        scores: Mapping[str, Any] | None = None,
        contacts: Mapping[str, int] | None = None,
    ) -> Decision:
        """One decision, explained. Models run for real unless ``scores`` gives them;
        bandits without a learned state answer uniformly (the draw is seeded)."""
        request = DecideRequest(customer_id, dict(context or {}), limit=limit, explain=True)
        inputs = self.inputs(profile, events, now=now, contacts=contacts)
        oracle: Any
        if scores is not None:
            oracle = ScenarioOracle(scores, self.plan)
        else:
            if self._models is None:
                from arbiter.engine.scoring.loading import load_models

                self._models = load_models(self.plan, self._models_dir)
            oracle = LiveOracle(self._models, {})
        digest = hashlib.blake2b(f"{customer_id}\x1f{now}".encode(), digest_size=8).hexdigest()
        decision, _ = decide(
            self.plan, request, inputs, decision_id=f"pytest-{digest}", now=now, oracle=oracle
        )
        return decision

    def actions(self, *args: Any, **kwargs: Any) -> list[str]:
        """The names of the actions `decide` returns, in order."""
        return [a.action for a in self.decide(*args, **kwargs).actions]

    def assert_decides(self, expected: Sequence[str], *args: Any, **kwargs: Any) -> Decision:
        """`decide` must return exactly ``expected``; the failure shows why it did not."""
        decision = self.decide(*args, **kwargs)
        got = [a.action for a in decision.actions]
        if got != list(expected):
            raise AssertionError(explain_mismatch(list(expected), got, decision))
        return decision


def explain_mismatch(expected: list[str], got: list[str], decision: Decision) -> str:
    """The readable failure of `assert_decides`: what fired, what was dropped."""
    ex = decision.explanation or {}
    lines = [f"expected {expected or 'no action'}, got {got or 'no action'}"]
    fired = ex.get("fired") or []
    lines.append("rules that fired:" if fired else "no rule fired")
    lines += [f"  {f['rule']}: {f['text']}  -> offers {f['offers']}" for f in fired]
    segments = ex.get("segments") or {}
    if segments:
        lines.append("segments: " + ", ".join(f"{k}={v}" for k, v in segments.items()))
    if ex.get("suppressed"):
        lines.append("suppressed: " + ", ".join(ex["suppressed"]))
    if ex.get("holdout"):
        lines.append(f"in holdout {ex['holdout']}")
    for err in ex.get("errors") or []:
        lines.append(f"error: {err}")
    return "\n".join(lines)


class Replayed:
    """A replay's report, with assertions for CI."""

    def __init__(self, report: ReplayReport) -> None:
        self.report = report

    def assert_reproduces(self) -> None:
        """Every record of the rules' own version reproduces exactly."""
        r = self.report
        if r.total - r.skipped == 0:
            raise AssertionError("no decisions replayed (no records of these rules in the logs?)")
        if r.mismatch_count:
            shown = "\n".join(f"  {i}: {d}" for i, d in r.mismatches[:20])
            raise AssertionError(
                f"{r.mismatch_count} of {r.same_version} logged decisions do not reproduce "
                f"under the same ruleset version (first differing field):\n{shown}"
            )

    def assert_no_decision_changes(self, allow: Iterable[str] = ()) -> None:
        """No decision changes, except changes of first action matching ``allow``
        (``"old->new"``, ``*`` for any, ``(nothing)`` for no action)."""
        if self.report.mismatch_count:
            self.assert_reproduces()
        unexpected = self.report.unexpected(allow)
        if unexpected:
            kinds = ", ".join(f"{k} ({n})" for k, n in sorted(unexpected.items()))
            raise AssertionError(
                f"{sum(unexpected.values())} decisions changed unexpectedly: {kinds}\n\n"
                + to_text(self.report)
            )


class Evaluated:
    """An off-policy evaluation, with an assertion for CI."""

    def __init__(self, result: Evaluation) -> None:
        self.result = result

    def estimate(self, name: str = "DR") -> Any:
        """One estimator's `Estimate` (IPS, SNIPS or DR)."""
        return next(e for e in self.result.estimates if e.name == name)

    def assert_value_not_worse(self, margin: float = 0.0, estimator: str = "DR") -> None:
        """Fail when the candidate is shown worse than the logged policy by more than
        ``margin``: the upper end of its 95% interval below the logged mean minus ``margin``."""
        e = self.estimate(estimator)
        floor = self.result.logged_value - margin
        if e.high < floor:
            raise AssertionError(
                f"{estimator} estimate of the candidate {e.value:.4f} "
                f"[{e.low:.4f}, {e.high:.4f}] is below the logged policy's "
                f"{self.result.logged_value:.4f} - margin {margin} = {floor:.4f} "
                f"over {self.result.rounds} decisions (effective sample size {e.ess:.0f})"
            )


def _path(root: Path, p: str | Path) -> Path:
    path = Path(p)
    return path if path.is_absolute() else root / path


def _rules_files(path: Path) -> list[Path]:
    if path.is_dir():
        return sorted(path.rglob("*.rules"))
    return [path]


@pytest.fixture
def arbiter_ruleset(request: pytest.FixtureRequest) -> Callable[..., RulesetUnderTest]:
    """Factory: ``arbiter_ruleset("rulesets/shop.rules")`` or ``(text=..., path=...)``."""
    root = Path(str(request.config.rootpath))

    def load(path: str | Path, text: str | None = None) -> RulesetUnderTest:
        full = _path(root, path)
        plan = compile_plan(dsl.load_checked(full, text))
        return RulesetUnderTest(plan, full.parent)

    return load


@pytest.fixture
def arbiter_replay(request: pytest.FixtureRequest) -> Callable[..., Replayed]:
    """Factory: ``arbiter_replay("logs/", rules="rulesets/", baseline=None, jobs=1)``."""
    root = Path(str(request.config.rootpath))

    def run(
        *logs: str | Path,
        rules: str | Path,
        baseline: str | Path | None = None,
        jobs: int = 1,
    ) -> Replayed:
        rule_files = tuple(str(p) for p in _rules_files(_path(root, rules)))
        base = () if baseline is None else _rules_files(_path(root, baseline))
        setup = ReplaySetup(rule_files, tuple(str(p) for p in base))
        pieces = split_logs([_path(root, p) for p in logs], jobs=jobs)
        return Replayed(replay_log(setup, pieces, jobs=jobs))

    return run


@pytest.fixture
def arbiter_evaluate(request: pytest.FixtureRequest) -> Callable[..., Evaluated]:
    """Factory: ``arbiter_evaluate("logs/", rules=..., rewards="rewards.jsonl")``."""
    root = Path(str(request.config.rootpath))

    def run(
        *logs: str | Path,
        rules: str | Path,
        rewards: str | Path | Mapping[tuple[str, str], float],
        resamples: int = 1000,
        seed: int = 0,
        clip: float | None = None,
    ) -> Evaluated:
        from arbiter.engine.scoring.loading import load_models
        from arbiter.server.cli.evaluate import read_rewards

        plans, models = {}, {}
        for f in _rules_files(_path(root, rules)):
            plan = compile_plan(dsl.load_checked(f))
            plans[plan.name] = plan
            models[plan.name] = load_models(plan, f.parent)
        given = (
            rewards if isinstance(rewards, Mapping) else read_rewards([str(_path(root, rewards))])
        )
        records = read_records([_path(root, p) for p in logs])
        rounds, counts = collect(plans, records, given, models=models)
        return Evaluated(evaluate(rounds, counts, clip=clip, resamples=resamples, seed=seed))

    return run

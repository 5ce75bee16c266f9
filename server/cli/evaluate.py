"""`arbiter evaluate LOG... --rules NEW --rewards R`: off-policy value of a candidate ruleset."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import msgspec

from arbiter.dsl.errors import ArbiterError
from arbiter.server.cli.common import compile_rules, redis_url, rule_paths

__all__ = ["add_evaluate_parser", "cmd_evaluate", "read_rewards"]

_REDIS = ("redis://", "rediss://", "unix://", "redis+cluster://", "rediss+cluster://")


class RewardsError(ArbiterError):
    """A rewards file line that is not `{decision_id, action, reward}`."""

    code = "bad-rewards"


class _Reward(msgspec.Struct):
    decision_id: str
    action: str
    reward: float


_REWARD = msgspec.json.Decoder(_Reward)


def read_rewards(sources: list[str]) -> dict[tuple[str, str], float]:
    """Rewards by (decision id, action): JSON-lines files, or the Redis reward stream.

    Several rewards for one decision and action add up (a click, then a purchase).
    """
    out: dict[tuple[str, str], float] = {}
    for source in sources:
        for decision_id, action, reward in _rewards_of(source):
            key = (decision_id, action)
            out[key] = out.get(key, 0.0) + reward
    return out


def _rewards_of(source: str) -> Iterator[tuple[str, str, float]]:
    if source.startswith(_REDIS):
        from arbiter.engine.store import keys
        from arbiter.engine.store.client import connect_sync

        client = connect_sync(source)
        try:
            start = "-"
            while True:
                batch: Any = client.xrange(keys.REWARD_STREAM, min=start, max="+", count=1000)
                if not batch:
                    return
                for _id, f in batch:
                    yield f[b"decision_id"].decode(), f[b"action"].decode(), float(f[b"reward"])
                start = "(" + batch[-1][0].decode()
        finally:
            client.close()
    path = Path(source)
    if not path.is_file():
        raise RewardsError(f"{source}: no such rewards file")
    with path.open("rb") as fh:
        for number, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                r = _REWARD.decode(line)
            except msgspec.DecodeError as exc:
                raise RewardsError(
                    f"{source}:{number}: expected {{decision_id, action, reward}}: {exc}"
                ) from None
            yield r.decision_id, r.action, r.reward


def _estimate_json(e: Any) -> dict[str, Any]:
    return {
        "name": e.name, "value": e.value, "low": e.low, "high": e.high,
        "ess": e.ess, "max_weight": e.max_weight,
    }  # fmt: skip


def cmd_evaluate(args: argparse.Namespace) -> int:
    """Estimate the candidate rules' average reward from a log and its rewards."""
    from tqdm import tqdm

    from arbiter.engine.log.evaluate import evaluate
    from arbiter.engine.log.evaluate_jobs import EvaluatePool, EvaluateSetup
    from arbiter.engine.log.parallel import Task, chunks_from_stream, split_logs
    from arbiter.engine.store import keys
    from arbiter.engine.store.client import connect_sync

    rules = tuple(str(p) for p in rule_paths([args.rules]))
    for path in rules:
        compile_rules(Path(path))  # report rules errors here, once, not from every worker
    setup = EvaluateSetup(rules, read_rewards(args.rewards), args.missing)
    embedded = client = None
    try:
        urls = [s for s in args.source if s.startswith(_REDIS)]
        tasks: Iterable[Task]
        if args.source and not urls:
            tasks = split_logs(args.source, jobs=args.jobs)  # each worker reads its pieces
            total = None
        else:
            url = urls[0] if urls else None
            if url is None:
                url, embedded = redis_url()
            client = connect_sync(url)
            tasks = chunks_from_stream(client, keys.DECISION_STREAM)
            total = client.xlen(keys.DECISION_STREAM)
        # The pool before the bar: workers are forked before the bar starts its thread.
        with EvaluatePool(setup, args.jobs) as pool:
            with tqdm(
                total=total, unit="rec", desc="evaluate", disable=args.quiet or None,
                file=sys.stderr,
            ) as bar:  # fmt: skip
                rounds, counts, notes = pool.collect(tasks, progress=bar.update)
            for note in notes:
                print(f"arbiter: warning: {note}", file=sys.stderr)
            result = evaluate(
                rounds, counts, clip=args.clip, resamples=args.resamples, seed=args.seed,
                folds=args.folds, resampler=pool.bootstrap,
            )  # fmt: skip
    finally:
        if client is not None:
            client.close()
        if embedded is not None:
            embedded.stop()
    if args.format == "json":
        body = {
            "decisions": result.rounds,
            "missing_rewards": result.missing_rewards,
            "dropped": result.dropped,
            "skipped": result.skipped,
            "clip": args.clip,
            "logged": {
                "value": result.logged_value, "low": result.logged_low, "high": result.logged_high,
            },
            "estimates": [_estimate_json(e) for e in result.estimates],
            "uniform_baseline": [_estimate_json(e) for e in result.uniform],
            "unsupported": {
                "decisions": result.unsupported_rounds,
                "mean_probability": result.unsupported_mass,
                "actions": dict(result.unsupported_actions),
            },
            "bandit_fallbacks": result.bandit_fallbacks,
        }  # fmt: skip
        print(json.dumps(body, indent=2))
        return 0
    print(f"evaluated {result.rounds} decisions of the log against {args.rules}")
    if result.missing_rewards:
        how = "dropped" if args.missing == "drop" else "counted as reward 0"
        print(f"  {result.missing_rewards} decisions had no reward ({how})")
    if result.skipped:
        print(f"  {result.skipped} records skipped (their ruleset is not in {args.rules})")
    print()
    print(f"  {'estimator':<26}{'value':>10}{'95% interval':>24}{'ESS':>10}{'max w':>9}")
    lo, hi = result.logged_low, result.logged_high
    print(
        f"  {'logged policy (observed)':<26}{result.logged_value:>10.4f}{f'[{lo:.4f}, {hi:.4f}]':>24}"
    )
    for label, rows in (("candidate", result.estimates), ("uniform random", result.uniform)):
        for e in rows:
            interval = f"[{e.low:.4f}, {e.high:.4f}]"
            name = f"{e.name} ({label})"
            print(f"  {name:<26}{e.value:>10.4f}{interval:>24}{e.ess:>10.0f}{e.max_weight:>9.3g}")
    if result.unsupported_rounds:
        acts = ", ".join(f"{a} ({n})" for a, n in result.unsupported_actions.most_common(8))
        print(
            f"\nWARNING: no support: in {result.unsupported_rounds} decisions the candidate puts "
            f"probability (on average {result.unsupported_mass:.3f} per decision) on actions the "
            f"logging policy never gave a chance: {acts}. IPS and SNIPS cannot see that value; DR "
            "relies on its reward model there."
        )
    if result.bandit_fallbacks:
        print(
            f"WARNING: {result.bandit_fallbacks} bandit draws had no logged pmf for the "
            "candidate's arms and were taken as uniform."
        )
    return 0


def add_evaluate_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """The `evaluate` verb."""
    p = sub.add_parser("evaluate", help="off-policy estimates of a candidate ruleset's reward")
    p.add_argument("source", nargs="*", default=[], help="log files or directories, or a Redis URL")
    p.add_argument("--rules", required=True, help="the candidate rules")
    p.add_argument(
        "--rewards",
        action="append",
        required=True,
        help="JSON lines {decision_id, action, reward}, or a Redis URL (its reward stream)",
    )
    p.add_argument(
        "--missing",
        choices=["zero", "drop"],
        default="zero",
        help="a decision without reward: reward 0 (default) or left out",
    )
    p.add_argument("--clip", type=float, default=None, help="clip importance weights at this")
    p.add_argument("--resamples", type=int, default=1000, help="bootstrap resamples")
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    p.add_argument("--folds", type=int, default=5, help="cross-fitting folds of the reward model")
    p.add_argument(
        "--jobs",
        "-j",
        type=int,
        default=1,
        help="worker processes (reading the log and bootstrapping; same numbers for any N)",
    )
    p.add_argument("--format", choices=["text", "json"], default="text")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_evaluate)

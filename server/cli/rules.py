"""The `arbiter` commands that work on rules files alone: check, test, fmt."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from arbiter import dsl
from arbiter.server.cli.common import compile_rules, rule_paths

__all__ = ["cmd_check", "cmd_fmt", "cmd_test"]


# ------------------------------------------------------------------- check


def cmd_check(args: argparse.Namespace) -> int:
    """Check files; print diagnostics; exit 1 on errors."""
    from arbiter.engine.scoring.loading import check_models

    failed = False
    report: list[dict[str, Any]] = []
    for path in rule_paths(args.paths):
        diags: list[dsl.Diagnostic] = []
        sources: dict[str, str] = {}
        try:
            ruleset, sources = dsl.load(path)
            checked = dsl.check(ruleset, sources)
            diags.extend(checked.warnings)
            diags.extend(check_models(checked, path.parent))
        except dsl.RulesError as exc:
            diags.extend(exc.diagnostics)
            sources = sources or exc.sources
        errors = [d for d in diags if d.severity == "error"]
        failed |= bool(errors)
        if args.format == "json":
            report.append(
                {"file": str(path), "ok": not errors, "diagnostics": [d.to_json() for d in diags]}
            )
            continue
        for d in diags:
            print(d.format(sources.get(d.span.file)))
        warnings = len(diags) - len(errors)
        status = "FAILED" if errors else "ok"
        print(f"{path}: {status} ({len(errors)} errors, {warnings} warnings)")
    if args.format == "json":
        print(json.dumps(report, indent=2))
    return 1 if failed else 0


# -------------------------------------------------------------------- test


def cmd_test(args: argparse.Namespace) -> int:
    """Run the scenario blocks of rules files, like pytest."""
    from arbiter.engine.decision.scenarios import format_report, run_scenarios

    results = []
    for path in rule_paths(args.paths):
        try:
            plan = compile_rules(path)
        except dsl.RulesError as exc:
            print(exc.format())
            return 1
        results.extend(run_scenarios(plan))
    print(format_report(results))
    return 0 if all(r.passed for r in results) else 1


# --------------------------------------------------------------------- fmt


def cmd_fmt(args: argparse.Namespace) -> int:
    """Print (or write, or check) the canonical form of rules files."""
    from arbiter.dsl.formatter import format_ruleset

    changed = False
    for path in rule_paths(args.paths):
        text = path.read_text(encoding="utf-8")
        try:
            formatted = format_ruleset(dsl.parse(text, str(path)))
        except dsl.RulesError as exc:
            print(exc.format(), file=sys.stderr)
            return 1
        if formatted == text:
            continue
        changed = True
        if args.write:
            path.write_text(formatted, encoding="utf-8")
            print(f"reformatted {path}")
        elif args.check:
            print(f"would reformat {path}")
        else:
            sys.stdout.write(formatted)
    return 1 if (args.check and changed) else 0

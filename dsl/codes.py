"""Every diagnostic code the front end can emit, with its severity and a one-line summary.

Codes are a stable contract: the CLI, the HTTP admin API and editors match on
them, so a code is never renamed or reused for something else. The checker
refuses to emit a code that is not listed here, the tests hold one bad file
per code (`tests/cases/bad/<code>.rules`), and docs/language.md lists them.
"""

from __future__ import annotations

from dataclasses import dataclass

from arbiter.dsl.errors import Severity


@dataclass(frozen=True, slots=True)
class Code:
    severity: Severity
    summary: str


CODES: dict[str, Code] = {
    # -- syntax (dsl/parser.py, dsl/syntax_errors.py)
    "syntax": Code("error", "the text does not follow the grammar"),
    "missing-ruleset": Code("error", "the file does not start with `ruleset <name>`"),
    "missing-offer": Code("error", "a `when` condition is not followed by `offer <action>`"),
    "double-equals": Code("error", "`=` used where a comparison `==` was meant"),
    "single-quote": Code("error", "a string in single quotes; strings use double quotes"),
    "logical-operator": Code("error", "`&&`, `||` or `!` instead of `and`, `or`, `not`"),
    "unclosed-brace": Code("error", "a `{` without its matching `}`"),
    "missing-unit": Code("error", "a duration without a unit (`24` instead of `24h`)"),
    "missing-comma": Code("error", "two entries of a `{ … }` value without a comma between"),
    "unknown-statement": Code("error", "a line that does not start a declaration"),
    "ambiguous-unit": Code("error", "a duration in `m`, which could mean minutes or months"),
    "month-not-fixed": Code(
        "error", "a month where a fixed length is needed (a trigger's delay, a reward window)"
    ),
    "month-as-days": Code(
        "warning", "a month compared with or added to a length is 30 days, not a calendar month"
    ),
    # -- literals (dsl/parser.py)
    "invalid-date": Code("error", "a date that does not exist, such as 2026-02-30"),
    "invalid-date-range": Code("error", "a `valid A .. B` range that ends before it starts"),
    "duplicate-property": Code("error", "an action property given twice"),
    "unknown-property": Code(
        "error", "an action property that is neither built in nor a declared attribute"
    ),
    # -- nesting (dsl/parser.py; engine/compiler.py for what Python itself cannot compile)
    "too-complex": Code("error", "expressions or blocks nested too deeply to compile"),
    # -- files (dsl/loader.py)
    "file-not-found": Code("error", "a file or an included file cannot be read"),
    "include-cycle": Code("error", "a file includes itself, directly or indirectly"),
    # -- declarations
    "duplicate-name": Code("error", "two declarations of the same kind share a name"),
    "duplicate-field": Code("error", "a profile, context or event field declared twice"),
    "duplicate-arbitrate": Code("error", "more than one `arbitrate`"),
    "duplicate-holdout": Code("error", "more than one `holdout`"),
    "duplicate-default": Code("error", "more than one `default`"),
    "reserved-name": Code("error", "a declaration named like a built-in name"),
    "unknown-type": Code("error", "a field type that does not exist"),
    "segment-cycle": Code("error", "segments that refer to each other in a loop"),
    # -- names and types
    "unknown-name": Code("error", "a name that is not declared"),
    "unknown-field": Code("error", "a profile, context or event field that is not declared"),
    "unknown-action": Code("error", "an action that is not declared"),
    "unknown-event": Code("error", "an event type that is not declared"),
    "unknown-model": Code("error", "a model that is not declared"),
    "unknown-member": Code("error", "a value that is not one of an enum's members"),
    "unknown-channel": Code("error", "an action channel that context.channel cannot take"),
    "unknown-function": Code("error", "a function that does not exist"),
    "unknown-exploration": Code("error", "a bandit exploration policy that does not exist"),
    "wrong-arity": Code("error", "a function called with the wrong number of arguments"),
    "type-mismatch": Code("error", "an operation on values of the wrong types"),
    "literal-type": Code("error", "a literal of the wrong type, such as a number in quotes"),
    "misplaced-name": Code("error", "a name used where it has no meaning"),
    "missing-property": Code("error", "sum/min/max/avg/distinct() without an event property"),
    "bad-regex": Code("error", "a `matches` pattern that is not a valid regular expression"),
    # -- limits and literals with rules of their own
    "bad-window": Code("error", "an event window of zero length"),
    "bad-cap": Code("error", "a contact cap of zero contacts or over a zero-length window"),
    "bad-fatigue": Code("error", "a `suppress after` of zero rejections or zero-length windows"),
    "bad-rate": Code("error", "an exploration rate out of range"),
    "bad-limit": Code("error", "`top` or `max … per tag` below 1"),
    "bad-percent": Code("error", "holdout or experiment shares that do not add up"),
    "bad-weight": Code("error", "a negative rule weight"),
    "bandit-arms": Code("error", "a bandit with fewer than two arms"),
    # -- scenarios
    "missing-expect": Code("error", "a scenario without `expect`"),
    "scenario-value": Code("error", "a scenario value that does not fit its declared type"),
    "no-holdout": Code("error", "a scenario `in holdout` in a ruleset without `holdout`"),
    # -- warnings
    "unused-segment": Code("warning", "a segment nothing uses"),
    "unused-model": Code("warning", "a model nothing uses"),
    "unused-event": Code("warning", "an event type no aggregate reads"),
    "unused-field": Code("warning", "a profile or context field no rule reads"),
    "unused-experiment": Code("warning", "an experiment no rule reads"),
    "unused-action": Code("warning", "an action no rule offers"),
    "undeclared-event": Code("warning", "an event read without an `event` declaration"),
    "unreachable-rule": Code("warning", "a rule whose condition can never be true"),
    "shadowed-rule": Code("warning", "a rule that repeats an earlier one"),
    "unofferable-action": Code("warning", "an action every path to which is blocked"),
    # -- the cap on how many diagnostics are shown
    "too-many-errors": Code("error", "more errors than are shown; fix these and check again"),
}

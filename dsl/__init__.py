"""The `.rules` language front end: text → AST → checked ruleset.

    ruleset = dsl.parse(text, "retail.rules")
    checked = dsl.check(ruleset)

Knows nothing of Redis, HTTP or models.
"""

from arbiter.dsl.checked import CheckedRuleset
from arbiter.dsl.checker import check
from arbiter.dsl.errors import ArbiterError, Diagnostic, RulesError
from arbiter.dsl.formatter import format_ruleset
from arbiter.dsl.loader import load, load_checked
from arbiter.dsl.parser import parse, parse_file

__all__ = [
    "ArbiterError",
    "CheckedRuleset",
    "Diagnostic",
    "RulesError",
    "check",
    "format_ruleset",
    "load",
    "load_checked",
    "parse",
    "parse_file",
]

"""The `.rules` language front end: text → AST → checked ruleset.

    ruleset = dsl.parse(text, "retail.rules")
    checked = dsl.check(ruleset)

Knows nothing of Redis, HTTP or models.
"""

from dsl.checker import CheckedRuleset, check
from dsl.errors import Diagnostic, RulesError
from dsl.formatter import format_ruleset
from dsl.loader import load, load_checked
from dsl.parser import parse, parse_file

__all__ = [
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

"""Reserved words: names a segment, model, action, bandit or experiment may not take.

A segment called `true` made `when true and …` read the literal, and one called
`not` or `count` broke unrelated lines; so every keyword of the grammar, the
literals, the aggregate and function names and the formula's own names are
reserved. `tests/dsl/test_reserved.py` keeps `KEYWORDS` equal to the grammar's.
"""

from __future__ import annotations

from arbiter.dsl.types import BUILTINS

#: Every word the grammar spells out (`grammar.lark`'s string terminals).
KEYWORDS = frozenset(
    {
        "action", "after", "ago", "and", "arbitrate", "attributes", "bandit", "between",
        "by", "cap", "decide", "channel", "channels", "contact", "contacts", "consent", "contains", "context", "customer", "default",
        "else", "ends", "event", "events", "expect", "experiment", "experiments", "explore",
        "false", "features", "for", "goal", "holdout", "if", "in", "include", "inputs", "is",
        "last_seen", "matches", "max", "missing", "model", "not", "nothing", "now", "null",
        "of", "offer", "on", "one", "onnx", "or", "over", "payload", "per", "policy", "present", "priority",
        "profile", "rejections", "requires", "reward", "ruleset", "scenario", "scores",
        "segment", "set", "starts", "suppress", "tag", "tags", "top", "trigger", "true", "unless", "valid",
        "value", "weight", "when", "with", "within",
    }
)  # fmt: skip

#: Event aggregates (a terminal of their own in the grammar).
AGGREGATES = frozenset({"count", "sum", "min", "max", "avg", "distinct"})

#: Literal words: a declaration named like one would be read as the literal.
LITERALS = frozenset({"true", "false", "missing", "now", "null"})

#: All reserved names.
RESERVED = KEYWORDS | AGGREGATES | LITERALS | frozenset(BUILTINS)


def reason(name: str) -> str:
    """Why `name` is reserved, in a marketer's words."""
    if name in LITERALS:
        return f"'{name}' is a literal of the language"
    if name in AGGREGATES or name in BUILTINS:
        return f"'{name}' is a built-in function"
    if name in KEYWORDS and name not in ("value", "weight", "priority"):
        return f"'{name}' is a keyword of the language"
    return f"'{name}' is a built-in name"

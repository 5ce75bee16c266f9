"""Redis key names, in one place.

Every key about one customer carries the hash tag `{<customer_id>}` so that all
of a decision's reads land on one Redis Cluster shard and go in one pipeline.
Keys shared by all customers (streams, ruleset versions, bandit models) are
global and few.
"""

from __future__ import annotations

PREFIX = "arb"


def _tag(customer_id: str) -> str:
    # Braces inside an id would move the hash tag; escape them, and escape the
    # escape character first so that "a{b" and "a%7Bb" stay two customers.
    safe = customer_id.replace("%", "%25").replace("{", "%7B").replace("}", "%7D")
    return f"{PREFIX}:{{{safe}}}"


def profile(customer_id: str) -> str:
    """Hash: attribute name -> JSON-encoded value."""
    return f"{_tag(customer_id)}:p"


def hourly_buckets(customer_id: str, day: int) -> str:
    """Hash of one day's hourly event buckets (see engine.windows)."""
    return f"{_tag(customer_id)}:eh:{day}"


def daily_buckets(customer_id: str, block: int) -> str:
    """Hash of one 32-day block's daily event buckets (see engine.windows)."""
    return f"{_tag(customer_id)}:ed:{block}"


def last_seen(customer_id: str) -> str:
    """Hash: event type -> epoch seconds of the newest event."""
    return f"{_tag(customer_id)}:seen"


def event_ids(customer_id: str) -> str:
    """Sorted set of event ids already counted (score = arrival time), for de-duplication."""
    return f"{_tag(customer_id)}:eids"


def contacts(customer_id: str, action: str) -> str:
    """Sorted set of contact times of one action (contact caps)."""
    return f"{_tag(customer_id)}:cap:{action}"


def rejections(customer_id: str, action: str) -> str:
    """Sorted set of negative-outcome times of one action (fatigue)."""
    return f"{_tag(customer_id)}:rej:{action}"


def decision_index(customer_id: str) -> str:
    """List of decision-log stream ids of this customer, so erasure can delete them."""
    return f"{_tag(customer_id)}:dlog"


def customer_pattern(customer_id: str) -> str:
    """SCAN pattern matching every key of one customer (and no other customer's)."""
    # Glob metacharacters in an id must match themselves; the backslash first.
    tag = _tag(customer_id)
    for ch in "\\[]*?":
        tag = tag.replace(ch, "\\" + ch)
    return tag + ":*"


def decision(decision_id: str) -> str:
    """A decision's record kept for joining feedback to it (expires)."""
    return f"{PREFIX}:d:{decision_id}"


def feedback_seen(decision_id: str, action: str) -> str:
    """Set-if-absent marker that makes the same feedback count once."""
    return f"{PREFIX}:fb:{decision_id}:{action}"


DECISION_STREAM = f"{PREFIX}:decisions"
REWARD_STREAM = f"{PREFIX}:rewards"


def ruleset_versions(name: str) -> str:
    """List of stored `.rules` texts of a ruleset, newest last."""
    return f"{PREFIX}:rules:{name}"


def ruleset_live(name: str) -> str:
    """Index into `ruleset_versions` of the live version."""
    return f"{PREFIX}:rules:{name}:live"


RULESET_NAMES = f"{PREFIX}:rulesets"


def ruleset_meta(name: str) -> str:
    """Hash: version number -> JSON `{at, author}` of when and by whom it was published."""
    return f"{PREFIX}:rules:{name}:meta"

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
    if "%" in customer_id or "{" in customer_id or "}" in customer_id:
        customer_id = customer_id.replace("%", "%25").replace("{", "%7B").replace("}", "%7D")
    return f"{PREFIX}:{{{customer_id}}}"


def tag(customer_id: str) -> str:
    """The prefix of every key of one customer; `tag(c) + suffix` is that key (hot paths)."""
    return _tag(customer_id)


# Suffixes after `tag(c)` of the keys a decision reads (see the functions below).
PROFILE_SUFFIX = ":p"
WINDOWS_SUFFIX = ":w"
HISTORY_SUFFIX = ":ch"
ALIAS_SUFFIX = ":alias"


def profile(customer_id: str) -> str:
    """Hash: attribute name -> JSON-encoded value."""
    return _tag(customer_id) + PROFILE_SUFFIX


def windows(customer_id: str) -> str:
    """Hash of the customer's event buckets, one field per series (see engine.store.series)."""
    return _tag(customer_id) + WINDOWS_SUFFIX


# Window layout 2 kept last-seen times in a hash of their own; layout 3 keeps them in the
# window hash (`windows.LAST_SEEN_FIELD`). Only `arbiter migrate`
# (engine.store.last_seen_migration) and the identity merge of unconverted ids read it.
LAST_SEEN_SUFFIX = ":seen"


def last_seen(customer_id: str) -> str:
    """Window layout 2: hash of event type -> epoch seconds of the newest event."""
    return _tag(customer_id) + LAST_SEEN_SUFFIX


def event_ids(customer_id: str) -> str:
    """Sorted set of event ids already counted (score = arrival time), for de-duplication."""
    return f"{_tag(customer_id)}:eids"


def contact_history(customer_id: str) -> str:
    """Hash of contact-cap and rejection records, one field per counter (see
    engine.store.contact_history)."""
    return _tag(customer_id) + HISTORY_SUFFIX


# Layout 1 of the contact history, a sorted set per counter: only `arbiter migrate`
# (engine.store.window_migration) and the identity merge of unconverted ids read them.
LEGACY_CONTACTS = ":cap:"
LEGACY_REJECTIONS = ":rej:"


def contacts(customer_id: str, action: str) -> str:
    """Layout 1: sorted set of contact times of one counter (contact caps)."""
    return _tag(customer_id) + LEGACY_CONTACTS + action


def rejections(customer_id: str, action: str) -> str:
    """Layout 1: sorted set of negative-outcome times of one action (fatigue)."""
    return _tag(customer_id) + LEGACY_REJECTIONS + action


def decision_index(customer_id: str) -> str:
    """List of decision-log stream ids of this customer, so erasure can delete them."""
    return f"{_tag(customer_id)}:dlog"


def alias(customer_id: str) -> str:
    """String: the customer id this (anonymous) id is linked to, in the anonymous id's slot."""
    return _tag(customer_id) + ALIAS_SUFFIX


def linked_ids(customer_id: str) -> str:
    """Set of the anonymous ids linked to this customer (erasure follows it)."""
    return f"{_tag(customer_id)}:linked"


def merge_marks(customer_id: str, anonymous_id: str) -> str:
    """Set of the anonymous id's keys already added into this customer's (no double counting)."""
    return f"{_tag(customer_id)}:merged:{anonymous_id}"


def rekey(key: str, from_id: str, to_id: str) -> str:
    """The name `key` of `from_id`'s would have as a key of `to_id` (same kind, other customer)."""
    tag = _tag(from_id)
    if not key.startswith(tag + ":"):
        raise ValueError(f"{key!r} is not a key of {from_id!r}")
    return _tag(to_id) + key[len(tag) :]


def exposures(customer_id: str) -> str:
    """Sorted set of open reward exposures (score = the attribution window's end), see
    engine.learning.attribution."""
    return f"{_tag(customer_id)}:exp"


def triggers(customer_id: str) -> str:
    """Sorted set of this customer's scheduled trigger firings (score = due time), so that
    erasure cancels them (engine.triggers)."""
    return f"{_tag(customer_id)}:trig"


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


DECISION_STREAM = f"{PREFIX}:decisions"
#: The id of the zstd dictionary the decision log compresses records with (engine.store.compression).
LOG_DICTIONARY = f"{PREFIX}:log:dict"


def log_dictionary(dictionary_id: int) -> str:
    """A zstd dictionary of the decision log, by id (kept: records name it)."""
    return f"{PREFIX}:log:dict:{dictionary_id}"


INTAKE_DEAD_LETTERS = f"{PREFIX}:in:dead"


def intake_stream(shard: int) -> str:
    """One shard of the event intake stream; each has its own hash tag, to spread over nodes."""
    return f"{PREFIX}:in:{{in{shard}}}"


REWARD_STREAM = f"{PREFIX}:rewards"
#: Events of the types some ruleset rewards or measures (bandit rewards, experiment goals).
OUTCOME_STREAM = f"{PREFIX}:outcomes"
#: Set of those event types, kept by servers so that `arbiter ingest` knows them too.
OUTCOME_TYPES = f"{PREFIX}:outcomes:types"
#: Sorted set of every open exposure (score = window end), for closing windows with reward 0.
EXPOSURES_DUE = f"{PREFIX}:exposures:due"
#: Hash: exposure -> when a closer first deferred it (waiting for an unhandled event).
EXPOSURES_DEFERRED = f"{PREFIX}:exposures:deferred"


def feedback_seen(decision_id: str, action: str) -> str:
    """Marker that makes the same feedback count once; holds the reward accepted.

    Set in one script with the reward's stream entry, so its hash tag is the
    reward stream's name: on Redis Cluster both keys are in one slot.
    """
    return f"{{{REWARD_STREAM}}}:fb:{decision_id}:{action}"


def ruleset_versions(name: str) -> str:
    """List of stored `.rules` texts of a ruleset, newest last."""
    return f"{PREFIX}:rules:{name}"


def ruleset_live(name: str) -> str:
    """Index into `ruleset_versions` of the live version."""
    return f"{PREFIX}:rules:{name}:live"


RULESET_NAMES = f"{PREFIX}:rulesets"

# Triggers (engine.triggers). The schedule is split into shards, each under a
# hash tag of its own, so that on a Redis Cluster the claims spread over the
# nodes; a shard's due and in-flight sets share its tag (one claim script, one
# slot). Shard 0 keeps the `{triggers}` tag of the outbound stream.


def _trigger_tag(shard: int) -> str:
    return "{triggers}" if shard == 0 else f"{{triggers:{shard}}}"


def triggers_due(shard: int = 0) -> str:
    """Sorted set of a schedule shard's firings (score = due time)."""
    return f"{PREFIX}:{_trigger_tag(shard)}:due"


def triggers_inflight(shard: int = 0) -> str:
    """Sorted set of a schedule shard's claimed firings (score = lease end)."""
    return f"{PREFIX}:{_trigger_tag(shard)}:inflight"


TRIGGERS_DUE = triggers_due(0)
TRIGGERS_INFLIGHT = triggers_inflight(0)
#: The outbound stream the email/SMS system reads triggered decisions from.
TRIGGER_STREAM = f"{PREFIX}:{{triggers}}:out"
#: Triggered decisions the webhook gave up on (engine.triggers.webhook).
TRIGGER_DEAD = f"{PREFIX}:{{triggers}}:dead"


def trigger_fired(fire_id: str) -> str:
    """Set-if-absent marker: this firing was published (so it is published once)."""
    return f"{PREFIX}:{{triggers}}:f:{fire_id}"


def ruleset_meta(name: str) -> str:
    """Hash: version number -> JSON `{at, author}` of when and by whom it was published."""
    return f"{PREFIX}:rules:{name}:meta"

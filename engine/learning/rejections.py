"""A rejected offer (reward ≤ 0) counted against the customer's fatigue, as raw commands.

The same script and arguments as `engine.store.profiles.ProfileStore.record_rejection`
with ``once_as`` (so a retried rejection is counted once), built as ``EVALSHA``
commands that the feedback route sends in one batch with `engine.store.raw_commands`
(one round trip for every fatigue counter the rejection touches, no
redis-py command objects, the script loaded only on NOSCRIPT).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Final

from arbiter.engine.store import contact_history, keys
from arbiter.engine.store.scripts import script_sha

__all__ = ["SCRIPTS", "rejection_commands"]

_SHA: Final = script_sha(contact_history.RECORD_REJECTION_LUA)
#: The script the commands call, for `raw_commands.send_scripted`.
SCRIPTS: Final = {_SHA: contact_history.RECORD_REJECTION_LUA}


def rejection_commands(
    customer_id: str, targets: Iterable[tuple[str, int]], now: float, *, once_as: str
) -> list[tuple[Any, ...]]:
    """One ``EVALSHA`` per (counter name, seconds kept) in ``targets``, on the customer's
    contact history, each counted once per ``once_as`` however often it is sent.
    """
    history = keys.contact_history(customer_id)
    record = contact_history.record_id(once_as)
    return [
        (
            "EVALSHA",
            _SHA,
            1,
            history,
            contact_history.rejection_field(name),
            repr(now),
            record,
            repr(now - keep),
            keep + 60,
        )
        for name, keep in targets
    ]

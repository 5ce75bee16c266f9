"""`arbiter ingest FILE.jsonl`: behavioural events from a JSON-lines file into Redis.

One event per line, the shape `POST /v1/events` takes:

    {"customer_id": "c42", "type": "purchase", "ts": "2026-11-20T18:04:00Z",
     "event_id": "o-991", "properties": {"amount": 59.9}}

`ts` (epoch seconds or ISO-8601; default: the time of ingestion), `event_id`
and `properties` are optional. Lines are checked as the HTTP API checks them,
plus two things a file gets wrong more often than a program does: unknown
fields (a `timestamp` meant as `ts` would otherwise silently mean "now") and
property names that are not plain names. With `--rules`, properties are also
checked against the event declarations of those rules, and events schedule
those rules' triggers (engine.triggers). Events of the types servers
registered as rewards or goals also go to the outcome stream.

Invalid lines. By default the whole file is checked first and, if any line is
invalid, nothing is written: the errors are listed (`file:line: field:
problem`) and the command exits 1, so a fixed file can simply be run again.
`--skip-invalid` writes the valid lines in one pass and reports the invalid
ones. Re-running a file is safe for events with an `event_id` (counted once
within `engine.store.windows.EVENT_ID_TTL` of their first arrival); events without
one would be counted again.

Events go through `ProfileStore.add_events` in batches (`--batch`, one
pipeline each), the same atomic per-event scripts the HTTP API uses.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Callable, Collection, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from redis.exceptions import RedisError
from tqdm import tqdm

from arbiter.dsl.errors import ArbiterError
from arbiter.dsl.nodes import TriggerDecl
from arbiter.dsl.types import Type
from arbiter.engine.intake import messages
from arbiter.engine.intake.messages import EventSchema, InvalidMessage, decode_json
from arbiter.engine.learning.attribution import known_outcome_types
from arbiter.engine.store.profiles import Event, ProfileStore, grouped_properties
from arbiter.engine.triggers.schedule import schedule_triggers
from arbiter.server.cli.common import trigger_shards

MAX_ERRORS_SHOWN = 20


class LineError(ArbiterError):
    """One invalid line: where it is, which field, what is wrong."""

    code = "invalid-line"

    def __init__(self, path: str, line: int, field: str | None, message: str) -> None:
        self.path, self.line, self.field, self.message = path, line, field, message
        where = f"{path}:{line}: " + (f"{field}: " if field else "")
        super().__init__(where + message)


@dataclass
class Totals:
    """What one run did. `read` counts non-blank lines; `duplicates` were sent but not new."""

    read: int = 0
    counted: int = 0
    duplicates: int = 0
    invalid: int = 0

    def summary(self, path: str) -> str:
        """One line for people."""
        return (
            f"{path}: read {self.read} events: {self.counted} counted, "
            f"{self.duplicates} duplicates, {self.invalid} invalid"
        )


def parse_event(text: str, path: str, line: int, now: float, schema: EventSchema) -> Event:
    """One line as an `Event`, or `LineError` naming the field at fault."""
    try:
        raw = decode_json(text)
        return messages.parse_event(raw, now, schema)
    except InvalidMessage as exc:
        raise LineError(path, line, exc.field, exc.message) from None


def _lines(fh: IO[bytes], bar: tqdm[Any]) -> Iterator[tuple[int, str]]:
    for number, raw in enumerate(fh, 1):
        bar.update(len(raw))
        text = raw.decode("utf-8", "replace").strip()
        if text:
            yield number, text


def _bar(path: Path, desc: str, progress: bool | None, err: IO[str]) -> tqdm[Any]:
    # `disable=None` means: draw only on a terminal, so logs and pipes stay clean.
    return tqdm(
        total=path.stat().st_size,
        desc=desc,
        unit="B",
        unit_scale=True,
        file=err,
        disable=None if progress is None else not progress,
        mininterval=0.25,
    )


def check_file(
    path: Path, now: float, schema: EventSchema, progress: bool | None, err: IO[str]
) -> tuple[int, list[LineError]]:
    """First pass of the default mode: (events read, invalid lines)."""
    read = 0
    errors: list[LineError] = []
    with path.open("rb") as fh, _bar(path, "checking", progress, err) as bar:
        for number, text in _lines(fh, bar):
            read += 1
            try:
                parse_event(text, str(path), number, now, schema)
            except LineError as exc:
                errors.append(exc)
    return read, errors


async def write_file(
    path: Path,
    store: ProfileStore,
    *,
    batch: int,
    schema: EventSchema,
    progress: bool | None,
    err: IO[str],
    clock: Callable[[], float] = time.time,
    totals: Totals,
    outcomes: Collection[str] | None = None,
    triggers: Sequence[tuple[str, TriggerDecl]] = (),
    grouped: Collection[str] = (),
) -> list[LineError]:
    """Stream the valid events of `path` into Redis, `batch` per pipeline; the invalid lines.

    Events of the types in `outcomes` also go to the outcome stream (rewards
    from events); None: the types servers registered in Redis, read with the
    first batch. String properties in `grouped` (`"<event>.<prop>"`) are
    counted per value.
    """
    errors: list[LineError] = []
    pending: list[Event] = []
    tracked: list[Collection[str]] = [] if outcomes is None else [outcomes]

    async def send() -> None:
        if not tracked:
            tracked.append(await known_outcome_types(store.redis))
        counted = await store.add_events(pending, now=clock(), outcomes=tracked[0], grouped=grouped)
        if triggers:
            await schedule_triggers(
                store.redis, triggers, pending, clock(), shards=trigger_shards()
            )
        totals.counted += counted
        totals.duplicates += len(pending) - counted
        pending.clear()

    with path.open("rb") as fh, _bar(path, "ingesting", progress, err) as bar:
        for number, text in _lines(fh, bar):
            totals.read += 1
            try:
                pending.append(parse_event(text, str(path), number, clock(), schema))
            except LineError as exc:
                totals.invalid += 1
                errors.append(exc)
                continue
            if len(pending) >= batch:
                await send()
        if pending:
            await send()
    return errors


def trigger_specs(rules: str | None) -> list[tuple[str, TriggerDecl]]:
    """(ruleset, trigger) of the rules at `rules`, whose events schedule firings; none without."""
    if rules is None:
        return []
    from arbiter import dsl
    from arbiter.server.rulesets import rule_files

    specs: list[tuple[str, TriggerDecl]] = []
    for path in rule_files(Path(rules)):
        checked = dsl.load_checked(path)
        specs += [(checked.name, d) for d in checked.triggers.values()]
    return specs


def grouped_of(rules: str | None) -> frozenset[str]:
    """`"<event>.<prop>"` the rules at `rules` count per value (`count(… by p)`, `distinct`)."""
    if rules is None:
        return frozenset()
    from arbiter.server.cli.common import compile_rules, rule_paths

    return grouped_properties(compile_rules(p).needs for p in rule_paths([rules]))


def event_schema(rules: str | None) -> dict[str, dict[str, Type]]:
    """Declared event properties of the rules at `rules` (a file or folder), or none."""
    if rules is None:
        return {}
    from arbiter import dsl
    from arbiter.server.rulesets import rule_files

    schema: dict[str, dict[str, Type]] = {}
    for path in rule_files(Path(rules)):
        for name, fields in dsl.load_checked(path).events.items():
            schema.setdefault(name, dict(fields))
    return schema


def _show(errors: list[LineError], err: IO[str]) -> None:
    for exc in errors[:MAX_ERRORS_SHOWN]:
        print(exc, file=err)
    if len(errors) > MAX_ERRORS_SHOWN:
        print(f"... and {len(errors) - MAX_ERRORS_SHOWN} more invalid lines", file=err)


def ingest_main(
    file: str,
    *,
    redis_url: Callable[[], tuple[str, Any]],
    batch: int = 500,
    skip_invalid: bool = False,
    rules: str | None = None,
    progress: bool | None = None,
    out: IO[str] | None = None,
    err: IO[str] | None = None,
) -> int:
    """Run `arbiter ingest`; the exit code (0 done, 1 invalid lines or Redis failed, 2 usage).

    `redis_url()` gives (url, embedded server or None) and is called only once
    the file is known to be worth writing, so a bad file starts no Redis.
    """
    out = out or sys.stdout
    err = err or sys.stderr
    path = Path(file)
    if not path.is_file():
        print(f"arbiter ingest: {file}: no such file", file=err)
        return 2
    if batch < 1:
        print("arbiter ingest: --batch must be at least 1", file=err)
        return 2
    schema = event_schema(rules)
    if not skip_invalid:
        read, errors = check_file(path, time.time(), schema, progress, err)
        if errors:
            _show(errors, err)
            print(
                f"{file}: {len(errors)} of {read} lines invalid; nothing was written "
                "(fix them, or pass --skip-invalid to write the valid lines)",
                file=err,
            )
            return 1
    url, embedded = redis_url()
    totals = Totals()
    try:
        specs = trigger_specs(rules)
        grouped = grouped_of(rules)
        errors = asyncio.run(
            _write(path, url, batch, schema, progress, err, totals, specs, grouped)
        )
    except (RedisError, OSError) as exc:
        print(
            f"arbiter ingest: Redis at {url} failed after {totals.read} lines "
            f"({totals.counted} counted): {type(exc).__name__}: {exc}. Events with an "
            "event_id can be sent again safely; events without one would count twice.",
            file=err,
        )
        return 1
    finally:
        if embedded is not None:
            embedded.stop()
    _show(errors, err)
    print(totals.summary(file) + (" (skipped)" if totals.invalid else ""), file=out)
    return 0


async def _write(
    path: Path,
    url: str,
    batch: int,
    schema: EventSchema,
    progress: bool | None,
    err: IO[str],
    totals: Totals,
    triggers: Sequence[tuple[str, TriggerDecl]] = (),
    grouped: Collection[str] = (),
) -> list[LineError]:
    from arbiter.engine.store.client import connect

    # Bulk work: a generous timeout, not the decision path's tens of milliseconds.
    client = connect(url, socket_timeout=30)
    try:
        return await write_file(
            path,
            ProfileStore(client),
            batch=batch,
            schema=schema,
            progress=progress,
            err=err,
            totals=totals,
            triggers=triggers,
            grouped=grouped,
        )
    finally:
        await client.aclose()

"""API keys kept in Redis: created, listed, revoked and rotated while servers run.

The store is one hash, `arb:{keys}` (key name -> a JSON record shaped like a
key file's `[[key]]` entry: `sha256`, `scopes`, `expires`, `origins`,
`rate_limit`), and a version counter, `arb:{keys}:v`, that every change
increments in the same Lua call. Only digests are stored: the key itself is
shown once, by the command that made it.

Every server worker (`watch_key_store`) reads the version once per reload
interval (`ARBITER_RELOAD_INTERVAL_MS`, 1 s by default) and reads the records
again only when it moved, so a key created, revoked or rotated anywhere is in
force on every worker and machine within one interval. When Redis does not
answer, the keys last read stay in force (a Redis outage must not lock every
client out, and a revocation made during it cannot have been written anyway).

Rotation keeps the old digest beside the new one until a grace time ends
(`previous_sha256`, `previous_expires`): clients move to the new key, and
after the grace the old one is refused (`401 key_expired`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from arbiter.engine.store.client import SyncRedisClient
from arbiter.engine.store.keys import PREFIX
from arbiter.server.security.auth import (
    SCOPES,
    ApiKey,
    KeyFileError,
    KeyRing,
    RateLimit,
    digest,
    new_key,
    parse_entry,
    parse_expires,
)

# One hash tag: the records and the version live in one cluster slot, so one Lua call changes both.
STORE = f"{PREFIX}:{{keys}}"
VERSION = f"{PREFIX}:{{keys}}:v"

log = logging.getLogger("arbiter.server")

# KEYS: store, version. ARGV: name, record, expected ("" = must not exist, "*" = any).
# Answers the new version, -1 when the name is taken (create), -2 when the record is
# gone or changed since it was read (rotate, revoke).
_WRITE = """
local cur = redis.call('HGET', KEYS[1], ARGV[1])
if ARGV[3] == '' then
  if cur then return -1 end
elseif ARGV[3] ~= '*' then
  if cur ~= ARGV[3] then return -2 end
end
if ARGV[2] == '' then
  if not cur then return -2 end
  redis.call('HDEL', KEYS[1], ARGV[1])
else
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
end
return redis.call('INCR', KEYS[2])
"""


class KeyStoreError(KeyFileError):
    """A key-store command cannot be done (name taken, no such key, bad value)."""

    code = "invalid-key-store-request"

    def __init__(self, message: str, status: int = 422) -> None:
        super().__init__(message)
        self.status = status  # the HTTP answer of the /v1/keys routes: 404, 409 or 422


@dataclass(frozen=True)
class StoredKey:
    """A record of the store, as `arbiter keys list` shows it (never the key)."""

    name: str
    scopes: list[str]
    created: str
    expires: str | None
    rate_limit: str | None
    origins: list[str] | None
    previous_expires: str | None


def _rfc3339(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat().replace("+00:00", "Z")


def parse_duration(text: str, where: str) -> float:
    """`"90s"`, `"15m"`, `"24h"`, `"7d"` or plain seconds, as seconds."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    raw = text.strip()
    try:
        value = float(raw[:-1]) * units[raw[-1]] if raw and raw[-1] in units else float(raw)
    except ValueError:
        raise KeyStoreError(f"{where}: a duration like 90s, 15m, 24h or 7d, got {text!r}") from None
    if value < 0:
        raise KeyStoreError(f"{where}: a duration cannot be negative, got {text!r}")
    return value


def make_record(
    name: str,
    key: str,
    scopes: Sequence[str],
    *,
    rate_limit: str | None = None,
    origins: Sequence[str] | None = None,
    expires: str | None = None,
    now: float | None = None,
) -> dict[str, Any]:
    """A store record for `key` (its digest), checked as a key-file entry would be."""
    record: dict[str, Any] = {
        "name": name,
        "sha256": digest(key).hex(),
        "scopes": list(scopes),
        "created": _rfc3339(time.time() if now is None else now),
    }
    if rate_limit:
        record["rate_limit"] = rate_limit
    if origins is not None:
        record["origins"] = list(origins)
    if expires:
        record["expires"] = expires
    try:
        parse_entry(record, f"key '{name}'")
    except KeyFileError as exc:
        raise KeyStoreError(str(exc)) from None
    return record


def record_keys(record: dict[str, Any], where: str) -> list[ApiKey]:
    """The keys one record holds: its key, and the previous one during a rotation's grace."""
    current = parse_entry(record, where)
    out = [current]
    previous = record.get("previous_sha256")
    if isinstance(previous, str):
        until = parse_expires(record.get("previous_expires"), where)
        if until is None:
            raise KeyFileError(f"{where}: 'previous_sha256' needs 'previous_expires'")
        if current.expires is not None:
            until = min(until, current.expires)
        old = parse_entry({**record, "sha256": previous}, where)
        out.append(ApiKey(old.name, old.digest, old.scopes, until, old.origins, old.rate_limit))
    return out


def decode(raw: dict[Any, Any]) -> dict[str, dict[str, Any]]:
    """HGETALL's answer (bytes or text) as name -> record; undecodable records are skipped."""
    out: dict[str, dict[str, Any]] = {}
    for k, v in raw.items():
        name = k.decode() if isinstance(k, bytes) else str(k)
        try:
            record = json.loads(v)
        except ValueError:
            log.error("key store: the record of '%s' is not JSON; ignored", name)
            continue
        if isinstance(record, dict):
            out[name] = record
    return out


def ring_keys(records: dict[str, dict[str, Any]]) -> list[ApiKey]:
    """Every key the records hold; a malformed record is logged and left out, not the rest."""
    keys: list[ApiKey] = []
    for name, record in sorted(records.items()):
        try:
            keys.extend(record_keys(record, f"key store: key '{name}'"))
        except KeyFileError:
            log.exception("key store: a record is malformed; the key is not in force")
    return keys


def new_record(
    name: str,
    scopes: Sequence[str],
    *,
    rate_limit: str | None = None,
    origins: Sequence[str] | None = None,
    expires: str | None = None,
) -> tuple[str, str]:
    """A fresh key for `name` and its record's JSON text (checked)."""
    _check_name(name)
    key = new_key()
    record = make_record(name, key, scopes, rate_limit=rate_limit, origins=origins, expires=expires)
    return key, json.dumps(record)


def rotated(text: str, grace_s: float) -> tuple[str, str]:
    """A fresh key and the record `text` rotated to it, the old key kept for `grace_s` s."""
    record = json.loads(text)
    key = new_key()
    record["previous_sha256"] = record["sha256"]
    record["previous_expires"] = _rfc3339(time.time() + grace_s)
    record["sha256"] = digest(key).hex()
    return key, json.dumps(record)


def listed(records: dict[str, dict[str, Any]]) -> list[StoredKey]:
    """What `list` shows of the records: never a key or a digest."""
    return [
        StoredKey(
            name=name,
            scopes=list(r.get("scopes", [])),
            created=str(r.get("created", "")),
            expires=r.get("expires"),
            rate_limit=r.get("rate_limit"),
            origins=r.get("origins"),
            previous_expires=r.get("previous_expires") if r.get("previous_sha256") else None,
        )
        for name, r in sorted(records.items())
    ]


def _taken(name: str) -> KeyStoreError:
    return KeyStoreError(f"a key named '{name}' exists: revoke or rotate it", 409)


def _missing(name: str) -> KeyStoreError:
    return KeyStoreError(f"no key named '{name}' in the store", 404)


def _changed(name: str) -> KeyStoreError:
    return KeyStoreError(f"the key '{name}' changed meanwhile (another rotation?): try again", 409)


def _text(raw: Any) -> str:
    return raw.decode() if isinstance(raw, bytes) else str(raw)


class KeyStore:
    """The key store through a synchronous client (`arbiter keys ... --redis URL`)."""

    def __init__(self, redis: SyncRedisClient) -> None:
        self.redis = redis

    def _write(self, name: str, record: str, expected: str) -> int:
        return int(self.redis.eval(_WRITE, 2, STORE, VERSION, name, record, expected))

    def records(self) -> dict[str, dict[str, Any]]:
        """name -> record, as stored."""
        return decode(self.redis.hgetall(STORE))

    def version(self) -> int:
        """The version counter (0 before the first change)."""
        return int(self.redis.get(VERSION) or 0)

    def create(
        self,
        name: str,
        scopes: Sequence[str],
        *,
        rate_limit: str | None = None,
        origins: Sequence[str] | None = None,
        expires: str | None = None,
    ) -> str:
        """Store a new key named `name`; returns the key (shown once: only its digest is kept)."""
        key, record = new_record(
            name, scopes, rate_limit=rate_limit, origins=origins, expires=expires
        )
        if self._write(name, record, "") == -1:
            raise _taken(name)
        return key

    def revoke(self, name: str) -> None:
        """Delete the key (and a previous one still in its grace): refused within an interval."""
        if self._write(name, "", "*") < 0:
            raise _missing(name)

    def rotate(self, name: str, grace_s: float) -> str:
        """A new key for `name`; the old one keeps working `grace_s` seconds more. Returns the key."""
        raw = self.redis.hget(STORE, name)
        if raw is None:
            raise _missing(name)
        key, record = rotated(_text(raw), grace_s)
        if self._write(name, record, _text(raw)) < 0:
            raise _changed(name)
        return key

    def list(self) -> list[StoredKey]:
        """Every stored key, by name."""
        return listed(self.records())


class AsyncKeyStore:
    """The same commands through the server's asyncio client (the `/v1/keys` routes)."""

    def __init__(self, redis: Any) -> None:
        self.redis = redis

    async def _write(self, name: str, record: str, expected: str) -> int:
        return int(await self.redis.eval(_WRITE, 2, STORE, VERSION, name, record, expected))

    async def create(
        self,
        name: str,
        scopes: Sequence[str],
        *,
        rate_limit: str | None = None,
        origins: Sequence[str] | None = None,
        expires: str | None = None,
    ) -> str:
        """As `KeyStore.create`."""
        key, record = new_record(
            name, scopes, rate_limit=rate_limit, origins=origins, expires=expires
        )
        if await self._write(name, record, "") == -1:
            raise _taken(name)
        return key

    async def revoke(self, name: str) -> None:
        """As `KeyStore.revoke`."""
        if await self._write(name, "", "*") < 0:
            raise _missing(name)

    async def rotate(self, name: str, grace_s: float) -> str:
        """As `KeyStore.rotate`."""
        raw = await self.redis.hget(STORE, name)
        if raw is None:
            raise _missing(name)
        key, record = rotated(_text(raw), grace_s)
        if await self._write(name, record, _text(raw)) < 0:
            raise _changed(name)
        return key

    async def list(self) -> list[StoredKey]:
        """As `KeyStore.list`."""
        return listed(decode(await self.redis.hgetall(STORE)))


def _check_name(name: str) -> None:
    if (
        not name
        or len(name) > 64
        or not all(c.isascii() and (c.isalnum() or c in "-_.") for c in name)
    ):
        raise KeyStoreError(
            f"key name {name!r}: 1 to 64 letters, digits, '-', '_' or '.' (it appears in logs)"
        )


def check_scopes(text: str) -> list[str]:
    """Comma-separated scopes, each known; `KeyStoreError` naming the unknown ones."""
    scopes = [s.strip() for s in text.split(",") if s.strip()]
    unknown = [s for s in scopes if s not in SCOPES]
    if not scopes or unknown:
        raise KeyStoreError(f"unknown scope(s) {unknown}; known: {', '.join(SCOPES)}")
    return scopes


def check_rate_limit(text: str | None) -> str | None:
    """A rate limit as a key file writes it, checked."""
    if text:
        try:
            RateLimit.parse(text, "--rate-limit")
        except KeyFileError as exc:
            raise KeyStoreError(str(exc)) from None
    return text


async def refresh(ring: KeyRing, redis: Any) -> bool:
    """Read the store into `ring` if its version moved; True if it was read."""
    version = int(await redis.get(VERSION) or 0)
    if version == ring.store_version:
        return False
    records = decode(await redis.hgetall(STORE))
    ring.set_store_keys(version, ring_keys(records))
    return True


async def watch_key_store(
    ring: KeyRing, redis: Any, interval_s: float, stop: asyncio.Event
) -> None:
    """Keep `ring`'s Redis keys current until `stop`; Redis trouble keeps the keys last read."""
    failing = False
    while not stop.is_set():
        try:
            await refresh(ring, redis)
            if failing:
                log.warning("key store: Redis answers again; keys re-read")
            failing = False
        except Exception:  # Redis down or slow: keep the keys in force, say so once
            if not failing:
                log.warning(
                    "key store: Redis did not answer; the %d keys last read stay in force",
                    len(ring.store_keys),
                    exc_info=True,
                )
            failing = True
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), interval_s)

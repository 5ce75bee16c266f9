"""API keys with scopes, stored hashed, compared in constant time, rotated without restart.

Keys come from two places:

- the environment: `ARBITER_ADMIN_KEY` (named `admin`, every scope) and
  `ARBITER_DECIDE_KEY` (named `decide`, scopes `decide` and `feedback`);
- a key file (`ARBITER_KEYS_FILE`, TOML), one `[[key]]` table per key with
  `name`, `sha256` (hex digest of the key), `scopes`, and optionally
  `expires` (RFC 3339), `origins` (browser origins the key may be used from)
  and `rate_limit` (`"600/60s"`). The file is re-read when it changes, so a
  key is added, rotated or revoked without a restart (`arbiter keys new`
  prints an entry).

Only SHA-256 digests are held in memory: a presented key is hashed and
compared against every digest with `hmac.compare_digest`, so neither the
comparison nor which entry matched shows in the timing. Scopes that are
public (`ARBITER_PUBLIC_SCOPES`) need no key; a key that is presented must
still be valid.
"""

from __future__ import annotations

import hashlib
import hmac
import time
import tomllib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Literal, get_args

from arbiter.dsl.errors import ArbiterError
from arbiter.server.errors import ApiError

Scope = Literal[
    "decide",
    "feedback",
    "events",
    "profiles:read",
    "profiles:write",
    "rulesets:read",
    "rulesets:write",
    "reports:read",
    "admin",
]
SCOPES: tuple[Scope, ...] = get_args(Scope)
# Scopes that may be public: what a browser needs on a page view. Reading or
# writing profiles and rules never is.
PUBLIC_ALLOWED = frozenset({"decide", "feedback", "events"})
# How often the key file is read again, at most (it is small: a read a second costs nothing).
RELOAD_CHECK_S = 1.0


class KeyFileError(ArbiterError):
    """The key file is unreadable or an entry is malformed; the message names the entry."""

    code = "invalid-keys-file"


@dataclass(frozen=True)
class RateLimit:
    """At most `requests` per `window_s` seconds."""

    requests: int
    window_s: int

    @classmethod
    def parse(cls, text: str, where: str) -> RateLimit:
        """`"600/60s"`, `"10/1s"`, `"1000/1m"`, `"50000/1h"`."""
        count, _, window = text.strip().partition("/")
        units = {"s": 1, "m": 60, "h": 3600}
        try:
            n = int(count)
            w = int(window[:-1]) * units[window[-1]]
        except (ValueError, KeyError, IndexError):
            raise KeyFileError(
                f"{where}: rate limit must look like '600/60s' (or /1m, /1h), got {text!r}"
            ) from None
        if n < 1 or w < 1:
            raise KeyFileError(f"{where}: rate limit must be positive, got {text!r}")
        return cls(n, w)


@dataclass(frozen=True)
class ApiKey:
    """One key as held in memory: its name, digest and what it may do."""

    name: str
    digest: bytes  # sha256 of the key
    scopes: frozenset[str]
    expires: float | None = None
    origins: frozenset[str] | None = None
    rate_limit: RateLimit | None = None

    def allows(self, scope: str) -> bool:
        return scope in self.scopes or "admin" in self.scopes


@dataclass(frozen=True)
class Principal:
    """Who is calling: a key's name (or `public`), for logs and rate limits."""

    name: str
    rate_limit: RateLimit | None
    public: bool = False


def digest(key: str) -> bytes:
    """The SHA-256 digest a key is stored as."""
    return hashlib.sha256(key.encode()).digest()


def parse_key_file(text: str, path: str) -> list[ApiKey]:
    """The keys of a TOML key file; `KeyFileError` naming the entry at fault."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise KeyFileError(f"{path}: {exc}") from None
    entries = data.get("key", [])
    if not isinstance(entries, list):
        raise KeyFileError(f"{path}: keys are [[key]] tables")
    out: list[ApiKey] = []
    names: set[str] = set()
    for i, entry in enumerate(entries):
        name = entry.get("name") if isinstance(entry, dict) else None
        if not isinstance(name, str) or not name:
            raise KeyFileError(f"{path}: key #{i + 1}: 'name' is required")
        if name in names:
            raise KeyFileError(f"{path}: key '{name}': the name is used twice")
        names.add(name)
        out.append(parse_entry(entry, f"{path}: key '{name}'"))
    return out


def parse_entry(entry: dict[str, Any], where: str) -> ApiKey:
    """One `[[key]]` entry (of the key file, or a record of the Redis key store)."""
    name = entry.get("name")
    if not isinstance(name, str) or not name:
        raise KeyFileError(f"{where}: 'name' is required")
    sha = entry.get("sha256", "")
    try:
        raw = bytes.fromhex(sha) if isinstance(sha, str) else b""
    except ValueError:
        raw = b""
    if len(raw) != 32:
        raise KeyFileError(f"{where}: 'sha256' must be 64 hex digits (arbiter keys new)")
    scopes = entry.get("scopes", [])
    if not isinstance(scopes, list) or not scopes:
        raise KeyFileError(f"{where}: 'scopes' must be a non-empty list")
    unknown = [s for s in scopes if s not in SCOPES]
    if unknown:
        raise KeyFileError(f"{where}: unknown scope(s) {unknown}; known: {', '.join(SCOPES)}")
    origins = entry.get("origins")
    if origins is not None and not (
        isinstance(origins, list) and all(isinstance(o, str) for o in origins)
    ):
        raise KeyFileError(f"{where}: 'origins' must be a list of origins")
    rate = entry.get("rate_limit")
    return ApiKey(
        name=name,
        digest=raw,
        scopes=frozenset(scopes),
        expires=parse_expires(entry.get("expires"), where),
        origins=frozenset(origins) if origins is not None else None,
        rate_limit=RateLimit.parse(rate, where) if isinstance(rate, str) else None,
    )


def parse_expires(expires: object, where: str) -> float | None:
    """An `expires` value (RFC 3339 text or a TOML datetime) as a Unix time, or None."""
    if expires is None:
        return None
    if isinstance(expires, datetime):
        return expires.timestamp()
    if isinstance(expires, str):
        try:
            return datetime.fromisoformat(expires).timestamp()
        except ValueError:
            pass  # not ISO 8601: refused below, with the field named
    raise KeyFileError(f"{where}: 'expires' must be an RFC 3339 time")


def parse_public_scopes(
    text: str | None, decide_key: str | None, keys_file: str | None, keys_redis: bool = False
) -> frozenset[str]:
    """The public scopes: as set, else `decide` and `feedback` while no key guards decisions."""
    if text is None:
        return (
            frozenset({"decide", "feedback"})
            if decide_key is None and keys_file is None and not keys_redis
            else frozenset()
        )
    if text.strip().lower() == "none":
        return frozenset()
    scopes = frozenset(s.strip() for s in text.split(",") if s.strip())
    bad = scopes - PUBLIC_ALLOWED
    if bad:
        raise KeyFileError(
            f"ARBITER_PUBLIC_SCOPES: {sorted(bad)} cannot be public (only {sorted(PUBLIC_ALLOWED)})"
        )
    return scopes


class KeyRing:
    """Checks `Authorization: Bearer <key>` headers against the configured keys."""

    def __init__(
        self,
        admin_key: str | None,
        decide_key: str | None,
        *,
        keys_file: str | None = None,
        public_scopes: Iterable[str] = (),
        default_rate_limit: RateLimit | None = None,
        public_rate_limit: RateLimit | None = None,
        clock: object = time.time,
    ) -> None:
        self._env_keys: list[ApiKey] = []
        if admin_key:
            self._env_keys.append(ApiKey("admin", digest(admin_key), frozenset(SCOPES)))
        if decide_key:
            self._env_keys.append(
                ApiKey("decide", digest(decide_key), frozenset({"decide", "feedback"}))
            )
        self.keys_file = Path(keys_file) if keys_file else None
        self.public = frozenset(public_scopes)
        self.default_rate_limit = default_rate_limit
        self.public_rate_limit = public_rate_limit
        self._clock = clock
        self._file_keys: list[ApiKey] = []
        # Keys of the Redis key store (server.security.keystore), replaced as a whole
        # by its watcher when the store's version changes; None until first read.
        self._store_keys: list[ApiKey] = []
        self.store_version: int | None = None
        self._file_text: str | None = None
        self._next_check = 0.0
        self.reload_check_s = RELOAD_CHECK_S
        if self.keys_file is not None:
            self.reload()

    @property
    def keys(self) -> Sequence[ApiKey]:
        """Every key now valid or expired (environment first, then the file, then Redis)."""
        return [*self._env_keys, *self._file_keys, *self._store_keys]

    @property
    def store_keys(self) -> Sequence[ApiKey]:
        """The keys last read from the Redis key store."""
        return self._store_keys

    def set_store_keys(self, version: int, keys: Sequence[ApiKey]) -> None:
        """Replace the keys read from the Redis key store (one assignment: no torn reads)."""
        self._store_keys = list(keys)
        self.store_version = version

    def reload(self) -> bool:
        """Re-read the key file if it changed; True if it was read.

        A file that became invalid keeps the keys last read (logged by the
        caller): a typo in a rotation must not lock every client out.
        """
        assert self.keys_file is not None
        try:
            text = self.keys_file.read_text(encoding="utf-8")
        except OSError as exc:
            if self._file_text is None:
                raise KeyFileError(f"{self.keys_file}: {exc.strerror}") from None
            return False
        if text == self._file_text:
            return False
        self._file_keys = parse_key_file(text, str(self.keys_file))
        self._file_text = text
        return True

    def _maybe_reload(self) -> None:
        if self.keys_file is None:
            return
        now = time.monotonic()
        if now < self._next_check:
            return
        self._next_check = now + self.reload_check_s
        try:
            self.reload()
        except KeyFileError:
            import logging

            logging.getLogger("arbiter.server").exception("key file not reloaded")

    def _match(self, token: bytes) -> ApiKey | None:
        # Every digest is compared, whichever matches: no early exit to time.
        presented = hashlib.sha256(token).digest()
        found = None
        for key in self.keys:
            if hmac.compare_digest(presented, key.digest):
                found = key
        return found

    def holders(self, scope: str) -> bool:
        """Whether any key (or the public) can use `scope`."""
        return scope in self.public or any(k.allows(scope) for k in self.keys)

    def authenticate(
        self, scope: str, authorization: str | None, origin: str | None = None
    ) -> Principal:
        """The caller allowed `scope`, or `ApiError` 401 (no or bad key) / 403 (not allowed)."""
        self._maybe_reload()
        token = _bearer(authorization)
        if token is None and scope in self.public:
            return Principal("public", self.public_rate_limit, public=True)
        if not self.holders(scope):
            # No key could ever pass: say what to configure rather than "bad key".
            raise ApiError(
                403,
                "admin_disabled",
                f"no key has the '{scope}' scope: set ARBITER_ADMIN_KEY or a key file "
                "(or serve with --dev)",
            )
        if token is None:
            raise ApiError(
                401, "unauthorized", "missing 'Authorization: Bearer <key>' header",
                extra_headers=_CHALLENGE,
            )  # fmt: skip
        key = self._match(token)
        if key is None:
            raise ApiError(401, "unauthorized", "unknown API key", extra_headers=_CHALLENGE_INVALID)
        clock = self._clock
        if key.expires is not None and key.expires <= clock():  # type: ignore[operator]
            raise ApiError(
                401, "key_expired", f"the key '{key.name}' has expired",
                extra_headers=_CHALLENGE_INVALID,
            )  # fmt: skip
        if not key.allows(scope):
            raise ApiError(
                403, "forbidden", f"the key '{key.name}' does not have the '{scope}' scope"
            )
        if key.origins is not None and origin is not None and origin not in key.origins:
            raise ApiError(
                403, "origin_refused", f"the key '{key.name}' may not be used from {origin}"
            )
        return Principal(key.name, key.rate_limit or self.default_rate_limit)

    def require(self, scope: str, authorization: str | None) -> Principal:
        """`authenticate` without an origin (callers outside a browser request)."""
        return self.authenticate(scope, authorization)


_CHALLENGE = {"www-authenticate": 'Bearer realm="arbiter"'}
_CHALLENGE_INVALID = {"www-authenticate": 'Bearer realm="arbiter", error="invalid_token"'}


def _bearer(header: str | None) -> bytes | None:
    if not header:
        return None
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip().encode()


def new_key() -> str:
    """A fresh random key (256 bits, URL-safe)."""
    import secrets

    return "ak_" + secrets.token_urlsafe(32)


def key_entry(name: str, key: str, scopes: Sequence[str], rate_limit: str | None = None) -> str:
    """The `[[key]]` TOML entry for `key` (its digest, never the key)."""
    lines = [
        "[[key]]",
        f'name = "{name}"',
        f'sha256 = "{digest(key).hex()}"',
        "scopes = [" + ", ".join(f'"{s}"' for s in scopes) + "]",
    ]
    if rate_limit:
        lines.append(f'rate_limit = "{rate_limit}"')
    return "\n".join(lines) + "\n"

"""`arbiter keys`: API keys for the key file (`new`) or the Redis key store
(`create`, `list`, `revoke`, `rotate`), which running servers pick up within
one reload interval when they run with `ARBITER_KEYS_REDIS=true`."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from arbiter.server.security.auth import SCOPES, RateLimit, key_entry, new_key
from arbiter.server.security.keystore import (
    KeyStore,
    check_rate_limit,
    check_scopes,
    parse_duration,
)


def cmd_keys_new(args: argparse.Namespace) -> int:
    """Print a new key (once: only its digest is stored) and its `[[key]]` entry."""
    scopes = [s.strip() for s in args.scopes.split(",") if s.strip()]
    unknown = [s for s in scopes if s not in SCOPES]
    if not scopes or unknown:
        print(f"arbiter: unknown scope(s) {unknown}; known: {', '.join(SCOPES)}", file=sys.stderr)
        return 2
    if args.rate_limit:
        try:
            RateLimit.parse(args.rate_limit, "--rate-limit")
        except Exception as exc:
            print(f"arbiter: {exc}", file=sys.stderr)
            return 2
    key = new_key()
    print(f"# the key, shown once; send it as 'Authorization: Bearer {key}'", file=sys.stderr)
    print(f"# {key}", file=sys.stderr)
    print(key_entry(args.name, key, scopes, args.rate_limit), end="")
    return 0


@contextmanager
def _store(args: argparse.Namespace) -> Iterator[KeyStore]:
    """The key store on `--redis`, else ARBITER_REDIS_URL or the data dir's embedded Redis."""
    from arbiter.engine.store.client import connect_sync
    from arbiter.server.cli.common import redis_url

    url, embedded = (args.redis, None) if args.redis else redis_url()
    client = connect_sync(url)
    try:
        yield KeyStore(client)
    finally:
        client.close()
        if embedded is not None:
            embedded.stop()


def _shown_once(key: str, name: str) -> None:
    # The key on stdout alone (for scripts); how to use it on stderr.
    print(f"# the key of '{name}', shown once: send it as 'Authorization: Bearer <key>'",
          file=sys.stderr)  # fmt: skip
    print(key)


def cmd_keys_create(args: argparse.Namespace) -> int:
    """Store a new key in Redis and print it once."""
    scopes = check_scopes(args.scopes)
    origins = [o.strip() for o in args.origins.split(",") if o.strip()] if args.origins else None
    with _store(args) as store:
        key = store.create(
            args.name,
            scopes,
            rate_limit=check_rate_limit(args.rate_limit),
            origins=origins,
            expires=args.expires,
        )
    _shown_once(key, args.name)
    return 0


def cmd_keys_list(args: argparse.Namespace) -> int:
    """The stored keys: names, scopes, limits, expiry; never a key or a digest."""
    with _store(args) as store:
        keys = store.list()
    if args.json:
        print(json.dumps([k.__dict__ for k in keys], indent=2))
        return 0
    for k in keys:
        extra = []
        if k.rate_limit:
            extra.append(f"rate {k.rate_limit}")
        if k.origins is not None:
            extra.append("origins " + ",".join(k.origins))
        if k.expires:
            extra.append(f"expires {k.expires}")
        if k.previous_expires:
            extra.append(f"previous key until {k.previous_expires}")
        print(f"{k.name}\t{','.join(k.scopes)}\tcreated {k.created}\t" + "\t".join(extra))
    if not keys:
        print("arbiter: no keys in the store", file=sys.stderr)
    return 0


def cmd_keys_revoke(args: argparse.Namespace) -> int:
    """Delete a stored key: servers refuse it within one reload interval."""
    with _store(args) as store:
        store.revoke(args.name)
    print(f"arbiter: '{args.name}' revoked; servers refuse it within their reload interval",
          file=sys.stderr)  # fmt: skip
    return 0


def cmd_keys_rotate(args: argparse.Namespace) -> int:
    """A new key for a stored name; the old one works for `--grace` more, then is refused."""
    grace = parse_duration(args.grace, "--grace")
    with _store(args) as store:
        key = store.rotate(args.name, grace)
    _shown_once(key, args.name)
    print(f"# the previous key of '{args.name}' is refused after {args.grace}", file=sys.stderr)
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Register `arbiter keys new|create|list|revoke|rotate`."""
    p = sub.add_parser(
        "keys", help="API keys: for the key file (new) or the Redis key store (create, ...)"
    )
    verbs = p.add_subparsers(dest="keys_command", required=True)
    new = verbs.add_parser("new", help="print a new key and its [[key]] entry for the key file")
    new.add_argument("name", help="the name access logs and rate limits show")
    new.add_argument("--scopes", required=True, help=f"comma-separated: {', '.join(SCOPES)}")
    new.add_argument("--rate-limit", default=None, help="e.g. 600/60s")
    new.set_defaults(func=cmd_keys_new)

    def verb(
        name: str, help_text: str, func: Callable[[argparse.Namespace], int]
    ) -> argparse.ArgumentParser:
        v: argparse.ArgumentParser = verbs.add_parser(name, help=help_text)
        v.add_argument(
            "--redis",
            default=None,
            help="the servers' Redis URL (default: ARBITER_REDIS_URL, else the embedded Redis)",
        )
        v.set_defaults(func=func)
        return v

    create = verb("create", "store a new key in Redis and print it once", cmd_keys_create)
    create.add_argument("name", help="the name access logs and rate limits show")
    create.add_argument("--scopes", required=True, help=f"comma-separated: {', '.join(SCOPES)}")
    create.add_argument("--rate-limit", default=None, help="e.g. 600/60s")
    create.add_argument("--origins", default=None, help="browser origins it may be used from")
    create.add_argument("--expires", default=None, help="RFC 3339 time, e.g. 2027-01-31T00:00:00Z")
    lst = verb("list", "the stored keys (names, scopes; never the keys)", cmd_keys_list)
    lst.add_argument("--json", action="store_true", help="as JSON")
    revoke = verb("revoke", "delete a stored key", cmd_keys_revoke)
    revoke.add_argument("name")
    rotate = verb("rotate", "a new key for a name; the old one ends after --grace", cmd_keys_rotate)
    rotate.add_argument("name")
    rotate.add_argument("--grace", default="24h", help="how long the old key keeps working")

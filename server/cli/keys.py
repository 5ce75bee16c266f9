"""`arbiter keys new`: a fresh API key and the key-file entry that holds its digest."""

from __future__ import annotations

import argparse
import sys

from arbiter.server.security.auth import SCOPES, RateLimit, key_entry, new_key


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


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Register `arbiter keys new`."""
    p = sub.add_parser("keys", help="make API keys for the key file (ARBITER_KEYS_FILE)")
    verbs = p.add_subparsers(dest="keys_command", required=True)
    new = verbs.add_parser("new", help="print a new key and its [[key]] entry")
    new.add_argument("name", help="the name access logs and rate limits show")
    new.add_argument("--scopes", required=True, help=f"comma-separated: {', '.join(SCOPES)}")
    new.add_argument("--rate-limit", default=None, help="e.g. 600/60s")
    new.set_defaults(func=cmd_keys_new)

"""API keys with scopes: `decide` for decisions and feedback, `admin` for writes.

The admin key also grants `decide`. With no decide key configured, decisions
are open; with no admin key configured, writes are refused (unless serving
with `--dev`, which generates one and prints it).
"""

from __future__ import annotations

import hmac

from arbiter.server.errors import ApiError


class KeyRing:
    """Checks `Authorization: Bearer <key>` headers against the configured keys."""

    def __init__(self, admin_key: str | None, decide_key: str | None) -> None:
        self.admin = admin_key.encode() if admin_key else None
        self.decide = decide_key.encode() if decide_key else None

    def require(self, scope: str, authorization: str | None) -> None:
        """Raise 401/403 unless the header carries a key with `scope`."""
        if scope == "decide" and self.decide is None:
            return
        if scope == "admin" and self.admin is None:
            raise ApiError(
                403,
                "admin_disabled",
                "writes are disabled: set ARBITER_ADMIN_KEY (or serve with --dev)",
            )
        token = _bearer(authorization)
        if token is None:
            raise ApiError(401, "unauthorized", "missing 'Authorization: Bearer <key>' header")
        if self.admin is not None and hmac.compare_digest(token, self.admin):
            return
        if (
            scope == "decide"
            and self.decide is not None
            and hmac.compare_digest(token, self.decide)
        ):
            return
        raise ApiError(403, "forbidden", f"this key does not have the '{scope}' scope")


def _bearer(header: str | None) -> bytes | None:
    if not header:
        return None
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip().encode()

"""Settings from the environment (and a `.env` file), checked once at start-up.

Invalid values stop the process with a message naming the variable: a server
that starts with a typo in its Redis timeout is worse than one that does not
start.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path

from dotenv import dotenv_values

from arbiter.dsl.errors import ArbiterError
from arbiter.server.security.auth import KeyFileError, KeyRing, RateLimit, parse_public_scopes


class SettingsError(ArbiterError):
    """A setting is missing or malformed; the message names the variable."""

    code = "invalid-settings"


@dataclass(frozen=True)
class Settings:
    """Every setting, with its environment variable in the field metadata."""

    redis_url: str | None = field(default=None, metadata={"env": "ARBITER_REDIS_URL"})
    admin_key: str | None = field(default=None, metadata={"env": "ARBITER_ADMIN_KEY"})
    decide_key: str | None = field(default=None, metadata={"env": "ARBITER_DECIDE_KEY"})
    rules_path: str = field(default="rulesets", metadata={"env": "ARBITER_RULES"})
    default_ruleset: str | None = field(default=None, metadata={"env": "ARBITER_DEFAULT_RULESET"})
    data_dir: str = field(default=".arbiter", metadata={"env": "ARBITER_DATA_DIR"})
    redis_timeout_ms: int = field(default=50, metadata={"env": "ARBITER_REDIS_TIMEOUT_MS"})
    decision_ttl_s: int = field(default=7 * 86400, metadata={"env": "ARBITER_DECISION_TTL_S"})
    decision_log_file: str | None = field(
        default=None, metadata={"env": "ARBITER_DECISION_LOG_FILE"}
    )
    # Rotating decision log files (engine/log/files.py): a directory, rotation size
    # (MB) and age (s), and whether rotated files are gzipped.
    decision_log_dir: str | None = field(default=None, metadata={"env": "ARBITER_DECISION_LOG_DIR"})
    decision_log_rotate_mb: int = field(
        default=256, metadata={"env": "ARBITER_DECISION_LOG_ROTATE_MB"}
    )
    decision_log_rotate_s: int = field(
        default=3600, metadata={"env": "ARBITER_DECISION_LOG_ROTATE_S"}
    )
    decision_log_gzip: bool = field(default=False, metadata={"env": "ARBITER_DECISION_LOG_GZIP"})
    decision_stream_maxlen: int = field(
        default=1_000_000, metadata={"env": "ARBITER_DECISION_STREAM_MAXLEN"}
    )
    log_queue_max: int = field(default=50_000, metadata={"env": "ARBITER_LOG_QUEUE_MAX"})
    # "off" keeps no decision records (feedback cannot be joined): for measuring what logging costs.
    decision_log: str = field(default="on", metadata={"env": "ARBITER_DECISION_LOG"})
    # The record copy kept for feedback: "zstd" (a dictionary shared through Redis) or "off".
    decision_log_compression: str = field(
        default="zstd", metadata={"env": "ARBITER_DECISION_LOG_COMPRESSION"}
    )
    reload_interval_ms: int = field(default=1000, metadata={"env": "ARBITER_RELOAD_INTERVAL_MS"})
    learner: str = field(default="inproc", metadata={"env": "ARBITER_LEARNER"})
    #: How long after arrival an outcome event is attributed (engine.learning.attribution).
    attribution_grace_ms: int = field(default=500, metadata={"env": "ARBITER_ATTRIBUTION_GRACE_MS"})
    dev: bool = field(default=False, metadata={"env": "ARBITER_DEV"})
    # A serving worker's garbage collector: start-up frozen, young collections rarer
    # (server.gc_pauses). `arbiter serve` turns it on; an app built in a test does not.
    gc_tuning: bool = field(default=False, metadata={"env": "ARBITER_GC_TUNING"})
    # The event intake on Redis Streams (docs/identity.md): shards, and whether to consume here.
    intake_shards: int = field(default=0, metadata={"env": "ARBITER_INTAKE_SHARDS"})
    intake_consume: bool = field(default=False, metadata={"env": "ARBITER_INTAKE_CONSUME"})
    # Keys, scopes, browsers, limits (docs/operations.md).
    keys_file: str | None = field(default=None, metadata={"env": "ARBITER_KEYS_FILE"})
    #: Also take keys from the Redis key store (`arbiter keys create`), re-read each reload interval.
    keys_redis: bool = field(default=False, metadata={"env": "ARBITER_KEYS_REDIS"})
    public_scopes: str | None = field(default=None, metadata={"env": "ARBITER_PUBLIC_SCOPES"})
    cors_origins: str | None = field(default=None, metadata={"env": "ARBITER_CORS_ORIGINS"})
    rate_limit: str | None = field(default=None, metadata={"env": "ARBITER_RATE_LIMIT"})
    public_rate_limit: str | None = field(
        default=None, metadata={"env": "ARBITER_PUBLIC_RATE_LIMIT"}
    )
    max_body_bytes: int = field(default=1 << 20, metadata={"env": "ARBITER_MAX_BODY_BYTES"})
    access_log_sample: float = field(default=1.0, metadata={"env": "ARBITER_ACCESS_LOG_SAMPLE"})
    #: The studio's try, scenarios and simulate run in this many worker processes
    #: (server/studio/pool.py), each job within the time limit.
    studio_workers: int = field(default=2, metadata={"env": "ARBITER_STUDIO_WORKERS"})
    studio_job_timeout_s: float = field(
        default=60.0, metadata={"env": "ARBITER_STUDIO_JOB_TIMEOUT_S"}
    )
    #: POST triggered decisions here too (engine.triggers.webhook), signed with the secret.
    trigger_webhook_url: str | None = field(
        default=None, metadata={"env": "ARBITER_TRIGGER_WEBHOOK_URL"}
    )
    trigger_webhook_secret: str | None = field(
        default=None, metadata={"env": "ARBITER_TRIGGER_WEBHOOK_SECRET"}
    )
    #: Shards of the trigger schedule, each under its own hash tag (docs/outcomes.md).
    trigger_shards: int = field(default=1, metadata={"env": "ARBITER_TRIGGER_SHARDS"})

    @classmethod
    def from_env(
        cls, environ: Mapping[str, str] | None = None, env_file: str | Path | None = ".env"
    ) -> Settings:
        """Read settings: a `.env` file first, the process environment over it."""
        values: dict[str, str] = {}
        if env_file is not None and Path(env_file).is_file():
            values.update({k: v for k, v in dotenv_values(env_file).items() if v is not None})
        values.update(os.environ if environ is None else environ)
        kwargs: dict[str, object] = {}
        for f in fields(cls):
            name = f.metadata["env"]
            raw = values.get(name)
            if raw is None or raw == "":
                continue
            kwargs[f.name] = _convert(name, raw, f.type)
        settings = cls(**kwargs)  # type: ignore[arg-type]
        settings.validate()
        return settings

    def validate(self) -> None:
        """Range checks that the types alone do not express."""
        if self.redis_timeout_ms <= 0:
            raise SettingsError("ARBITER_REDIS_TIMEOUT_MS must be a positive number of ms")
        if self.log_queue_max < 100:
            raise SettingsError("ARBITER_LOG_QUEUE_MAX must be at least 100")
        if self.intake_shards < 0 or (self.intake_consume and self.intake_shards < 1):
            raise SettingsError(
                "ARBITER_INTAKE_SHARDS must be at least 1 when ARBITER_INTAKE_CONSUME is on"
            )
        if self.decision_log_rotate_mb <= 0 or self.decision_log_rotate_s <= 0:
            raise SettingsError(
                "ARBITER_DECISION_LOG_ROTATE_MB and ARBITER_DECISION_LOG_ROTATE_S must be positive"
            )
        if self.decision_log not in ("on", "off"):
            raise SettingsError("ARBITER_DECISION_LOG must be 'on' or 'off'")
        if self.decision_log_compression not in ("zstd", "off"):
            raise SettingsError("ARBITER_DECISION_LOG_COMPRESSION must be 'zstd' or 'off'")
        if self.trigger_webhook_url is not None:
            if not self.trigger_webhook_url.startswith(("http://", "https://")):
                raise SettingsError(
                    "ARBITER_TRIGGER_WEBHOOK_URL must start with http:// or https://"
                )
            if not self.trigger_webhook_secret:
                raise SettingsError(
                    "ARBITER_TRIGGER_WEBHOOK_SECRET must be set with ARBITER_TRIGGER_WEBHOOK_URL"
                )
        if not 1 <= self.trigger_shards <= 1024:
            raise SettingsError("ARBITER_TRIGGER_SHARDS must be between 1 and 1024")
        if self.attribution_grace_ms < 0:
            raise SettingsError("ARBITER_ATTRIBUTION_GRACE_MS must not be negative")
        if self.learner not in ("inproc", "off"):
            raise SettingsError("ARBITER_LEARNER must be 'inproc' or 'off'")
        if not 0.0 <= self.access_log_sample <= 1.0:
            raise SettingsError("ARBITER_ACCESS_LOG_SAMPLE must be between 0 and 1")
        if self.max_body_bytes < 1024:
            raise SettingsError("ARBITER_MAX_BODY_BYTES must be at least 1024")
        if not 1 <= self.studio_workers <= 16:
            raise SettingsError("ARBITER_STUDIO_WORKERS must be between 1 and 16")
        if self.studio_job_timeout_s <= 0:
            raise SettingsError("ARBITER_STUDIO_JOB_TIMEOUT_S must be a positive number of seconds")
        try:
            self.key_ring()
        except KeyFileError as exc:
            raise SettingsError(str(exc)) from None
        if self.redis_url is not None and not self.redis_url.startswith(
            ("redis://", "rediss://", "unix://", "redis+cluster://", "rediss+cluster://")
        ):
            raise SettingsError(
                "ARBITER_REDIS_URL must start with redis://, rediss://, unix:// or redis+cluster://"
            )

    def key_ring(self) -> KeyRing:
        """The API keys these settings describe (the key file is read now)."""
        return KeyRing(
            self.admin_key,
            self.decide_key,
            keys_file=self.keys_file,
            public_scopes=parse_public_scopes(
                self.public_scopes, self.decide_key, self.keys_file, self.keys_redis
            ),
            default_rate_limit=_rate(self.rate_limit, "ARBITER_RATE_LIMIT"),
            public_rate_limit=_rate(self.public_rate_limit, "ARBITER_PUBLIC_RATE_LIMIT"),
        )


def _rate(text: str | None, name: str) -> RateLimit | None:
    return RateLimit.parse(text, name) if text else None


def _convert(name: str, raw: str, type_: object) -> object:
    text = str(type_)
    if "int" in text:
        try:
            return int(raw)
        except ValueError:
            raise SettingsError(f"{name} must be a whole number, got {raw!r}") from None
    if "float" in text:
        try:
            return float(raw)
        except ValueError:
            raise SettingsError(f"{name} must be a number, got {raw!r}") from None
    if "bool" in text:
        lowered = raw.strip().lower()
        if lowered in ("1", "true", "yes", "on"):
            return True
        if lowered in ("0", "false", "no", "off"):
            return False
        raise SettingsError(f"{name} must be true or false, got {raw!r}")
    return raw

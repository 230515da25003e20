"""Typed settings read from the environment, with embedded defaults for a fresh machine."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

CHANNELS = ("line", "email", "sms", "web_push", "slack", "topic")
TOPIC_CATEGORIES = (
    "FileProcessing",
    "MemberActivity",
    "CourseManagement",
    "PaymentUpdates",
    "SystemAlerts",
)


def _env(name: str, default: str = "") -> str:
    return os.environ.get(name, default).strip()


def _int(name: str, default: int) -> int:
    raw = _env(name)
    return int(raw) if raw else default


def _float(name: str, default: float) -> float:
    raw = _env(name)
    return float(raw) if raw else default


@dataclass(frozen=True)
class Settings:
    home: Path
    database_url: str
    broker_url: str
    """Empty when no broker is configured: the embedded Redis is used."""
    result_backend: str
    secret_key: str
    log_level: str
    quiet_hours_policy: str
    send_chunk_size: int
    bulk_insert_chunk: int
    max_payload_bytes: int
    send_max_retries: int
    send_backoff_max: int
    stale_claim_seconds: int
    release_interval_seconds: float
    public_base_url: str
    rate_limit_redis_url: str
    queue_prefix: str
    backends: dict[str, str] = field(default_factory=dict)

    @property
    def uses_embedded_broker(self) -> bool:
        return not self.broker_url


def _backend(channel: str, real: str, has_credentials: bool) -> str:
    chosen = _env(f"NOTIFIER_{channel.upper()}_BACKEND").lower()
    if chosen:
        return chosen
    return real if has_credentials else "outbox"


def channel_backends() -> dict[str, str]:
    """The backend per channel: explicit NOTIFIER_<CHANNEL>_BACKEND, else the real one when
    its credentials are set, else the outbox."""
    has_aws = bool(_env("AWS_ACCESS_KEY_ID") or _env("AWS_PROFILE"))
    email_real = "ses" if has_aws else "smtp"
    has_topic_arn = any(_env(f"NOTIFIER_TOPIC_ARN_{c.upper()}") for c in TOPIC_CATEGORIES)
    return {
        "line": _backend("line", "line", bool(_env("LINE_CHANNEL_ACCESS_TOKEN"))),
        "email": _backend("email", email_real, has_aws or bool(_env("SMTP_HOST"))),
        "sms": _backend("sms", "sns", has_aws),
        "web_push": _backend("web_push", "webpush", bool(_env("VAPID_PRIVATE_KEY"))),
        # Slack's credential is each tenant's own webhook URL, so it is switched on explicitly.
        "slack": _backend("slack", "slack", False),
        "topic": _backend("topic", "sns", has_aws and has_topic_arn),
    }


def normalize_database_url(url: str) -> str:
    """PostgreSQL URLs use the psycopg 3 driver, whatever spelling the user gave."""
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


def load_settings() -> Settings:
    home = Path(_env("NOTIFIER_HOME", ".notifier")).resolve()
    database_url = normalize_database_url(
        _env("DATABASE_URL") or f"sqlite:///{home / 'notifier.db'}"
    )
    broker_url = _env("CELERY_BROKER_URL") or _env("REDIS_URL")
    return Settings(
        home=home,
        database_url=database_url,
        broker_url=broker_url,
        result_backend=_env("CELERY_RESULT_BACKEND"),
        secret_key=_env("NOTIFIER_SECRET_KEY", "dev-insecure-secret-change-me"),
        log_level=_env("NOTIFIER_LOG_LEVEL", "INFO").upper(),
        quiet_hours_policy=_env("NOTIFIER_QUIET_HOURS_POLICY", "defer").lower(),
        send_chunk_size=_int("NOTIFIER_SEND_CHUNK_SIZE", 100),
        bulk_insert_chunk=_int("NOTIFIER_BULK_INSERT_CHUNK", 2000),
        max_payload_bytes=_int("NOTIFIER_MAX_PAYLOAD_BYTES", 256 * 1024),
        send_max_retries=_int("NOTIFIER_SEND_MAX_RETRIES", 8),
        send_backoff_max=_int("NOTIFIER_SEND_BACKOFF_MAX", 600),
        stale_claim_seconds=_int("NOTIFIER_STALE_CLAIM_SECONDS", 300),
        release_interval_seconds=_float("NOTIFIER_RELEASE_INTERVAL", 30.0),
        public_base_url=_env("NOTIFIER_PUBLIC_BASE_URL", "http://localhost:8000"),
        rate_limit_redis_url=_env("NOTIFIER_RATE_LIMIT_REDIS_URL"),
        # Several deployments (or test runs) can share one broker with distinct prefixes.
        queue_prefix=_env("NOTIFIER_QUEUE_PREFIX"),
        backends=channel_backends(),
    )


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return load_settings()


def reset_settings() -> None:
    """Forget the cached settings (tests and the dev launcher change the environment)."""
    get_settings.cache_clear()

"""Where the benchmark runs: the broker, the database, its queues and its channel backends.

Decided before any project module reads its settings, and handed to the worker
subprocesses as their environment.
"""

from __future__ import annotations

import os
import secrets
import uuid
from dataclasses import dataclass
from pathlib import Path

LINE_TOKEN = "bench-line-token"
SENDER = "Kyo Gym <notifications@kyo.app>"


@dataclass(frozen=True)
class Services:
    home: Path
    broker: str
    """"REDIS_URL" or "embedded redis"."""
    database: str
    """"postgresql", "sqlite", ..."""
    embedded_redis: bool
    queue_prefix: str


def configure(home: Path) -> Services:
    """Fill os.environ for this run: the real Redis from REDIS_URL (else an embedded one),
    the database from DATABASE_URL (else SQLite under `home`), a queue prefix of its own."""
    os.environ["NOTIFIER_HOME"] = str(home)
    embedded = not (os.environ.get("REDIS_URL") or os.environ.get("CELERY_BROKER_URL"))
    if embedded:
        from notifier.embedded import ensure_redis

        os.environ["REDIS_URL"] = ensure_redis(home)
    prefix = f"bench-{uuid.uuid4().hex[:8]}-"
    os.environ["NOTIFIER_QUEUE_PREFIX"] = prefix
    # The worker runs with `--loglevel WARNING`; the project's JSON logging takes its level
    # from NOTIFIER_LOG_LEVEL, so the same level is set there.
    os.environ["NOTIFIER_LOG_LEVEL"] = "WARNING"
    # The workers refuse to start without a signing key: one for this run.
    os.environ.setdefault("NOTIFIER_SECRET_KEY", secrets.token_urlsafe(48))
    database = os.environ.get("DATABASE_URL", "") or "sqlite"
    return Services(
        home=home,
        broker="embedded redis" if embedded else "REDIS_URL",
        database=database.split(":", 1)[0].split("+", 1)[0],
        embedded_redis=embedded,
        queue_prefix=prefix,
    )


def channel_env(line_url: str, smtp_host: str, smtp_port: int) -> None:
    """LINE and email go to the local peers through their real backends; the other
    channels to the outbox (the benchmark's events never select them)."""
    os.environ.update(
        {
            "NOTIFIER_LINE_BACKEND": "line",
            "LINE_API_BASE_URL": line_url,
            "LINE_CHANNEL_ACCESS_TOKEN": LINE_TOKEN,
            "NOTIFIER_EMAIL_BACKEND": "smtp",
            "SMTP_HOST": smtp_host,
            "SMTP_PORT": str(smtp_port),
            "NOTIFIER_EMAIL_FROM": SENDER,
            "NOTIFIER_SMS_BACKEND": "outbox",
            "NOTIFIER_WEB_PUSH_BACKEND": "outbox",
            "NOTIFIER_SLACK_BACKEND": "outbox",
            "NOTIFIER_TOPIC_BACKEND": "outbox",
        }
    )
    for name in ("SMTP_USERNAME", "SMTP_PASSWORD", "SMTP_STARTTLS"):
        os.environ.pop(name, None)

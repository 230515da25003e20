"""One send task per channel (`notifier.send_<channel>`), each carrying a chunk of ids."""

from __future__ import annotations

from typing import Any

from celery import Task, shared_task
from celery.utils.time import get_exponential_backoff_interval
from sqlalchemy.exc import OperationalError

from config.settings import CHANNELS, get_settings
from notifier.sending import send_chunk
from tasks import enqueue

# A database outage is retried with backoff instead of losing the task's work.
DB_RETRY: dict[str, Any] = {
    "autoretry_for": (OperationalError,),
    "retry_backoff": True,
    "retry_backoff_max": 300,
    "retry_jitter": True,
    "max_retries": 20,
}


def retry_countdown(retries: int, retry_after: float | None) -> float:
    """Exponential backoff with full jitter, capped; never sooner than Retry-After."""
    settings = get_settings()
    backoff = get_exponential_backoff_interval(
        factor=2, retries=retries, maximum=settings.send_backoff_max, full_jitter=True
    )
    return max(float(backoff), retry_after or 0.0, 1.0)


def run_send(task: Task, channel: str, delivery_ids: list[int]) -> dict[str, int]:
    settings = get_settings()
    final = task.request.retries >= settings.send_max_retries
    outcome = send_chunk(channel, delivery_ids, final_attempt=final)
    enqueue.send_deliveries(outcome.fallbacks)
    if outcome.retry_ids:
        raise task.retry(
            args=(outcome.retry_ids,),
            countdown=retry_countdown(task.request.retries, outcome.retry_after),
            max_retries=settings.send_max_retries,
        )
    return {"sent": outcome.sent, "failed": outcome.failed}


def _send_task(channel: str) -> Any:
    @shared_task(
        name=f"notifier.send_{channel}",
        bind=True,
        acks_late=True,
        **DB_RETRY,
    )
    def send(self: Task, delivery_ids: list[int]) -> dict[str, int]:
        return run_send(self, channel, delivery_ids)

    send.__doc__ = f"Send a chunk of {channel} deliveries."
    return send


SEND_TASKS: dict[str, Any] = {channel: _send_task(channel) for channel in CHANNELS}

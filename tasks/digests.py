"""Digest flush (run by Beat) and the send task of one digest."""

from __future__ import annotations

from typing import Any

from celery import Task, shared_task

from config.settings import get_settings
from notifier.digests import flush, send_digest
from tasks import enqueue
from tasks.send import DB_RETRY, retry_countdown


@shared_task(name="notifier.flush_digests", bind=True, acks_late=True)
def flush_digests(self: Task) -> int:
    """Group waiting deliveries into digests and send every digest that is due."""
    digest_ids = flush()
    enqueue.send_digests(digest_ids)
    return len(digest_ids)


@shared_task(
    name="notifier.send_digest",
    bind=True,
    acks_late=True,
    **DB_RETRY,
)
def send_digest_task(self: Task, digest_id: int) -> dict[str, Any]:
    settings = get_settings()
    final = self.request.retries >= settings.send_max_retries
    outcome = send_digest(digest_id, final_attempt=final)
    if outcome.status == "retry":
        raise self.retry(
            countdown=retry_countdown(self.request.retries, outcome.retry_after),
            max_retries=settings.send_max_retries,
        )
    return {"digest": digest_id, "status": outcome.status}

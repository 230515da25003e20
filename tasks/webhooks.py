"""`notifier.send_webhook`: one signed message to one tenant endpoint, retried with backoff
(as a send: NOTIFIER_SEND_MAX_RETRIES, NOTIFIER_SEND_BACKOFF_MAX), then a dead letter.

Registered as a delivery status hook: each committed status change of a tenant with
endpoints becomes one task per (endpoint, message), enqueued after the send's commit."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from celery import Task, shared_task

from config.settings import get_settings
from notifier.outbound_webhooks import (
    WebhookRefused,
    WebhookRetry,
    dead_letter,
    messages_for,
    post_message,
)
from notifier.status_hooks import StatusChange, on_delivery_status
from tasks import enqueue
from tasks.send import DB_RETRY, retry_countdown

log = logging.getLogger("notifier.webhooks")


@shared_task(
    name="notifier.send_webhook", bind=True, acks_late=True, ignore_result=True, **DB_RETRY
)
def send_webhook(self: Task, endpoint_id: str, message: dict[str, Any]) -> None:
    """POST one message; retried while the receiver is away, dead-lettered after the last try."""
    settings = get_settings()
    try:
        post_message(endpoint_id, message)
    except WebhookRetry as exc:
        if self.request.retries >= settings.send_max_retries:
            dead_letter(
                endpoint_id,
                message,
                f"gave up after {self.request.retries + 1} tries: {exc.reason}",
            )
            log.warning(
                "webhook dead-lettered", extra={"endpoint": endpoint_id, "error": exc.reason}
            )
            return
        raise self.retry(
            countdown=retry_countdown(self.request.retries, exc.retry_after),
            max_retries=settings.send_max_retries,
        ) from None
    except WebhookRefused as exc:
        dead_letter(endpoint_id, message, f"refused: {exc}")
        log.warning("webhook refused", extra={"endpoint": endpoint_id, "error": str(exc)})


@on_delivery_status
def enqueue_webhooks(changes: Sequence[StatusChange]) -> None:
    for endpoint_id, message in messages_for(changes):
        if not enqueue.send_webhook(endpoint_id, message):
            # Kept, not lost: `notifier dlq replay` sends it once the broker is back.
            dead_letter(endpoint_id, message, "broker unreachable when the status changed")

"""The one place that puts work on the broker, for every entry point.

`publish()`, `notify`, `POST /events`, SQS ingestion, the scans, the digest flush, dead
letter replay and the recovery tasks all start an event's canvas with `start_event`, and
send deliveries and digests with `send_deliveries` and `send_digests`. The broker-down rule
is written here once: whatever is enqueued is already committed in the database (an accepted
event, queued deliveries, a queued digest), so when the broker cannot be reached the call
logs a warning and returns False, and the recovery tasks (`notifier.requeue_stalled`,
`notifier.flush_digests`) pick the work up once the broker is back. Nothing is lost and the
caller is not failed for it.

The domain (notifier/) never imports this module or the Celery app: the entry points that
live there take it as an argument (see `notifier.pipeline.Enqueue`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

from celery import Signature, group
from kombu.exceptions import OperationalError as BrokerUnreachable

import worker  # noqa: F401  (configures the Celery app the tasks below are sent with)
from notifier.pipeline import Accepted, accept, check_event, store

log = logging.getLogger("notifier.enqueue")


def _enqueued(send: Callable[[], Any], what: str, **context: Any) -> bool:
    """Run one enqueue; on a broker outage log it and return False (the work waits, stored,
    for the recovery tasks)."""
    try:
        send()
    except BrokerUnreachable as exc:
        log.warning(
            f"broker unreachable: {what} stored, sent once the broker is back",
            extra={**context, "error": type(exc).__name__},
        )
        return False
    return True


def start_event(event_pk: int, **context: Any) -> bool:
    """Start the canvas of one accepted event (`notifier.resolve_recipients`)."""
    from tasks.pipeline import resolve_recipients

    return _enqueued(lambda: resolve_recipients.delay(event_pk), "event", **context)


def fan_out(signatures: Signature, what: str, **context: Any) -> bool:
    """Send a canvas a running step built (the group of an event's pages)."""
    return _enqueued(signatures.apply_async, what, **context)


def start_events(event_pks: Sequence[int]) -> int:
    """Start the canvas of several accepted events; how many were enqueued."""
    return sum(start_event(event_pk) for event_pk in event_pks)


def send_deliveries(chunks: Sequence[tuple[str, list[int]]]) -> bool:
    """Send chunks of queued delivery ids as one group of per-channel send tasks."""
    if not chunks:
        return True
    from tasks.send import SEND_TASKS

    sends = group(SEND_TASKS[channel].si(ids) for channel, ids in chunks)
    return _enqueued(sends.apply_async, "deliveries", count=sum(len(ids) for _, ids in chunks))


def send_webhook(endpoint_id: str, message: dict[str, Any]) -> bool:
    """Send one signed message to one tenant endpoint (`notifier.send_webhook`)."""
    from tasks.webhooks import send_webhook as task

    return _enqueued(
        lambda: task.delay(endpoint_id, message), "webhook message", endpoint=endpoint_id
    )


def send_digests(digest_ids: Sequence[int]) -> bool:
    """Send queued digests, one `notifier.send_digest` task each, as one group."""
    if not digest_ids:
        return True
    from tasks.digests import send_digest_task

    sends = group(send_digest_task.si(digest_id) for digest_id in digest_ids)
    return _enqueued(sends.apply_async, "digests", count=len(digest_ids))


def send_webhooks(messages: Sequence[tuple[str, dict[str, Any]]]) -> bool:
    """Send outbound webhook messages (`send_webhook` each). A message that finds the broker
    down is kept as a webhook dead letter (`notifier dlq replay` sends it later): the change
    it tells of is committed already."""
    from notifier.outbound_webhooks import dead_letter

    sent = True
    for endpoint_id, message in messages:
        if not send_webhook(endpoint_id, message):
            dead_letter(endpoint_id, message, "broker unreachable when the preferences changed")
            sent = False
    return sent


def notify_task() -> Any:
    """The `notifier.notify` task, bound to the configured app (`from notifier import notify`)."""
    from tasks.pipeline import notify

    return notify


def _started(accepted: Accepted, tenant: Any) -> Accepted:
    if accepted.event_pk is not None:
        start_event(accepted.event_pk, event_id=accepted.event_id, tenant=tenant)
    return accepted


def publish_outcome(event: dict[str, Any], tenant_id: str | None = None) -> Accepted:
    """`notifier.publish`: validate here (raises InvalidEvent; with `tenant_id`, an event of
    another tenant is invalid), store, start; how the event was taken."""
    return _started(store(check_event(event, tenant_id)), event.get("tenantId"))


def submit(event: dict[str, Any]) -> Accepted:
    """Accept (a rejection is stored, never raised) and start: SQS ingestion, replay."""
    return _started(accept(event), event.get("tenantId"))

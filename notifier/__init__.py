"""notifier: a Celery-based, multi-tenant, multi-channel notification pipeline.

Public API: `notify` (the Celery task; `notify.delay(event)`), `publish(event)` (validate in
the caller, then enqueue), and `InvalidEvent`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from notifier.events import InvalidEvent

if TYPE_CHECKING:
    from notifier.pipeline import Accepted

__all__ = ["InvalidEvent", "notify", "publish"]


def publish(event: dict[str, Any], *, tenant_id: str | None = None) -> str:
    """Validate `event` here (schema and directory), store it, start its canvas and return
    its event id. With `tenant_id` (an API key's tenant), an event of another tenant is
    invalid.

    Raises InvalidEvent listing every problem, so bad input fails at the caller. The event
    is stored before anything is enqueued: when the broker is unreachable, the event waits
    in the database and the recovery task starts it once the broker is back, instead of
    being dropped. A database outage raises to the caller.
    """
    return publish_outcome(event, tenant_id=tenant_id).event_id


def publish_outcome(event: dict[str, Any], *, tenant_id: str | None = None) -> Accepted:
    """`publish`, answering how the event was taken: accepted, or a duplicate (with an
    error on `eventId` when it reuses the id with other content: it is dropped)."""
    from tasks.enqueue import publish_outcome as publish_and_start

    return publish_and_start(event, tenant_id)


def __getattr__(name: str) -> Any:
    # The Celery task, looked up when first used: importing notifier does not configure
    # the Celery app (tasks.enqueue does, for the two names that need it).
    if name == "notify":
        from tasks.enqueue import notify_task

        return notify_task()
    raise AttributeError(name)

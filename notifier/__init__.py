"""notifier: a Celery-based, multi-tenant, multi-channel notification pipeline.

Public API: `notify` (the Celery task; `notify.delay(event)`), `publish(event)` (validate in
the caller, then enqueue), and `InvalidEvent`.
"""

from __future__ import annotations

import logging
from typing import Any

from notifier.events import InvalidEvent

log = logging.getLogger("notifier.publish")

__all__ = ["InvalidEvent", "notify", "publish"]


def publish(event: dict[str, Any]) -> str:
    """Validate `event` here (schema and directory), store it, enqueue its planning and
    return its event id.

    Raises InvalidEvent listing every problem, so bad input fails at the caller. The event
    is stored before anything is enqueued: when the broker is unreachable, the event waits
    in the database and is planned by the recovery task once the broker is back, instead
    of being dropped. A database outage raises to the caller.
    """
    from kombu.exceptions import OperationalError

    from notifier.pipeline import check_event, store

    stored = store(check_event(event))
    if stored.event_pk is not None:
        _notify_task()  # configures the Celery app
        from tasks.pipeline import plan_event

        try:
            plan_event.delay(stored.event_pk)
        except OperationalError:
            log.warning(
                "broker unreachable: event stored, it is planned once the broker is back",
                extra={"event_id": stored.event_id},
            )
    return stored.event_id


def _notify_task() -> Any:
    import worker  # noqa: F401  (configures the Celery app the task is bound to)
    from tasks.pipeline import notify

    return notify


def __getattr__(name: str) -> Any:
    if name == "notify":
        return _notify_task()
    raise AttributeError(name)

"""notifier: a Celery-based, multi-tenant, multi-channel notification pipeline.

Public API: `notify` (the Celery task; `notify.delay(event)`), `publish(event)` (validate in
the caller, then enqueue), and `InvalidEvent`.
"""

from __future__ import annotations

from typing import Any

from notifier.events import InvalidEvent

__all__ = ["InvalidEvent", "notify", "publish"]


def publish(event: dict[str, Any]) -> str:
    """Validate `event` here (schema and directory), enqueue it, return its event id.

    Raises InvalidEvent listing every problem, so bad input fails at the caller.
    """
    from notifier.pipeline import check_event

    valid = check_event(event)
    notify = _notify_task()
    notify.delay({**event, "eventId": valid.event_id})
    return valid.event_id


def _notify_task() -> Any:
    import worker  # noqa: F401  (configures the Celery app the task is bound to)
    from tasks.pipeline import notify

    return notify


def __getattr__(name: str) -> Any:
    if name == "notify":
        return _notify_task()
    raise AttributeError(name)

"""Tasks run by Beat (see beat_schedule.py)."""

from __future__ import annotations

from celery import Task, shared_task

from notifier.pipeline import release_deferred, requeue_stalled
from tasks.send import dispatch


@shared_task(name="notifier.release_deferred", bind=True, acks_late=True)
def release_deferred_task(self: Task) -> int:
    """Queue the deferred (quiet-hours) deliveries whose time has come."""
    chunks = release_deferred()
    dispatch(chunks)
    return sum(len(ids) for _, ids in chunks)


@shared_task(name="notifier.requeue_stalled", bind=True, acks_late=True)
def requeue_stalled_task(self: Task) -> int:
    """Re-send deliveries left behind by a lost task (the claim keeps it exactly once)."""
    chunks = requeue_stalled()
    dispatch(chunks)
    return sum(len(ids) for _, ids in chunks)

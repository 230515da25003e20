"""Tasks run by Beat (see beat_schedule.py)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

from celery import Task, shared_task

from notifier.models import utcnow
from notifier.pipeline import release_deferred, requeue_stalled, unplanned_events
from notifier.report import export_all
from notifier.retention import cleanup
from notifier.scans import ScanResult, parse_moment, scan_course_reminders, scan_membership_expiry
from tasks import enqueue


@shared_task(name="notifier.release_deferred", bind=True, acks_late=True)
def release_deferred_task(self: Task) -> int:
    """Queue the deferred (quiet-hours) deliveries whose time has come."""
    chunks = release_deferred()
    enqueue.send_deliveries(chunks)
    return sum(len(ids) for _, ids in chunks)


@shared_task(name="notifier.requeue_stalled", bind=True, acks_late=True)
def requeue_stalled_task(self: Task) -> int:
    """Re-plan events and re-send deliveries left behind by a lost task (planning is
    idempotent and the delivery claim keeps each send exactly once)."""
    events = unplanned_events()
    enqueue.start_events(events)
    chunks = requeue_stalled()
    enqueue.send_deliveries(chunks)
    return len(events) + sum(len(ids) for _, ids in chunks)


def run_scan(scan: Callable[[dt.datetime], ScanResult], now: dt.datetime) -> dict[str, int]:
    """Run a scan and start the canvas of every reminder it published."""
    result = scan(now)
    enqueue.start_events(result.event_pks)
    return result.counts()


@shared_task(name="notifier.scan_membership_expiry", bind=True, acks_late=True)
def scan_membership_expiry_task(self: Task, now: str | None = None) -> dict[str, int]:
    """Publish the membership-expiry reminders due now (or at `now`, an ISO time)."""
    return run_scan(scan_membership_expiry, parse_moment(now))


@shared_task(name="notifier.scan_course_reminders", bind=True, acks_late=True)
def scan_course_reminders_task(self: Task, now: str | None = None) -> dict[str, int]:
    """Publish the class reminders due now (or at `now`, an ISO time)."""
    return run_scan(scan_course_reminders, parse_moment(now))


@shared_task(name="notifier.cleanup", bind=True, acks_late=True)
def cleanup_task(self: Task) -> dict[str, int]:
    """Delete the rows older than the retention period, in batches."""
    return cleanup(utcnow())


@shared_task(name="notifier.export_cloudwatch", bind=True, acks_late=True)
def export_cloudwatch_task(self: Task) -> int:
    """Put each tenant's closed days into CloudWatch (off unless NOTIFIER_CLOUDWATCH_ENABLED)."""
    return export_all()

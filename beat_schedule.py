"""The Beat schedule, as data: entry -> task name and interval in seconds (from settings).

Every entry expires after one interval (at least a minute, so a worker whose clock is a
little ahead of Beat's does not drop every run): when the workers are away, Beat's ticks do
not pile up into a burst of identical runs on their return. Nothing is lost: the scans and
sweeps are idempotent and the next run catches up.
"""

from __future__ import annotations

from typing import Any

from config.settings import Settings

MIN_EXPIRES = 60.0


def beat_schedule(settings: Settings) -> dict[str, dict[str, Any]]:
    intervals = {
        "scan-membership-expiry": (
            "notifier.scan_membership_expiry",
            settings.expiry_scan_interval_seconds,
        ),
        "scan-course-reminders": (
            "notifier.scan_course_reminders",
            settings.reminder_scan_interval_seconds,
        ),
        "release-deferred": ("notifier.release_deferred", settings.release_interval_seconds),
        "requeue-stalled": ("notifier.requeue_stalled", float(settings.stale_claim_seconds)),
        "flush-digests": ("notifier.flush_digests", settings.digest_flush_interval_seconds),
        "cleanup": ("notifier.cleanup", settings.cleanup_interval_seconds),
        # A no-op unless NOTIFIER_CLOUDWATCH_ENABLED: each tenant's closed days, once.
        "export-cloudwatch": ("notifier.export_cloudwatch", 3600.0),
    }
    return {
        entry: {
            "task": task,
            "schedule": seconds,
            "options": {"expires": max(seconds, MIN_EXPIRES)},
        }
        for entry, (task, seconds) in intervals.items()
    }

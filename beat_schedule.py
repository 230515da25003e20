"""The Beat schedule, as data: task name -> interval in seconds (from settings)."""

from __future__ import annotations

from typing import Any

from config.settings import Settings


def beat_schedule(settings: Settings) -> dict[str, dict[str, Any]]:
    return {
        "release-deferred": {
            "task": "notifier.release_deferred",
            "schedule": settings.release_interval_seconds,
        },
        "requeue-stalled": {
            "task": "notifier.requeue_stalled",
            "schedule": float(settings.stale_claim_seconds),
        },
    }

"""The Beat schedule is data built from settings, and every entry names a real task."""

from __future__ import annotations

import importlib

import pytest
from celery import Celery

from beat_schedule import MIN_EXPIRES, beat_schedule
from config.settings import load_settings

TASKS = {
    "scan-membership-expiry": "notifier.scan_membership_expiry",
    "scan-course-reminders": "notifier.scan_course_reminders",
    "release-deferred": "notifier.release_deferred",
    "requeue-stalled": "notifier.requeue_stalled",
    "flush-digests": "notifier.flush_digests",
    "cleanup": "notifier.cleanup",
    "export-cloudwatch": "notifier.export_cloudwatch",
}


def test_the_schedule_runs_every_periodic_task_at_its_default_interval(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in (
        "NOTIFIER_EXPIRY_SCAN_INTERVAL",
        "NOTIFIER_REMINDER_SCAN_INTERVAL",
        "NOTIFIER_RELEASE_INTERVAL",
        "NOTIFIER_STALE_CLAIM_SECONDS",
        "NOTIFIER_DIGEST_FLUSH_INTERVAL",
        "NOTIFIER_CLEANUP_INTERVAL",
    ):
        monkeypatch.delenv(name, raising=False)
    schedule = beat_schedule(load_settings())
    assert {entry: spec["task"] for entry, spec in schedule.items()} == TASKS
    assert {entry: spec["schedule"] for entry, spec in schedule.items()} == {
        "scan-membership-expiry": 600.0,
        "scan-course-reminders": 60.0,
        "release-deferred": 30.0,
        "requeue-stalled": 300.0,
        "flush-digests": 5.0,
        "cleanup": 3600.0,
        "export-cloudwatch": 3600.0,
    }


def test_intervals_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NOTIFIER_EXPIRY_SCAN_INTERVAL", "900")
    monkeypatch.setenv("NOTIFIER_REMINDER_SCAN_INTERVAL", "30")
    monkeypatch.setenv("NOTIFIER_DIGEST_FLUSH_INTERVAL", "2.5")
    monkeypatch.setenv("NOTIFIER_CLEANUP_INTERVAL", "7200")
    schedule = beat_schedule(load_settings())
    assert schedule["scan-membership-expiry"]["schedule"] == 900.0
    assert schedule["scan-course-reminders"]["schedule"] == 30.0
    assert schedule["flush-digests"]["schedule"] == 2.5
    assert schedule["cleanup"]["schedule"] == 7200.0


def test_a_run_expires_after_its_interval_but_never_within_a_minute(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("NOTIFIER_DIGEST_FLUSH_INTERVAL", "5")
    monkeypatch.setenv("NOTIFIER_CLEANUP_INTERVAL", "7200")
    schedule = beat_schedule(load_settings())
    assert schedule["flush-digests"]["options"] == {"expires": MIN_EXPIRES}
    assert schedule["cleanup"]["options"] == {"expires": 7200.0}


def test_every_scheduled_task_is_registered() -> None:
    app = Celery("schedule-check", set_as_current=False)
    for module in ("tasks.pipeline", "tasks.send", "tasks.scheduled", "tasks.digests"):
        importlib.import_module(module)
    app.finalize()
    assert set(TASKS.values()) <= set(app.tasks)


def test_scan_offsets_and_hour_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NOTIFIER_EXPIRY_DAYS", "1, 14,3")
    monkeypatch.setenv("NOTIFIER_REMINDER_HOURS", "2,48")
    monkeypatch.setenv("NOTIFIER_EXPIRY_HOUR", "8")
    monkeypatch.setenv("NOTIFIER_RETENTION_DAYS", "30")
    settings = load_settings()
    assert settings.expiry_days == (14, 3, 1)
    assert settings.reminder_hours == (48, 2)
    assert settings.expiry_hour == 8
    assert settings.retention_days == 30


def test_scan_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("NOTIFIER_EXPIRY_DAYS", "NOTIFIER_REMINDER_HOURS", "NOTIFIER_EXPIRY_HOUR"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("NOTIFIER_RETENTION_DAYS", raising=False)
    settings = load_settings()
    assert (settings.expiry_days, settings.reminder_hours) == ((7, 3, 1), (24, 2))
    assert (settings.expiry_hour, settings.retention_days) == (9, 90)


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("NOTIFIER_EXPIRY_DAYS", "7,three", "comma-separated whole numbers"),
        ("NOTIFIER_EXPIRY_DAYS", "7,0", "each 1 or more"),
        ("NOTIFIER_REMINDER_HOURS", " , ", "at least one"),
        ("NOTIFIER_EXPIRY_HOUR", "24", "an hour from 0 to 23"),
    ],
)
def test_bad_scan_settings_fail_with_the_variables_name(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str, message: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ValueError, match=message) as error:
        load_settings()
    assert name in str(error.value)

"""Shared test helpers: a small directory, events, and polling."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

T = TypeVar("T")
TENANT = "gym-a"
CELERY = [sys.executable, "-m", "celery", "-A", "worker"]
"""The start of a command line for this project's Celery app (worker, beat, purge...)."""


def wait_for(probe: Callable[[], T], timeout: float = 30.0, interval: float = 0.1) -> T:
    """Poll until probe() is truthy; fail with the last value when the time is up."""
    deadline = time.monotonic() + timeout
    value = probe()
    while not value:
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s (last value: {value!r})")
        time.sleep(interval)
        value = probe()
    return value


def person(uid: str, tenant: str = TENANT, **extra: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "id": uid,
        "tenantId": tenant,
        "name": f"Person {uid}",
        "role": "member",
        "email": f"{uid}@example.com",
        "phone": "+886912345678",
        "lineUserId": f"U{uid:0>32}"[:33],
        "locale": "en",
        "preferences": {
            "priority": {"high": ["line", "sms"], "medium": ["line", "email"], "low": ["web_push"]}
        },
    }
    doc.update(extra)
    return doc


def directory(*users: dict[str, Any], tenant: str = TENANT, **tenant_extra: Any) -> dict[str, Any]:
    return {
        "tenants": [
            {
                "id": tenant,
                "name": "Kyo Gym A",
                "timezone": "Asia/Taipei",
                "locale": "en",
                **tenant_extra,
            }
        ],
        "users": list(users),
    }


def event(
    event_type: str = "payment.success",
    user: str | None = "u1",
    tenant: str = TENANT,
    **overrides: Any,
) -> dict[str, Any]:
    from tests.unit.samples import SAMPLE_DATA

    ev: dict[str, Any] = {
        "eventType": event_type,
        "tenantId": tenant,
        "timestamp": "2026-11-22T09:00:00+08:00",
        "source": "kyo.test",
        "data": dict(SAMPLE_DATA[event_type]),
        "metadata": {"userId": user} if user else {},
    }
    ev.update(overrides)
    return ev


@contextmanager
def environment(values: dict[str, str], *, pin_backends: bool = True) -> Iterator[None]:
    """Environment variables for a block; the cached settings are reloaded on the way in and
    out. Channel backends are pinned as they are unless told otherwise (AWS credentials
    would switch them)."""
    from config.settings import get_settings, reset_settings

    if pin_backends:
        pinned = {f"NOTIFIER_{ch.upper()}_BACKEND": b for ch, b in get_settings().backends.items()}
        values = {**pinned, **values}
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    reset_settings()
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        reset_settings()


def broker_unreachable(monkeypatch: Any) -> None:
    """Every task the Celery app sends fails as it does against a Redis that refuses the
    connection (kombu's OperationalError), whichever entry point sends it."""
    from kombu.exceptions import OperationalError

    import worker

    def refused(*args: Any, **kwargs: Any) -> None:
        raise OperationalError("Error 111 connecting to 127.0.0.1:6379. Connection refused.")

    monkeypatch.setattr(worker.app, "send_task", refused)

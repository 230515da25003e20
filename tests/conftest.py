from __future__ import annotations

import os
import secrets
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import services

_HOME = Path(tempfile.mkdtemp(prefix="notifier-test-"))
# Decided before any project module reads the environment.
_PG_DATABASES = services.configure(_HOME)
os.environ.setdefault("NOTIFIER_SEND_BACKOFF_MAX", "2")
# Queues of our own: test sessions running at once on one broker never take each other's tasks.
os.environ.setdefault("NOTIFIER_QUEUE_PREFIX", f"test-{uuid.uuid4().hex[:8]}-")
os.environ.setdefault("NOTIFIER_SEND_MAX_RETRIES", "3")
# A real key per session (the app, workers and Beat refuse to start without one), and the
# local peers the channels are tested against live on 127.0.0.1 over http.
os.environ.setdefault("NOTIFIER_SECRET_KEY", secrets.token_urlsafe(48))
os.environ.setdefault("NOTIFIER_ALLOW_PRIVATE_URLS", "1")


def pytest_report_header() -> list[str]:
    from config.settings import get_settings

    settings = get_settings()
    return [
        f"notifier database: {settings.database_url.split('@')[-1]}",
        f"notifier broker: {settings.broker_url or 'embedded redis'}",
    ]


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    from notifier.db import dispose_engines
    from notifier.embedded import stop_redis

    dispose_engines()
    for name in _PG_DATABASES:
        services.drop_postgres_database(name)
    stop_redis(_HOME)


@pytest.fixture(scope="session")
def migrated() -> None:
    from notifier.migrate import upgrade

    upgrade()


@pytest.fixture
def db(migrated: None) -> Iterator[None]:
    """An empty database for each test."""
    from notifier.db import get_engine
    from notifier.models import Base

    engine = get_engine()
    with engine.begin() as conn:
        for table in reversed(Base.metadata.sorted_tables):
            conn.execute(table.delete())
    yield


@pytest.fixture(scope="session")
def celery_app():  # type: ignore[no-untyped-def]
    import worker

    worker.app.control.purge()
    return worker.app


@pytest.fixture(scope="session")
def celery_worker(celery_app, migrated):  # type: ignore[no-untyped-def]
    """A real Celery worker (threads pool) consuming the real broker."""
    from celery.contrib.testing.worker import start_worker

    with start_worker(
        celery_app, pool="threads", concurrency=4, perform_ping_check=False, shutdown_timeout=30
    ) as worker:
        yield worker

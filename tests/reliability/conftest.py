"""Fixtures of the reliability suite: sizing (CI vs `make reliability`), findings printed at
the end of the run, the local peers with their credentials, and a VAPID key pair."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest

from tests.peers.push import vapid_keys
from tests.reliability import logcapture

FULL = os.environ.get("NOTIFIER_RELIABILITY_FULL", "").strip().lower() in ("1", "true", "yes")
"""`make reliability`: the issue's full sizes. Otherwise CI sizes (each test says which)."""
BROADCAST_SIZE = 5000 if FULL else 500
"""People in the worker-kill broadcasts (the issue's 5,000 under `make reliability`)."""
OUTAGE_SIZE = 5000 if FULL else 200
"""People in the broadcasts that meet a broker or database outage."""
LINE_TOKEN = "rel-line-token-4be1c9d2e7"
VAPID_SUBJECT = "mailto:ops@example.com"
_findings: list[str] = []


def pytest_configure(config: pytest.Config) -> None:
    # Capture from here on if tests/conftest.py did not load the plugin already: this
    # conftest is imported during collection, before any test of the session runs.
    if not config.pluginmanager.has_plugin("tests.reliability.logcapture"):
        config.pluginmanager.register(logcapture, "tests.reliability.logcapture")


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if _findings:
        terminalreporter.section(f"reliability findings ({'full' if FULL else 'CI'} size)")
        for line in _findings:
            terminalreporter.write_line(line)


def finding(text: str) -> None:
    """A number a test measured (duplicates, requests), printed in the run's summary."""
    _findings.append(text)


VAPID_PRIVATE, VAPID_PUBLIC, _ = vapid_keys()
logcapture.secret(LINE_TOKEN, VAPID_PRIVATE)


@pytest.fixture
def postgres() -> str:
    """The session's PostgreSQL URL; worker subprocesses and proxies need a server."""
    from config.settings import get_settings

    url = get_settings().database_url
    if not url.startswith("postgresql"):
        pytest.skip("worker subprocess tests need PostgreSQL (DATABASE_URL)")
    return url


@pytest.fixture
def line_peer() -> Iterator[Any]:
    from tests.peers.line import LinePeer

    peer = LinePeer(tokens={LINE_TOKEN}).start()
    try:
        yield peer
    finally:
        peer.stop()


@pytest.fixture
def push_service() -> Iterator[Any]:
    from tests.peers.push import PushService

    service = PushService(subject=VAPID_SUBJECT, vapid_public_key=VAPID_PUBLIC).start()
    try:
        yield service
    finally:
        service.stop()


def line_env(peer: Any) -> dict[str, str]:
    return {
        "NOTIFIER_LINE_BACKEND": "line",
        "LINE_API_BASE_URL": peer.url,
        "LINE_CHANNEL_ACCESS_TOKEN": LINE_TOKEN,
    }


def web_push_env() -> dict[str, str]:
    return {
        "NOTIFIER_WEB_PUSH_BACKEND": "webpush",
        "VAPID_PRIVATE_KEY": VAPID_PRIVATE,
        "VAPID_SUBJECT": VAPID_SUBJECT,
    }

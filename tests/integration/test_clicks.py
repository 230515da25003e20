"""Honest click counts: the buttons of LINE Flex bubbles and buttons templates are tracked
like the links of text and HTML, a replayed link counts once per delivery in the click
window, and only the links the templates produce are tracked (a URL typed into a free-text
field stays as it was written)."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select, update

from channels import registry
from config.settings import get_settings
from notifier import notify
from notifier.db import session_scope
from notifier.directory import import_document
from notifier.models import Click, OutboxMessage
from notifier.report import report
from notifier.signing import verify
from notifier.web.app import create_app
from notifier.web.links import CLICK_WINDOW
from tests.helpers import TENANT, directory, event, person
from tests.integration.conftest import wait_settled
from tests.peers.line import LinePeer

pytestmark = pytest.mark.usefixtures("db", "celery_worker")
LINE_TOKEN = "tenant-line-token"
WEBSITE = "https://gym.example"
BRANDING = {"website_url": WEBSITE}


@pytest.fixture(scope="module")
def line_peer() -> Iterator[LinePeer]:
    peer = LinePeer(tokens={LINE_TOKEN}).start()
    try:
        yield peer
    finally:
        peer.stop()


@pytest.fixture
def real_line(line_peer: LinePeer, monkeypatch: pytest.MonkeyPatch) -> LinePeer:
    line_peer.reset(tokens={LINE_TOKEN})
    monkeypatch.setenv("LINE_API_BASE_URL", line_peer.url)
    monkeypatch.setitem(get_settings().backends, "line", "line")
    registry.reset_channels()
    return line_peer


@pytest.fixture
def web() -> Iterator[TestClient]:
    with TestClient(create_app()) as client:
        yield client


def _uris(value: Any) -> list[str]:
    """Every `uri` of the URI actions in LINE messages, wherever they nest."""
    if isinstance(value, dict):
        found = [value["uri"]] if value.get("type") == "uri" and "uri" in value else []
        return found + [uri for child in value.values() for uri in _uris(child)]
    if isinstance(value, list):
        return [uri for child in value for uri in _uris(child)]
    return []


def _click_path(url: str) -> str:
    parts = urlsplit(url)
    assert f"{parts.scheme}://{parts.netloc}" == get_settings().public_base_url, url
    assert parts.path.startswith("/c/"), url
    return parts.path


def _line_buttons(peer: LinePeer, event_type: str, data: dict[str, Any] | None = None) -> list[str]:
    import_document(directory(person("u1"), lineChannelAccessToken=LINE_TOKEN, branding=BRANDING))
    ev = event(event_type, metadata={"userId": "u1", "channels": ["line"]})
    if data:
        ev["data"].update(data)
    assert notify.delay(ev).get(timeout=30)["status"] == "accepted"
    [row] = [r for r in wait_settled(expected=1, timeout=60) if r.channel == "line"]
    assert row.status == "sent", row.reason
    [request] = _pushes(peer)
    return _uris(request.messages)


def _pushes(peer: LinePeer) -> list[Any]:
    return [r for r in peer.requests if r.method == "POST"]


@pytest.mark.parametrize(
    ("event_type", "kind", "targets"),
    [
        ("member.membership_expiring", "flex", ("/membership/renew", "/profile")),
        ("course.reminder", "template", ("/courses", "/courses/cancel")),
    ],
)
def test_line_buttons_are_tracked_and_counted_by_the_report(
    real_line: LinePeer, web: TestClient, event_type: str, kind: str, targets: tuple[str, ...]
) -> None:
    uris = _line_buttons(real_line, event_type)
    [request] = _pushes(real_line)
    assert [m["type"] for m in request.messages] == [kind]
    assert len(uris) == len(targets)
    assert all(len(uri) <= 1000 for uri in uris)  # LINE's limit for a URI action
    followed = []
    for uri, path in zip(uris, targets, strict=True):
        token = _click_path(uri).removeprefix("/c/")
        target = verify(token, "click")
        assert target["c"] == "line" and target["e"] == event_type
        assert target["u"].startswith(f"{WEBSITE}{path}?utm_source=line")
        response = web.get(_click_path(uri), follow_redirects=False)
        assert response.status_code == 302 and response.headers["location"] == target["u"]
        followed.append(target["u"])
    doc = report(TENANT, days=7)
    # Two buttons of one message pressed: one delivery clicked (within the window).
    assert (doc["totalSent"], doc["totalClicked"]) == (1, 1), doc
    with session_scope() as session:
        assert [c.url for c in session.scalars(select(Click))] == followed[:1]


def test_a_replayed_link_counts_once_per_delivery_and_window(
    real_line: LinePeer, web: TestClient
) -> None:
    [renew, _] = _line_buttons(real_line, "member.membership_expiring")
    for _ in range(5):
        assert web.get(_click_path(renew), follow_redirects=False).status_code == 302
    with session_scope() as session:
        [click] = session.scalars(select(Click))
        # The window has passed: the same person coming back is a new click.
        session.execute(
            update(Click).values(created_at=click.created_at - CLICK_WINDOW - dt.timedelta(1))
        )
    assert web.get(_click_path(renew), follow_redirects=False).status_code == 302
    with session_scope() as session:
        assert len(session.scalars(select(Click)).all()) == 2


def test_urls_in_free_text_are_not_tracked() -> None:
    """The template's own link (retryUrl, the website) is tracked; a URL that arrived in
    the reason text is sent as written, never signed into a redirect from our domain."""
    everywhere = {"priority": {"high": ["line", "email"]}}
    import_document(directory(person("u1", preferences=everywhere), branding=BRANDING))
    typed = "https://phish.example/verify"
    ev = event(
        "payment.failed",
        metadata={"userId": "u1", "channels": ["email", "line"], "priority": "high"},
    )
    ev["data"]["reason"] = f"card declined, see {typed}"
    notify.delay(ev).get(timeout=30)
    wait_settled(expected=2, timeout=60)
    with session_scope() as session:
        stored = {m.channel: m for m in session.scalars(select(OutboxMessage))}
    assert set(stored) >= {"email", "line"}
    retry_url = ev["data"]["retryUrl"]
    for channel, message in stored.items():
        bodies = [message.body_text or "", message.body_html or ""]
        assert any(typed in body for body in bodies), channel  # as written
        signed = [verify(token, "click")["u"] for body in bodies for token in _tokens(body)]
        assert typed not in signed, channel
        assert retry_url in signed and retry_url not in "".join(bodies), channel


def _tokens(body: str) -> list[str]:
    base = get_settings().public_base_url
    return re.findall(re.escape(base) + r"/c/([A-Za-z0-9_-]+\.[A-Za-z0-9_-]+)", body)

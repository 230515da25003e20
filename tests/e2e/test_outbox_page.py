"""The dev outbox page in a real browser: events go through the worker to the outbox
backend, uvicorn serves the page, headless Chromium renders it to test-artifacts/outbox.png
and its DOM shows each message as the person would see it."""

from __future__ import annotations

import html
import shutil
import socket
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import uvicorn
from sqlalchemy import select

from notifier import publish
from notifier.db import session_scope
from notifier.directory import import_document
from notifier.models import OutboxMessage
from notifier.web.app import create_app
from tests.helpers import directory, event, person, wait_for
from tests.integration.conftest import wait_settled

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)


def chromium_binary() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    return None


@pytest.fixture
def server() -> Iterator[str]:
    """The web app (outbox page on) in uvicorn on a free local port; yields its base URL."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(create_app(outbox_page=True), log_level="warning", lifespan="off")
    uvicorn_server = uvicorn.Server(config)
    thread = threading.Thread(target=uvicorn_server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    wait_for(lambda: uvicorn_server.started, timeout=15)
    yield f"http://127.0.0.1:{port}"
    uvicorn_server.should_exit = True
    thread.join(timeout=15)
    sock.close()


def chromium(binary: str, profile: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [binary, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args],
        capture_output=True,
        text=True,
        timeout=90,
    )


@pytest.mark.usefixtures("db", "celery_worker")
def test_outbox_page_renders_every_channel(server: str, tmp_path: Path) -> None:
    binary = chromium_binary()
    if binary is None:
        pytest.skip("no chromium binary (apt-get install chromium) to render the outbox page")
    import_document(directory(person("u1", name="Amy")))
    publish(event("payment.success", eventId="outbox-payment"))  # LINE text + email
    publish(event("member.membership_expiring", eventId="outbox-expiring"))  # LINE Flex + email
    critical = {"userId": "u1", "priority": "high"}
    publish(event("payment.failed", eventId="outbox-failed", metadata=critical))  # LINE + SMS
    wait_settled(expected=8)
    with session_scope() as session:
        stored = {(m.channel, m.event_type): m for m in session.scalars(select(OutboxMessage))}
    email = stored[("email", "member.membership_expiring")]
    sms = stored[("sms", "payment.failed")]
    assert stored[("line", "member.membership_expiring")].payload["line_messages"]

    dom = chromium(binary, tmp_path / "profile", "--dump-dom", f"{server}/outbox").stdout
    assert html.escape(email.subject or "", quote=False) in dom
    assert 'class="mail"' in dom and "srcdoc=" in dom  # the HTML body, sandboxed
    first_sms_line = (sms.body_text or "").splitlines()[0]
    assert first_sms_line and html.escape(first_sms_line, quote=False) in dom
    assert 'class="sms-bubble"' in dom
    assert 'class="flex"' in dom and "Membership expiry reminder" in dom  # the Flex bubble
    assert 'class="line-bubble"' in dom  # a plain LINE text message

    filtered = chromium(
        binary, tmp_path / "profile", "--dump-dom", f"{server}/outbox?event_type=payment.failed"
    ).stdout
    assert 'class="sms-bubble"' in filtered and "Membership expiry reminder" not in filtered

    ARTIFACTS.mkdir(exist_ok=True)
    screenshot = ARTIFACTS / "outbox.png"
    screenshot.unlink(missing_ok=True)
    shot = chromium(
        binary,
        tmp_path / "profile",
        f"--screenshot={screenshot}",
        "--window-size=1280,2000",
        "--hide-scrollbars",
        f"{server}/outbox",
    )
    assert screenshot.exists(), shot.stderr[-2000:]
    data = screenshot.read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n")
    assert len(data) > 30_000  # a rendered page, not a blank canvas


# Elements of a message card that stick out of it, or whose text is wider than their box
# (cut off by the card's overflow: hidden): long links must wrap instead.
OVERFLOWING = """() => [...document.querySelectorAll('.card')].flatMap(card => {
  const edge = card.getBoundingClientRect().right + 1;
  return [...card.querySelectorAll('*')]
    .filter(el => el.tagName !== 'IFRAME')
    .filter(el => el.getBoundingClientRect().right > edge || el.scrollWidth > el.clientWidth + 1)
    .map(el => el.className || el.tagName);
})"""


@pytest.mark.usefixtures("db", "celery_worker")
def test_outbox_page_wraps_long_links(server: str) -> None:
    binary = chromium_binary()
    if binary is None:
        pytest.skip("no chromium binary (make browser) to render the outbox page")
    sync_api = pytest.importorskip("playwright.sync_api")
    import_document(directory(person("u1", name="Amy")))
    long_link = "https://pay.example.com/retry/" + "a1b2c3d4" * 40  # one 350-character word
    failed = event("payment.failed", eventId="outbox-long-link", metadata={"userId": "u1"})
    failed["data"]["retryUrl"] = long_link
    failed["data"]["reason"] = "declined, see " + long_link  # free text: stays as written
    failed["metadata"]["priority"] = "high"
    publish(failed)  # LINE (tracked link, the free-text URL) and SMS
    publish(event("member.membership_expiring", eventId="outbox-long-flex"))
    wait_settled(expected=4)
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=binary, args=["--no-sandbox", "--disable-gpu"]
        )
        page = browser.new_page(viewport={"width": 1280, "height": 1200})
        page.goto(f"{server}/outbox")
        assert page.locator(".line-bubble").count() >= 1  # the page shows the messages
        assert long_link in page.content()
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "outbox-long-links.png"), full_page=True)
        overflowing = page.evaluate(OVERFLOWING)
        browser.close()
    assert overflowing == []

"""The preference center in a real browser: headless Chromium (Debian's package) driven by
Playwright, against uvicorn, the real worker, database and Redis. A person opens the link
of a message the outbox backend stored, turns the Payments topic off on LINE, saves, and the
next payment event skips LINE with the preference's reason (GET /events/{eventId}) while
email still goes out. Screenshots go to test-artifacts/preferences-*.png; no page breaks its
CSP (it loads nothing but the tenant's logo)."""

from __future__ import annotations

import html
import re
from typing import Any

import pytest
import requests
from sqlalchemy import select

from notifier import publish
from notifier.db import session_scope
from notifier.directory import import_document
from notifier.models import OutboxMessage
from notifier.web.auth import issue_api_key
from tests.e2e.test_console_browser import browser_page
from tests.e2e.test_outbox_page import ARTIFACTS, server
from tests.helpers import TENANT, directory, event, person
from tests.integration.conftest import wait_settled

__all__ = ["browser_page", "server"]  # fixtures used by name below


def shot(page: Any, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / f"preferences-{name}.png"
    page.screenshot(path=str(path), full_page=True)
    assert path.read_bytes().startswith(b"\x89PNG")


def settings_link(message: OutboxMessage) -> str:
    """The preference center link of an email, as the person clicks it in the footer."""
    found = re.search(
        r'<a href="([^"]+/p/[^"]+)"[^>]*>Notification settings</a>', message.body_html or ""
    )
    assert found, message.body_html
    return html.unescape(found.group(1))


@pytest.mark.usefixtures("db", "celery_worker")
def test_a_person_changes_a_setting_and_the_next_event_follows_it(
    server: str, browser_page: Any
) -> None:
    page = browser_page
    branding = {"name": "Kyo Gym Xinyi", "color": "#0B6E4F"}
    import_document(
        directory(
            person("u1", name="Amy Chen"),
            person("u2", name="王小明", locale="zh-TW"),
            branding=branding,
            preferenceLinkChannels=["line"],
        )
    )
    key = issue_api_key(TENANT)
    publish(event("payment.success", eventId="pc-first"))  # LINE + email
    publish(event("payment.success", user="u2", eventId="pc-zh"))
    wait_settled(expected=6)
    with session_scope() as session:
        email = session.scalars(
            select(OutboxMessage).where(
                OutboxMessage.channel == "email", OutboxMessage.recipient == "u1"
            )
        ).one()
        line = session.scalars(
            select(OutboxMessage).where(
                OutboxMessage.channel == "line", OutboxMessage.recipient == "u1"
            )
        ).one()
        zh_email = session.scalars(
            select(OutboxMessage).where(
                OutboxMessage.channel == "email", OutboxMessage.recipient == "u2"
            )
        ).one()
    link = settings_link(email)
    assert (line.body_text or "").endswith(link)  # the LINE text ends with the same page
    assert link.startswith("http://localhost:8000/p/")
    local = server + link.removeprefix("http://localhost:8000")

    page.goto(local)
    assert page.locator("html").get_attribute("lang") == "en"
    assert "Kyo Gym Xinyi" in page.inner_text("header.brand")
    assert page.is_checked("#cat-PaymentUpdates-line")
    shot(page, "before")
    page.uncheck("#cat-PaymentUpdates-line")
    page.click("#save")
    page.wait_for_selector("#saved")
    assert "The next notification follows these settings." in page.inner_text("#saved")
    assert not page.is_checked("#cat-PaymentUpdates-line")
    assert page.is_checked("#cat-PaymentUpdates-email") and page.is_checked("#all-line")
    shot(page, "saved")

    publish(event("payment.success", eventId="pc-next"))
    wait_settled(expected=9)
    report = requests.get(
        f"{server}/events/pc-next", headers={"Authorization": f"Bearer {key}"}, timeout=10
    ).json()
    outcome = {d["channel"]: (d["status"], d["reason"]) for d in report["deliveries"]}
    assert outcome["line"] == ("skipped", "preference: PaymentUpdates off on line")
    assert outcome["email"] == ("sent", None)

    # The same center in Traditional Chinese, from the zh-TW person's email.
    page.goto(server + settings_link_zh(zh_email).removeprefix("http://localhost:8000"))
    assert page.locator("html").get_attribute("lang") == "zh-TW"
    assert "通知設定" in page.inner_text("h1")
    shot(page, "zh-TW")
    # On a phone (the link is opened from LINE or an SMS): nothing runs off the screen.
    page.set_viewport_size({"width": 390, "height": 844})
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    shot(page, "zh-TW-phone")

    # An expired or altered link says so, in both languages.
    page.goto(local[:-3] + "AAA")
    assert "This link is not valid" in page.inner_text("#message")
    shot(page, "bad-link")
    assert page.violations == []  # type: ignore[attr-defined]


def settings_link_zh(message: OutboxMessage) -> str:
    found = re.search(r'<a href="([^"]+/p/[^"]+)"[^>]*>通知設定</a>', message.body_html or "")
    assert found, message.body_html
    return html.unescape(found.group(1))

"""The operator's console in a real browser: headless Chromium (Debian's package) driven by
Playwright, against uvicorn, the real worker, database and Redis. An operator logs in, finds
an event, opens its timeline, replays a dead letter and watches it become sent, turns a
disabled channel on again, reads a chart and previews a LINE Flex message. Screenshots go to
test-artifacts/console-*.png. Every page is checked for CSP violations (it loads nothing)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import select

from notifier import publish
from notifier.channel_state import turn_off
from notifier.db import session_scope
from notifier.directory import import_document
from notifier.models import ChannelState, Click, DeadLetter
from notifier.operators import add_operator
from notifier.report import report
from tests.e2e.test_outbox_page import ARTIFACTS, chromium_binary, server
from tests.helpers import TENANT, directory, event, person, wait_for
from tests.integration.conftest import deliveries, scripted, wait_settled

__all__ = ["scripted", "server"]  # fixtures used by name below

OTHER = "gym-b"


@pytest.fixture
def browser_page() -> Iterator[Any]:
    binary = chromium_binary()
    if binary is None:
        pytest.skip("no chromium binary (make browser) for the console browser test")
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=binary, args=["--no-sandbox", "--disable-gpu"]
        )
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.violations = []  # type: ignore[attr-defined]
        page.on(
            "console",
            lambda message: (
                "Content Security Policy" in message.text and page.violations.append(message.text)
            ),  # type: ignore[attr-defined]
        )
        yield page
        browser.close()


def shot(page: Any, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / f"console-{name}.png"
    page.screenshot(path=str(path), full_page=True)
    assert path.read_bytes().startswith(b"\x89PNG")


@pytest.mark.usefixtures("db", "celery_worker")
def test_an_operator_works_through_the_console(
    server: str, browser_page: Any, scripted: Any
) -> None:
    page = browser_page
    import_document(directory(person("u1", name="Amy Chen"), person("u2", name="Ben Lin")))
    import_document(directory(person("u9", tenant=OTHER), tenant=OTHER))
    publish(event("member.membership_expiring", eventId="browser-expiring"))
    publish(event("payment.success", user="u2", eventId="browser-paid"))
    publish(event("payment.success", user="u9", tenant=OTHER, eventId="other-tenant-event"))
    wait_settled(expected=9)
    scripted.use("email")
    scripted.channel.reset("permanent")  # the next email fails once, then sends
    only_email = {"userId": "u1", "priority": "medium", "channels": ["email"]}
    publish(event("payment.failed", eventId="browser-failed", metadata=only_email))
    failed = wait_for(lambda: next(iter(deliveries(status="failed")), None))
    with session_scope() as session:
        session.add(
            Click(
                tenant_id=TENANT,
                delivery_id=failed.id,
                channel="email",
                event_type="payment.failed",
                url="https://kyo.app/pay/1002",
            )
        )
        turn_off(session, TENANT, "line", "LINE 401: invalid channel access token", None)
    key = add_operator("amy", [TENANT])

    # Without a session: the login page, whatever was asked for.
    page.goto(f"{server}/console/dead-letters")
    assert page.url.startswith(f"{server}/console/login")
    shot(page, "login")
    page.fill("#key", "nko_not-a-key")
    page.click("button[type=submit]")
    assert "That key is not valid." in page.inner_text("[role=alert]")
    page.fill("#key", key)
    page.click("button[type=submit]")
    assert page.url == f"{server}/console/dead-letters"

    # Find an event and open its timeline.
    page.click("text=Activity")
    assert "other-tenant-event" not in page.content()
    page.fill("input[name=event_id]", "browser-failed")
    page.click("form.filters button")
    links = page.locator("#events a")
    assert links.count() == 1
    links.first.click()
    timeline = page.inner_text("#timeline")
    assert "event accepted" in timeline and "failed: PermanentChannelError" in timeline
    assert "clicked: https://kyo.app/pay/1002" in timeline
    assert "browser-failed" in page.inner_text("#payload")
    shot(page, "timeline-failed")

    # Replay the dead letter: confirm, see the outcome, watch the delivery become sent.
    page.click("text=Dead letters")
    page.click("#replay-all")
    assert "Replay 1 dead letter?" in page.inner_text("h1")
    shot(page, "replay-confirm")
    page.click("#confirm-replay")
    assert "1 of 1 replayed" in page.inner_text("h1")
    shot(page, "replay-result")
    page.click("#replay-result a")
    sent_badge = f"#delivery-{failed.id} .badge.sent"
    page.wait_for_selector(sent_badge, timeout=30_000)  # the page refreshes itself
    assert "sent (provider id" in page.inner_text("#timeline")
    shot(page, "timeline-replayed")

    # Turn the disabled channel on again.
    page.click("text=Channel health")
    row = page.locator(f"#channel-{TENANT}-line")
    assert "invalid channel access token" in row.inner_text()
    shot(page, "channels")
    row.locator("button").click()
    assert "Turned on again: line for gym-a." in page.inner_text("[role=status]")
    assert page.locator("#no-channels-off").count() == 1
    with session_scope() as session:
        assert session.get(ChannelState, (TENANT, "line")) is None

    # Read a chart: today's bars carry the report's numbers.
    page.click("text=Analytics")
    doc = report(TENANT, 14)
    today = doc["dailyBreakdown"][-1]
    sent_bar = page.locator(f"#chart-daily rect.bar-sent[data-date='{today['date']}']")
    assert int(sent_bar.get_attribute("data-value")) == today["sent"] > 0
    assert float(sent_bar.get_attribute("height")) > 0
    clicked = page.locator(f"#chart-daily rect.bar-clicked[data-date='{today['date']}']")
    assert int(clicked.get_attribute("data-value")) == today["clicked"] == 1
    assert page.inner_text("#total-sent") == str(doc["totalSent"])
    assert re.fullmatch(r"\d+\.\d%", page.inner_text("#click-rate"))
    shot(page, "analytics")

    # Preview a LINE Flex message and an email.
    page.click("text=Template preview")
    page.select_option("select[name=event_type]", "member.membership_expiring")
    page.select_option("select[name=locale]", "zh-TW")
    page.select_option("select[name=channel]", "line")
    page.click("form.filters button")
    assert page.locator("#rendered .flex").count() >= 1
    shot(page, "preview-line")
    page.select_option("select[name=channel]", "email")
    page.click("form.filters button")
    assert page.locator("#rendered iframe.mail").count() == 1
    shot(page, "preview-email")

    # Log out: the console is closed again.
    page.click("text=Log out")
    page.goto(f"{server}/console/events")
    assert page.url.startswith(f"{server}/console/login")
    assert page.violations == []  # type: ignore[attr-defined]
    with session_scope() as session:
        assert session.scalars(select(DeadLetter.replayed_at)).one() is not None

"""The preference center over HTTP (no browser; tests/e2e drives it in Chromium): the
signed link of every message, the page in the person's locale with the tenant's branding,
CSRF-safe saving, expired and tampered links, and what a save changes."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from notifier.db import session_scope
from notifier.directory import import_document
from notifier.models import OutboxMessage, User
from notifier.pipeline import accept, plan
from notifier.sending import send_chunk
from notifier.signing import epoch_day, preference_token, preference_url
from notifier.web.app import create_app
from notifier.web.preference_center import COOKIE
from tests.helpers import TENANT, directory, event, person, wait_for
from tests.integration.test_outbound_webhooks import Receiver, receiver, register

__all__ = ["receiver"]  # a fixture used by name below

OTHER = "gym-b"
BRANDING = {
    "name": "Kyo <Gym>",
    "color": "#123abc",
    "logo_url": "https://cdn.example/logo.png?a=1&b=<x>",
}


@pytest.fixture
def client(db: None) -> Iterator[TestClient]:
    import_document(
        directory(
            person("u1"),
            person("u2", locale="zh-TW", lineUserId=None),
            branding=BRANDING,
            preferenceLinkChannels=["line", "sms"],
        )
    )
    import_document(directory(person("u1", tenant=OTHER), tenant=OTHER))
    with TestClient(create_app(), base_url="http://localhost:8000") as test_client:
        yield test_client


def path(url: str) -> str:
    return url.removeprefix("http://localhost:8000")


def form_of(html: str) -> dict[str, str]:
    """The form's CSRF field and its ticked boxes, as a browser would submit them."""
    fields = {"csrf": re.search(r'name="csrf" value="([^"]+)"', html).group(1)}  # type: ignore[union-attr]
    for name in re.findall(r'name="([^"]+)"[^>]* value="on"[^>]* checked', html):
        fields[name] = "on"
    return fields


def stored(tenant: str, user: str) -> dict[str, Any]:
    with session_scope() as session:
        row = session.get(User, (tenant, user))
        assert row is not None
        return dict(row.preferences or {})


def test_the_page_shows_the_persons_channels_in_their_locale_with_the_branding(
    client: TestClient,
) -> None:
    page = client.get(path(preference_url(TENANT, "u1")))
    assert page.status_code == 200
    html = page.text
    assert '<html lang="en">' in html and "Notification settings" in html
    assert "Kyo &lt;Gym&gt;" in html and "<Gym>" not in html  # autoescaped
    assert "background: #123abc" in html
    assert 'src="https://cdn.example/logo.png?a=1&amp;b=&lt;x&gt;"' in html
    for key in ("line", "email", "sms"):
        assert f'name="all.{key}"' in html
    assert 'name="all.webPush"' not in html  # no push subscription: not shown
    assert 'name="cat.MemberActivity.line"' in html
    assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
    assert page.headers["x-frame-options"] == "DENY"
    assert page.headers["referrer-policy"] == "same-origin"
    cookie = page.headers["set-cookie"]
    assert f"{COOKIE}=" in cookie and "SameSite=strict" in cookie and "HttpOnly" in cookie
    assert "Path=/p/" in cookie
    zh = client.get(path(preference_url(TENANT, "u2"))).text
    assert '<html lang="zh-TW">' in zh and "通知設定" in zh and "電子郵件" in zh
    assert 'name="all.line"' not in zh  # u2 has no LINE id


def test_saving_turns_a_category_off_on_one_channel_and_the_next_event_follows(
    client: TestClient,
) -> None:
    url = path(preference_url(TENANT, "u1"))
    fields = form_of(client.get(url).text)
    assert fields.pop("cat.PaymentUpdates.line") == "on"
    saved = client.post(url, data=fields, follow_redirects=False)
    assert saved.status_code == 303, saved.text
    assert saved.headers["location"] == f"{url}?saved=1"
    assert "Saved." in client.get(f"{url}?saved=1").text
    prefs = stored(TENANT, "u1")
    assert prefs["categories"] == {"PaymentUpdates": {"line": False}}
    assert prefs["priority"]  # what the page does not show is kept
    assert "channels" not in prefs  # every channel still on: nothing to store
    accepted = accept(event("payment.success", eventId="after-save"))
    assert accepted.event_pk is not None
    plan(accepted.event_pk)
    with session_scope() as session:
        from notifier.models import Delivery

        rows = {
            d.channel: (d.status, d.reason)
            for d in session.scalars(select(Delivery).where(Delivery.event_pk == accepted.event_pk))
            if d.recipient == "u1"
        }
    assert rows["line"] == ("skipped", "preference: PaymentUpdates off on line")
    assert rows["email"] == ("queued", None)
    # Unticking a channel turns it off for everything; ticking it again turns it back on.
    fields = form_of(client.get(url).text)
    fields.pop("all.sms")
    assert client.post(url, data=fields, follow_redirects=False).status_code == 303
    assert stored(TENANT, "u1")["channels"] == {"sms": False}
    fields = form_of(client.get(url).text)
    assert "all.sms" not in fields
    fields["all.sms"] = "on"
    assert client.post(url, data=fields, follow_redirects=False).status_code == 303
    assert stored(TENANT, "u1")["channels"] == {"sms": True}


def test_a_post_without_the_forms_csrf_or_from_another_site_is_refused(
    client: TestClient,
) -> None:
    url = path(preference_url(TENANT, "u1"))
    before = stored(TENANT, "u1")
    fields = form_of(client.get(url).text)
    forged = {k: v for k, v in fields.items() if k != "csrf"}
    assert client.post(url, data=forged, follow_redirects=False).status_code == 403
    wrong = {**fields, "csrf": "0" * 64}
    assert client.post(url, data=wrong, follow_redirects=False).status_code == 403
    elsewhere = client.post(
        url, data=fields, headers={"Origin": "https://evil.example"}, follow_redirects=False
    )
    assert elsewhere.status_code == 403
    opaque = client.post(url, data=fields, headers={"Origin": "null"}, follow_redirects=False)
    assert opaque.status_code == 403
    # The CSRF field is bound to its link: another person's link does not take it.
    other_url = path(preference_url(TENANT, "u2"))
    assert client.post(other_url, data=fields, follow_redirects=False).status_code == 403
    client.cookies.clear()  # no cookie (another browser): refused
    assert client.post(url, data=fields, follow_redirects=False).status_code == 403
    assert stored(TENANT, "u1") == before
    # This site's own Origin is fine.
    fields = form_of(client.get(url).text)
    same = client.post(
        url, data=fields, headers={"Origin": "http://localhost:8000"}, follow_redirects=False
    )
    assert same.status_code == 303


def test_tampered_expired_and_other_tenants_links(client: TestClient) -> None:
    token = preference_token(TENANT, "u1", epoch_day() + 5)
    body, mac = token.split(".")
    assert client.get(f"/p/{body}.{mac[:-2]}AA").status_code == 404  # well shaped, not ours
    assert client.get("/p/garbage").status_code == 400
    assert client.post("/p/garbage", data={"csrf": "x"}).status_code == 400
    expired = preference_token(TENANT, "u1", epoch_day() - 1)
    page = client.get(f"/p/{expired}")
    assert page.status_code == 410 and "expired" in page.text and "過期" in page.text
    assert client.post(f"/p/{expired}", data={}).status_code == 410
    # A signed link names its tenant: B's u1 is a different person with B's page.
    other = client.get(path(preference_url(OTHER, "u1")))
    assert other.status_code == 200 and "Kyo Gym A" in other.text
    assert "Kyo &lt;Gym&gt;" not in other.text
    assert client.get(path(preference_url(TENANT, "nobody"))).status_code == 404


@pytest.mark.parametrize(("channel", "carries"), [("email", True), ("line", True), ("sms", True)])
def test_every_message_carries_the_link(client: TestClient, channel: str, carries: bool) -> None:
    only = {"userId": "u1", "priority": "high", "channels": [channel]}
    if channel == "email":
        only["priority"] = "critical"
    accepted = accept(event("payment.failed", eventId=f"link-{channel}", metadata=only))
    assert accepted.event_pk is not None
    chunks = plan(accepted.event_pk).chunks
    for name, ids in chunks:
        send_chunk(name, ids)
    with session_scope() as session:
        message = session.scalars(
            select(OutboxMessage).where(OutboxMessage.channel == channel)
        ).one()
    text = message.body_text or ""
    links = re.findall(
        r"http://localhost:8000/p/[A-Za-z0-9_\-.]+", text + (message.body_html or "")
    )
    assert links, text
    assert client.get(path(links[0])).status_code == 200
    if channel == "email":
        assert "Notification settings: http://localhost:8000/p/" in text
        assert "Unsubscribe: http://localhost:8000/u/" in text
        assert ">Notification settings</a>" in (message.body_html or "")
    else:
        assert text.endswith(links[0]) and "Notification settings: " in text


def test_line_and_sms_carry_the_link_only_where_the_tenant_enables_it(db: None) -> None:
    import_document(directory(person("u1")))  # no preferenceLinkChannels
    for channel in ("line", "sms"):
        only = {"userId": "u1", "priority": "high", "channels": [channel]}
        accepted = accept(event("payment.failed", eventId=f"nolink-{channel}", metadata=only))
        assert accepted.event_pk is not None
        for name, ids in plan(accepted.event_pk).chunks:
            send_chunk(name, ids)
    with session_scope() as session:
        texts = [m.body_text or "" for m in session.scalars(select(OutboxMessage))]
    assert len(texts) == 2 and not any("/p/" in t for t in texts)


@pytest.mark.usefixtures("celery_worker")
def test_a_save_and_an_unsubscribe_are_preferences_updated_webhooks(
    client: TestClient, receiver: Receiver
) -> None:
    from notifier.signing import unsubscribe_url
    from notifier.web.auth import issue_api_key

    register(client, receiver, issue_api_key(TENANT), "prefs", eventTypes=["preferences.updated"])
    url = path(preference_url(TENANT, "u1"))
    fields = form_of(client.get(url).text)
    fields.pop("cat.MemberActivity.email")
    assert client.post(url, data=fields, follow_redirects=False).status_code == 303
    assert client.post(path(unsubscribe_url(TENANT, "u1", "sms"))).status_code == 200
    wait_for(lambda: len(receiver.messages) >= 2 or None, timeout=60)
    bodies = sorted((p["data"] for _, p, _ in receiver.messages), key=lambda d: d["source"])
    assert [d["source"] for d in bodies] == ["preference_center", "unsubscribe"]
    assert bodies[0]["preferences"]["categories"] == {"MemberActivity": {"email": False}}
    assert bodies[1]["preferences"]["channels"] == {"sms": False}
    assert all(d["userId"] == "u1" for d in bodies)

"""The operator's console through FastAPI's TestClient, against the real database, Redis,
broker and worker: operator keys, login, lockout, sessions, CSRF, tenant scoping on every
console URL, activity search and one event's timeline."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterator
from typing import Any

import pytest
from click.testing import CliRunner
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient
from sqlalchemy import select

from notifier import publish
from notifier.channel_state import turn_off
from notifier.cli import main as cli
from notifier.db import session_scope
from notifier.directory import import_document
from notifier.models import (
    ChannelState,
    Click,
    DeadLetter,
    Delivery,
    Event,
    Operator,
    OperatorSession,
    Suppression,
    utcnow,
)
from notifier.operators import MAX_FAILED_LOGINS, add_operator
from notifier.pipeline import accept
from notifier.report import report
from notifier.web import console
from notifier.web.app import create_app
from tests.helpers import TENANT, directory, event, person, wait_for
from tests.integration.conftest import deliveries, wait_settled
from tests.integration.console import csrf_of, log_in

OTHER = "gym-b"


@pytest.fixture
def app_client(db: None) -> Iterator[TestClient]:
    import_document(directory(person("u1"), person("u2")))
    import_document(directory(person("b-member", tenant=OTHER), tenant=OTHER))
    with TestClient(create_app()) as client:
        yield client


@pytest.fixture
def lockout_reset() -> Iterator[None]:
    """The lockout counts per client address, in Redis: clean before and after."""
    from notifier import operators, ratelimit

    key = operators._lockout_key("testclient")
    ratelimit.redis_client().delete(key)
    yield
    ratelimit.redis_client().delete(key)


def console_paths() -> list[tuple[str, str]]:
    """(method, path) of every console route but the login page, path ids filled with 1."""
    found = []
    for section in console.SECTIONS:
        for route in section.routes:
            assert isinstance(route, APIRoute)
            if route.path == "/login":
                continue
            path = console.PREFIX + re.sub(r"\{[^}]+\}", "1", route.path)
            found.extend((method, path) for method in sorted(route.methods))
    return found


# -- operator keys ---------------------------------------------------------------------


def test_operator_add_prints_the_key_once_and_stores_only_its_hash(db: None) -> None:
    import_document(directory(person("u1")))
    result = CliRunner().invoke(cli, ["operator", "add", "amy", "--tenant", TENANT])
    assert result.exit_code == 0, result.output
    key = result.output.strip()
    assert key.startswith("nko_") and len(key) > 40
    with session_scope() as session:
        operator = session.scalars(select(Operator)).one()
        assert (operator.name, operator.tenant_ids) == ("amy", [TENANT])
        assert key not in operator.key_hash and len(operator.key_hash) == 64
    again = CliRunner().invoke(cli, ["operator", "add", "amy"])
    assert again.exit_code == 1 and "exists already" in again.output
    unknown = CliRunner().invoke(cli, ["operator", "add", "bob", "--tenant", "nope"])
    assert unknown.exit_code == 1 and "unknown tenant(s): nope" in unknown.output


# -- login, session, logout, lockout -----------------------------------------------------


def test_without_a_session_every_console_url_redirects_to_login_and_shows_nothing(
    app_client: TestClient,
) -> None:
    publish(event("payment.failed", eventId="secret-event"))
    paths = console_paths()
    assert len(paths) >= 3
    for method, path in paths:
        response = app_client.request(method, path, follow_redirects=False)
        assert response.status_code == 303, (method, path, response.status_code)
        assert response.headers["location"].startswith("/console/login?next=")
        assert "secret-event" not in response.text and TENANT not in response.text
    # A forged or expired cookie is no session either.
    app_client.cookies.set("notifier_console", "forged", path="/console")
    assert app_client.get("/console/events", follow_redirects=False).status_code == 303


@pytest.mark.usefixtures("lockout_reset")
def test_login_sets_a_strict_httponly_cookie_and_logout_ends_the_session(
    app_client: TestClient,
) -> None:
    key = add_operator("amy")
    form = app_client.get("/console/login")
    assert "default-src 'none'" in form.headers["content-security-policy"]
    response = app_client.post(
        "/console/login",
        data={"csrf": csrf_of(form.text), "key": key, "next": "/console/events?tenant=gym-a"},
        follow_redirects=False,
    )
    assert response.status_code == 303
    assert response.headers["location"] == "/console/events?tenant=gym-a"
    cookie = next(
        c for c in response.headers.get_list("set-cookie") if c.startswith("notifier_console=")
    )
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/console" in cookie
    assert "Secure" not in cookie  # plain http here; see the https test
    token = cookie.split(";")[0].split("=", 1)[1]
    with session_scope() as session:
        assert token not in {s.token_hash for s in session.scalars(select(OperatorSession))}
    page = app_client.get("/console/events")
    assert page.status_code == 200 and "amy" in page.text
    assert page.headers["cache-control"] == "no-store"
    assert app_client.post("/console/logout", data={"csrf": "wrong"}).status_code == 403
    out = app_client.post(
        "/console/logout", data={"csrf": csrf_of(page.text)}, follow_redirects=False
    )
    assert (out.status_code, out.headers["location"]) == (303, "/console/login")
    # The old token is dead on the server, not only forgotten by this browser.
    app_client.cookies.set("notifier_console", token, path="/console")
    assert app_client.get("/console/events", follow_redirects=False).status_code == 303


@pytest.mark.usefixtures("lockout_reset")
def test_the_session_cookie_is_secure_over_https(db: None) -> None:
    key = add_operator("amy")
    with TestClient(create_app(), base_url="https://console.example") as client:
        form = client.get("/console/login")
        response = client.post(
            "/console/login",
            data={"csrf": csrf_of(form.text), "key": key},
            follow_redirects=False,
        )
    cookies = response.headers.get_list("set-cookie")
    assert any(c.startswith("notifier_console=") and "Secure" in c for c in cookies)


@pytest.mark.usefixtures("lockout_reset")
def test_login_needs_its_csrf_token_and_never_redirects_off_site(app_client: TestClient) -> None:
    key = add_operator("amy")
    missing = app_client.post("/console/login", data={"key": key}, follow_redirects=False)
    assert missing.status_code == 403 and "notifier_console=" not in str(missing.headers)
    form = app_client.get("/console/login")
    for target in ("https://evil.example/", "//evil.example/console/", "/elsewhere"):
        response = app_client.post(
            "/console/login",
            data={"csrf": csrf_of(form.text), "key": key, "next": target},
            follow_redirects=False,
        )
        assert response.headers["location"] == "/console/", target
        form = app_client.get("/console/login")


@pytest.mark.usefixtures("lockout_reset")
def test_repeated_bad_keys_lock_the_client_out_even_with_the_right_key(
    app_client: TestClient,
) -> None:
    key = add_operator("amy")

    def attempt(value: str) -> int:
        form = app_client.get("/console/login")
        return app_client.post(
            "/console/login",
            data={"csrf": csrf_of(form.text), "key": value},
            follow_redirects=False,
        ).status_code

    assert [attempt(f"nko_wrong{i}") for i in range(MAX_FAILED_LOGINS - 1)] == [401] * (
        MAX_FAILED_LOGINS - 1
    )
    assert attempt("nko_wrong-last") == 429
    assert attempt(key) == 429
    page = app_client.get("/console/login")
    assert page.status_code == 200  # the form still shows; logins are refused


# -- tenant scoping ---------------------------------------------------------------------


@pytest.mark.usefixtures("celery_worker", "lockout_reset")
def test_an_operator_of_tenant_a_never_sees_tenant_b(app_client: TestClient) -> None:
    publish(event("payment.failed", eventId="a-event"))
    publish(event("payment.failed", user="b-member", tenant=OTHER, eventId="b-event"))
    wait_settled(expected=6)
    with session_scope() as session:
        b_event = session.scalars(select(Event).where(Event.tenant_id == OTHER)).one()
        b_delivery = session.scalars(select(Delivery).where(Delivery.tenant_id == OTHER)).first()
        assert b_delivery is not None
        session.add(
            DeadLetter(
                tenant_id=OTHER,
                kind="delivery",
                delivery_id=b_delivery.id,
                error="b-secret-error",
                payload={"eventId": "b-event"},
            )
        )
        session.flush()
        b_ids = {"event": b_event.id, "dead": session.scalars(select(DeadLetter.id)).one()}
    log_in(app_client, add_operator("amy", [TENANT]))
    listing = app_client.get("/console/events").text
    assert "a-event" in listing and "b-event" not in listing
    assert "b-event" not in app_client.get(f"/console/events?tenant={OTHER}").text
    for search in ("event_id=b-event", "person=b-member", "event_type=payment.failed&tenant=gym-b"):
        found = app_client.get(f"/console/events?{search}").text
        assert "No events match." in found and f"/console/events/{b_ids['event']}" not in found
    timeline = app_client.get(f"/console/events/{b_ids['event']}")
    assert timeline.status_code == 404 and "b-event" not in timeline.text
    for method, path in console_paths():
        if method != "GET":
            continue
        for filled in (
            path,
            path.replace("/1", f"/{b_ids['event']}"),
            path.replace("/1", f"/{b_ids['dead']}"),
        ):
            body = app_client.get(filled, params={"tenant": OTHER}).text
            assert "b-event" not in body and "b-secret-error" not in body, filled
            assert "b-member" not in body, filled


# -- activity and timeline --------------------------------------------------------------


@pytest.mark.usefixtures("celery_worker", "lockout_reset")
def test_activity_search_finds_an_event_and_its_timeline(app_client: TestClient) -> None:
    publish(event("payment.success", eventId="pay-1"))
    publish(event("payment.failed", user="u2", eventId="pay-2"))
    publish(event("member.registered", eventId="reg-1"))
    accept({"eventType": "payment.failed", "tenantId": TENANT, "data": {}})  # rejected
    wait_settled(expected=9)
    log_in(app_client, add_operator("ops"))

    def shown(**params: str) -> list[str]:
        page = app_client.get("/console/events", params=params).text
        return re.findall(r'<a href="/console/events/\d+">([^<]+)</a>', page)

    newest_first = shown()
    assert newest_first.index("reg-1") < newest_first.index("pay-2") < newest_first.index("pay-1")
    assert shown(event_id="pay-2") == ["pay-2"]
    assert set(shown(event_type="payment.success")) == {"pay-1"}
    assert shown(person="u2") == ["pay-2"]
    assert len(shown(status="rejected")) == 1
    assert shown(tenant=OTHER) == []
    assert shown(since="2999-01-01T00:00") == []
    assert len(shown(until="2999-01-01T00:00")) == 4
    with session_scope() as session:
        pk = session.scalar(select(Event.id).where(Event.event_id == "pay-1"))
        sent = session.scalars(select(Delivery).where(Delivery.event_pk == pk)).all()
    page = app_client.get(f"/console/events/{pk}")
    assert page.status_code == 200
    assert "event accepted" in page.text and "planned: 3 deliveries" in page.text
    for delivery in sent:
        assert f'id="delivery-{delivery.id}"' in page.text
        assert (delivery.provider_message_id or "") in page.text
    assert "&#34;eventId&#34;: &#34;pay-1&#34;" in page.text  # the raw payload, escaped
    assert 'http-equiv="refresh"' not in page.text  # all settled: no refreshing


@pytest.mark.usefixtures("lockout_reset")
def test_activity_pages_through_older_events(app_client: TestClient) -> None:
    from notifier.web.console.access import PAGE_SIZE

    with session_scope() as session:
        session.add_all(
            Event(
                event_id=f"e-{i:03}",
                tenant_id=TENANT,
                event_type="member.registered",
                status="accepted",
                payload={},
            )
            for i in range(PAGE_SIZE + 5)
        )
    log_in(app_client, add_operator("ops"))
    first = app_client.get("/console/events").text
    ids = re.findall(r'<a href="/console/events/\d+">([^<]+)</a>', first)
    assert len(ids) == PAGE_SIZE and ids[0] == f"e-{PAGE_SIZE + 4:03}"
    older = re.search(r'href="(/console/events\?[^"]*before=\d+)"', first)
    assert older
    second = app_client.get(older.group(1).replace("&amp;", "&")).text
    rest = re.findall(r'<a href="/console/events/\d+">([^<]+)</a>', second)
    assert rest == [f"e-{i:03}" for i in range(4, -1, -1)]


@pytest.mark.usefixtures("lockout_reset")
def test_a_timeline_in_flight_refreshes_itself(app_client: TestClient) -> None:
    with session_scope() as session:
        row = Event(
            event_id="waiting",
            tenant_id=TENANT,
            event_type="member.registered",
            status="accepted",
            payload={"data": {"memberName": "<b>x</b>"}},
        )
        session.add(row)
        session.flush()
        session.add(
            Delivery(
                event_pk=row.id, tenant_id=TENANT, recipient="u1", channel="email", status="queued"
            )
        )
        session.flush()
        pk = row.id
    log_in(app_client, add_operator("ops"))
    page = app_client.get(f"/console/events/{pk}").text
    assert '<meta http-equiv="refresh" content="3">' in page
    assert "<b>x</b>" not in page and "&lt;b&gt;x&lt;/b&gt;" in page


# -- dead letters -----------------------------------------------------------------------


@pytest.mark.usefixtures("celery_worker", "lockout_reset")
def test_replaying_a_dead_letter_asks_first_then_sends_it(
    app_client: TestClient, scripted: Any
) -> None:
    scripted.use("email")
    scripted.channel.reset("permanent")
    publish(
        event("payment.success", eventId="dead-1", metadata={"userId": "u1", "channels": ["email"]})
    )
    rows = wait_settled(expected=1)
    assert [r.status for r in rows if r.channel == "email"] == ["failed"]
    log_in(app_client, add_operator("ops", [TENANT]))
    listing = app_client.get("/console/dead-letters")
    assert "dead-1" in listing.text and "scripted 400" in listing.text
    with session_scope() as session:
        letter_id = session.scalars(select(DeadLetter.id)).one()
    details = app_client.get(f"/console/dead-letters/{letter_id}")
    assert details.status_code == 200 and "&#34;eventId&#34;: &#34;dead-1&#34;" in details.text
    csrf = csrf_of(listing.text)
    confirm = app_client.post(
        "/console/dead-letters/replay", data={"csrf": csrf, "id": [str(letter_id)]}
    )
    assert "Replay 1 dead letter?" in confirm.text
    with session_scope() as session:  # nothing happened yet
        assert session.get(DeadLetter, letter_id).replayed_at is None  # type: ignore[union-attr]
    done = app_client.post(
        "/console/dead-letters/replay",
        data={"csrf": csrf, "id": [str(letter_id)], "confirmed": "yes"},
    )
    assert "Replay: 1 of 1 replayed" in done.text
    wait_for(lambda: {d.status for d in deliveries(channel="email")} == {"sent"})
    again = app_client.post(
        "/console/dead-letters/replay",
        data={"csrf": csrf, "id": [str(letter_id)], "confirmed": "yes"},
    )
    assert "Replay: 0 of 1 replayed" in again.text and "already replayed" in again.text
    assert (
        app_client.post(
            "/console/dead-letters/replay", data={"id": [str(letter_id)], "confirmed": "yes"}
        ).status_code
        == 403
    )  # no CSRF token


@pytest.mark.usefixtures("lockout_reset")
def test_dead_letters_of_another_tenant_are_never_replayed(app_client: TestClient) -> None:
    with session_scope() as session:
        theirs = DeadLetter(
            tenant_id=OTHER,
            kind="delivery",
            delivery_id=None,
            error="theirs",
            payload={"eventId": "b-dead"},
        )
        ours = DeadLetter(
            tenant_id=TENANT,
            kind="delivery",
            delivery_id=None,
            error="ours",
            payload={"eventId": "a-dead"},
        )
        session.add_all([theirs, ours])
        session.flush()
        ids = (theirs.id, ours.id)
    page = log_in(app_client, add_operator("ops", [TENANT])).get("/console/dead-letters")
    assert "a-dead" in page.text and "b-dead" not in page.text
    assert app_client.get(f"/console/dead-letters/{ids[0]}").status_code == 404
    done = app_client.post(
        "/console/dead-letters/replay",
        data={"csrf": csrf_of(page.text), "id": [str(i) for i in ids], "confirmed": "yes"},
    )
    assert "b-dead" not in done.text and "no such dead letter" in done.text
    with session_scope() as session:
        assert session.get(DeadLetter, ids[0]).replayed_at is None  # type: ignore[union-attr]


# -- channel health ---------------------------------------------------------------------


@pytest.mark.usefixtures("lockout_reset")
def test_a_disabled_channel_is_listed_and_turned_on_again(app_client: TestClient) -> None:
    with session_scope() as session:
        turn_off(session, TENANT, "line", "LINE 401: bad channel access token", None)
        turn_off(session, OTHER, "sms", "quota reached", utcnow() + dt.timedelta(hours=1))
        session.add_all(
            [
                Suppression(
                    tenant_id=TENANT,
                    channel="email",
                    address="u1@example.com",
                    reason="hard bounce",
                ),
                Suppression(
                    tenant_id=TENANT, channel="email", address="u2@example.com", reason="complaint"
                ),
                Suppression(
                    tenant_id=OTHER, channel="email", address="b@example.com", reason="bounce"
                ),
            ]
        )
    page = log_in(app_client, add_operator("ops", [TENANT])).get("/console/channels")
    assert "bad channel access token" in page.text and "quota reached" not in page.text
    assert "u1@example.com" in page.text and "b@example.com" not in page.text
    search = app_client.get("/console/channels", params={"address": "u2@"}).text
    assert "u2@example.com" in search and "u1@example.com" not in search
    csrf = csrf_of(page.text)
    # Not this operator's tenant: nothing changes.
    app_client.post(
        "/console/channels/enable", data={"csrf": csrf, "tenant": OTHER, "channel": "sms"}
    )
    with session_scope() as session:
        assert session.get(ChannelState, (OTHER, "sms")) is not None
        theirs = session.scalar(select(Suppression.id).where(Suppression.tenant_id == OTHER))
        ours = session.scalar(select(Suppression.id).where(Suppression.address == "u1@example.com"))
    app_client.post("/console/suppressions/remove", data={"csrf": csrf, "id": str(theirs)})
    done = app_client.post(
        "/console/channels/enable", data={"csrf": csrf, "tenant": TENANT, "channel": "line"}
    )
    assert "Turned on again: line for gym-a." in done.text
    removed = app_client.post("/console/suppressions/remove", data={"csrf": csrf, "id": str(ours)})
    assert "Suppression removed: email u1@example.com (gym-a)." in removed.text
    with session_scope() as session:
        assert session.get(ChannelState, (TENANT, "line")) is None
        assert {s.address for s in session.scalars(select(Suppression))} == {
            "u2@example.com",
            "b@example.com",
        }


# -- analytics --------------------------------------------------------------------------


def _seed_report_rows() -> None:
    now = utcnow()
    with session_scope() as session:
        row = Event(
            event_id="r-1",
            tenant_id=TENANT,
            event_type="payment.failed",
            status="accepted",
            payload={},
        )
        session.add(row)
        session.flush()
        for i, (channel, status) in enumerate(
            [
                ("email", "sent"),
                ("email", "sent"),
                ("line", "sent"),
                ("line", "failed"),
                ("sms", "failed"),
            ]
        ):
            session.add(
                Delivery(
                    event_pk=row.id,
                    tenant_id=TENANT,
                    recipient=f"u{i}",
                    channel=channel,
                    status=status,
                    sent_at=now if status == "sent" else None,
                    updated_at=now,
                )
            )
        session.add(
            Click(
                tenant_id=TENANT,
                channel="email",
                event_type="payment.failed",
                url="https://kyo.app/=x",
            )
        )
        # A click whose link named a hostile event type: a spreadsheet must not run it.
        session.add(
            Click(tenant_id=TENANT, channel="sms", event_type="=HYPERLINK(1)", url="https://x.y/")
        )


@pytest.mark.usefixtures("lockout_reset")
def test_analytics_charts_and_csv_show_the_report(app_client: TestClient) -> None:
    _seed_report_rows()
    log_in(app_client, add_operator("ops", [TENANT]))
    page = app_client.get("/console/analytics", params={"days": 7}).text
    doc = report(TENANT, 7)
    assert re.search(r'id="total-sent">3<', page) and re.search(r'id="click-rate">66.7%<', page)
    today = doc["dailyBreakdown"][-1]["date"]
    assert f'class="bar-sent" data-date="{today}" data-value="3"' in page
    assert f'class="bar-clicked" data-date="{today}" data-value="2"' in page
    assert 'class="bar-failed" data-key="sms" data-value="1"' in page
    assert 'class="bar-failed" data-key="payment.failed" data-value="2"' in page
    assert page.count('class="bar-sent"') == 7
    assert app_client.get("/console/analytics", params={"tenant": OTHER}).status_code == 404
    csv_response = app_client.get("/console/analytics.csv", params={"days": 7})
    assert csv_response.headers["content-type"].startswith("text/csv")
    assert "attachment" in csv_response.headers["content-disposition"]
    lines = csv_response.text.splitlines()
    assert lines[0] == "tenant,section,key,sent,clicked,failed,failure_rate"
    assert f"gym-a,day,{today},3,2,," in lines
    assert "gym-a,channel,sms,0,1,1,1.0" in lines
    assert "gym-a,event_type,'=HYPERLINK(1),0,1,0,0.0" in lines
    assert app_client.get("/console/analytics.csv", params={"tenant": OTHER}).status_code == 404


# -- template preview -------------------------------------------------------------------


@pytest.mark.usefixtures("lockout_reset")
def test_template_preview_renders_line_flex_and_email_html(app_client: TestClient) -> None:
    log_in(app_client, add_operator("ops"))
    line = app_client.get(
        "/console/preview",
        params={"event_type": "member.membership_expiring", "locale": "zh-TW", "channel": "line"},
    )
    assert line.status_code == 200
    assert 'class="flex"' in line.text and "Amy Chen" in line.text and 'id="line-json"' in line.text
    email = app_client.get(
        "/console/preview", params={"event_type": "payment.failed", "channel": "email"}
    ).text
    assert '<iframe class="mail" sandbox=""' in email and "srcdoc=" in email
    assert "card declined" in email
    missing = app_client.get("/console/preview", params={"event_type": "nope"}).text
    assert 'id="problem"' in missing

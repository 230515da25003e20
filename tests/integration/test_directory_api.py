"""The directory and delivery status over HTTP, against the real database (and the real
worker where deliveries are made): records one at a time, whole documents, erasure, an
event's deliveries, a person's activity log, and tenant isolation."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from notifier.db import session_scope
from notifier.directory import import_document
from notifier.models import (
    Booking,
    Delivery,
    Event,
    Membership,
    OutboxMessage,
    User,
    WebPushSubscription,
)
from notifier.web.app import create_app
from notifier.web.auth import issue_api_key
from tests.helpers import TENANT, directory, event, person
from tests.integration.conftest import count, wait_settled

OTHER = "gym-b"
SUBSCRIPTION = {"endpoint": "https://push.example/sub/1", "keys": {"p256dh": "p", "auth": "a"}}


class Api:
    def __init__(self, client: TestClient, key: str, other_key: str):
        self.client = client
        self.key = key
        self.other_key = other_key

    def call(self, method: str, path: str, body: Any = None, *, key: str | None = None) -> Any:
        headers = {"Authorization": f"Bearer {key or self.key}"}
        return self.client.request(method, path, json=body, headers=headers)


@pytest.fixture
def api(db: None) -> Iterator[Api]:
    import_document(directory(person("u1"), person("u2")))
    import_document(directory(person("u1", tenant=OTHER), tenant=OTHER))
    with TestClient(create_app()) as client:
        yield Api(client, issue_api_key(TENANT), issue_api_key(OTHER))


def user_body(**extra: Any) -> dict[str, Any]:
    body = person("new")
    del body["id"], body["tenantId"]
    body.update(extra)
    return body


def test_put_creates_then_replaces_a_user(api: Api) -> None:
    created = api.call("PUT", "/users/new", user_body(webPushSubscriptions=[SUBSCRIPTION]))
    assert created.status_code == 201, created.text
    assert created.json()["id"] == "new"
    assert created.json()["webPushSubscriptions"] == [SUBSCRIPTION]
    replaced = api.call("PUT", "/users/new", {"name": "Only a name"})
    assert replaced.status_code == 200
    body = replaced.json()
    # Replaced whole: what the body left out is back to its default, subscriptions too.
    assert (body["name"], body["email"], body["webPushSubscriptions"]) == ("Only a name", None, [])
    assert api.call("GET", "/users/new").json() == body
    with session_scope() as session:
        user = session.get(User, (TENANT, "new"))
        assert user is not None and user.name == "Only a name"
        assert session.scalar(select(WebPushSubscription.id)) is None


def test_put_refuses_an_invalid_user_with_every_error(api: Api) -> None:
    response = api.call("PUT", "/users/bad", {"email": 5, "tenantId": OTHER, "role": "x" * 40})
    assert response.status_code == 422
    fields = {e["field"] for e in response.json()["errors"]}
    assert fields == {"body.email", "body.tenantId", "body.role"}
    assert api.call("GET", "/users/bad").status_code == 404
    snake = api.call("PUT", "/users/bad", {"line_user_id": "U1"})  # camelCase only
    assert snake.status_code == 422


def test_patch_merges_fields_and_preferences(api: Api) -> None:
    response = api.client.patch(
        "/users/u1",
        content=b'{"name": "Amy", "phone": null, "preferences": {"channels": {"sms": false}}}',
        headers={
            "Authorization": f"Bearer {api.key}",
            "Content-Type": "application/merge-patch+json",
        },
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["name"], body["phone"], body["email"]) == ("Amy", None, "u1@example.com")
    # The stored priority lists are kept, the new channel switch is added.
    assert body["preferences"] == {
        "priority": {"high": ["line", "sms"], "medium": ["line", "email"], "low": ["web_push"]},
        "channels": {"sms": False},
    }
    assert api.call("PATCH", "/users/nobody", {"name": "x"}).status_code == 404
    assert api.call("PATCH", "/users/u1", {"active": "maybe"}).status_code == 422


@pytest.mark.usefixtures("celery_worker")
def test_delete_erases_the_person_and_keeps_deliveries_without_addresses(api: Api) -> None:
    api.call("PUT", "/courses/c1", {"courseName": "Yoga", "startTime": "2026-11-23T19:00:00+08:00"})
    membership = {"userId": "u1", "membershipType": "Gold", "expiresAt": "2026-11-29"}
    assert api.call("PUT", "/memberships/m1", membership).status_code == 201
    assert api.call("PUT", "/bookings/b1", {"courseId": "c1", "userId": "u1"}).status_code == 201
    assert (
        api.call("PATCH", "/users/u1", {"webPushSubscriptions": [SUBSCRIPTION]}).status_code == 200
    )
    assert api.call("POST", "/events", event("payment.success", eventId="e1")).status_code == 200
    sent = wait_settled(expected=3)
    with session_scope() as session:
        assert session.scalar(select(OutboxMessage.address).where(OutboxMessage.channel == "email"))

    assert api.call("DELETE", "/users/u1").status_code == 204
    assert api.call("GET", "/users/u1").status_code == 404
    assert api.call("DELETE", "/users/u1").status_code == 404
    for model in (Membership, Booking, WebPushSubscription):
        assert count(model) == 0, model
    with session_scope() as session:
        kept = list(session.scalars(select(Delivery).where(Delivery.recipient == "u1")))
        assert {d.id for d in kept} == {d.id for d in sent if d.recipient == "u1"} != set()
        assert all(d.raw_response is None for d in kept)
        addresses = session.scalars(
            select(OutboxMessage.address).where(OutboxMessage.recipient == "u1")
        )
        assert set(addresses) == {None}
        # The other tenant's u1 is untouched.
        assert session.get(User, (OTHER, "u1")) is not None
    report = api.call("GET", "/events/e1").json()
    assert len(report["deliveries"]) == 3


def test_memberships_courses_and_bookings(api: Api) -> None:
    course = {"courseName": "Yoga", "startTime": "2026-11-23T19:00:00+08:00", "capacity": 20}
    assert api.call("PUT", "/courses/c1", course).status_code == 201
    stored = api.call("GET", "/courses/c1").json()
    assert stored["startTime"] == "2026-11-23T11:00:00Z" and stored["capacity"] == 20
    naive = api.call("PUT", "/courses/c2", {**course, "startTime": "2026-11-23T19:00:00"})
    assert naive.status_code == 422
    # A booking must refer to a course and a person of this tenant.
    missing = api.call("PUT", "/bookings/b1", {"courseId": "c9", "userId": "nobody"})
    assert missing.status_code == 409  # valid, but it refers to records that do not exist
    assert {e["field"] for e in missing.json()["errors"]} == {"courseId", "userId"}
    assert api.call("PUT", "/bookings/b1", {"courseId": "c1", "userId": "u2"}).status_code == 201
    again = api.call(
        "PUT", "/bookings/b1", {"courseId": "c1", "userId": "u2", "status": "cancelled"}
    )
    assert again.status_code == 200 and again.json()["status"] == "cancelled"
    membership = {"userId": "u2", "membershipType": "Gold", "expiresAt": "2026-11-29"}
    assert api.call("PUT", "/memberships/m1", membership).json() == {"id": "m1", **membership}
    assert api.call("DELETE", "/memberships/m1").status_code == 204
    assert api.call("GET", "/memberships/m1").status_code == 404
    assert api.call("DELETE", "/courses/c1").status_code == 204  # and its bookings
    assert api.call("GET", "/bookings/b1").status_code == 404


def test_post_directory_is_an_idempotent_upsert_of_the_keys_tenant(api: Api) -> None:
    document = {
        "users": [
            {"id": f"d{i}", "name": f"D {i}", "email": f"d{i}@example.com"} for i in range(5)
        ],
        "courses": [{"id": "c1", "courseName": "Yoga", "startTime": "2026-11-23T19:00:00+08:00"}],
        "bookings": [{"id": "b1", "courseId": "c1", "userId": "d0"}],
    }
    first = api.call("POST", "/directory", document)
    assert first.status_code == 200, first.text
    assert first.json()["changed"] == {
        "tenants": 0,
        "users": 5,
        "webPushSubscriptions": 0,
        "courses": 1,
        "memberships": 0,
        "bookings": 1,
    }
    again = api.call("POST", "/directory", document)
    assert set(again.json()["changed"].values()) == {0}
    with session_scope() as session:
        tenants = set(session.scalars(select(User.tenant_id).where(User.id.like("d%"))))
    assert tenants == {TENANT}
    # The document names no tenant: a tenants section or a tenantId is refused, whole.
    foreign = {"users": [{"id": "x1", "tenantId": OTHER}]}
    assert api.call("POST", "/directory", foreign).status_code == 422
    assert (
        api.call("POST", "/directory", {"tenants": [{"id": OTHER, "name": "B"}]}).status_code == 422
    )
    assert api.call("GET", "/users/x1").status_code == 404
    assert api.call("GET", "/users/x1", key=api.other_key).status_code == 404


def test_a_key_never_reads_or_changes_another_tenants_records(api: Api) -> None:
    assert (
        api.call("POST", "/events", event("payment.success", eventId="a-only")).status_code == 200
    )
    b = api.other_key
    unknown_user = api.call("GET", "/users/nobody", key=b)
    assert unknown_user.status_code == 404
    for method, path, body in [
        ("GET", "/users/u2", None),  # u2 exists in A only
        ("PATCH", "/users/u2", {"name": "taken"}),
        ("DELETE", "/users/u2", None),
        ("GET", "/users/u2/deliveries", None),
        ("GET", "/events/a-only", None),
    ]:
        response = api.call(method, path, body, key=b)
        # The same answer as for what does not exist at all.
        assert (response.status_code, response.json()) == (404, unknown_user.json()), path
    # B's PUT of the same id makes B's own person; A's stays as it was.
    assert api.call("PUT", "/users/u2", {"name": "B's u2"}, key=b).status_code == 201
    assert api.call("GET", "/users/u2").json()["name"] == "Person u2"
    assert api.call("GET", "/users/u2", key=b).json()["name"] == "B's u2"
    for path in ("/users/u1", "/events/a-only", "/directory"):
        assert api.client.get(path).status_code in (401, 405)
        assert api.call("GET", path, key="nk.Z3ltLWE.wrong").status_code in (401, 405)


def test_event_status_and_activity_log(api: Api) -> None:
    with session_scope() as session:
        stored = Event(
            event_id="e-1", tenant_id=TENANT, event_type="payment.success", status="accepted"
        )
        session.add(stored)
        session.flush()
        for i in range(5):
            session.add(
                Delivery(
                    event_pk=stored.id,
                    tenant_id=TENANT,
                    recipient="u1",
                    channel=["line", "email", "sms", "slack", "topic"][i],
                    status="sent",
                    attempts=1,
                    provider_message_id=f"pm-{i}",
                )
            )
    report = api.call("GET", "/events/e-1")
    assert report.status_code == 200
    body = report.json()
    assert (body["eventId"], body["eventType"], body["status"]) == (
        "e-1",
        "payment.success",
        "accepted",
    )
    assert [d["providerMessageId"] for d in body["deliveries"]] == [f"pm-{i}" for i in range(5)]
    assert all(d["recipient"] == "u1" and d["clicks"] == 0 for d in body["deliveries"])
    assert api.call("GET", "/events/no-such").status_code == 404

    pages, after = [], None
    while True:
        query = "?limit=2" + (f"&after={after}" if after is not None else "")
        page = api.call("GET", f"/users/u1/deliveries{query}").json()
        pages.append([d["providerMessageId"] for d in page["deliveries"]])
        after = page["next"]
        if after is None:
            break
    assert pages == [["pm-0", "pm-1"], ["pm-2", "pm-3"], ["pm-4"]]
    future = api.call("GET", "/users/u1/deliveries", None)
    assert len(future.json()["deliveries"]) == 5
    later = api.client.get(
        "/users/u1/deliveries",
        params={"since": "2999-01-01T00:00:00+00:00"},
        headers={"Authorization": f"Bearer {api.key}"},
    )
    assert later.json() == {"deliveries": [], "next": None}
    assert api.call("GET", "/users/u1/deliveries?limit=0").status_code == 422
    assert api.call("GET", "/users/u2/deliveries").json()["deliveries"] == []

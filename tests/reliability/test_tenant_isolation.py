"""Issue 7.6: tenant isolation. Two gyms whose user ids, course ids and event ids collide:
an event of gym A reaches only gym A's people (never a person of B, whatever ids it names),
and status, report and dead-letter queries for A never show B's rows.

Runs the pipeline's plain functions (accept -> plan -> send_chunk) on the outbox backend, so
what each person "received" is in the outbox with the address it went to.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import select

from channels import registry
from config.settings import CHANNELS, get_settings
from notifier import InvalidEvent, publish
from notifier.db import session_scope
from notifier.directory import import_document
from notifier.dlq import list_dead_letters
from notifier.models import DeadLetter, Delivery, OutboxMessage
from notifier.pipeline import accept, plan
from notifier.report import report
from notifier.sending import send_chunk
from notifier.status import AmbiguousEvent, event_status
from tests.helpers import event, person

pytestmark = pytest.mark.usefixtures("db")
A, B = "gym-iso-a", "gym-iso-b"
PREFS = {"priority": {p: ["line", "email", "sms"] for p in ("high", "medium", "low")}}


def member(uid: str, tenant: str, n: int, **extra: Any) -> dict[str, Any]:
    return person(
        uid,
        tenant=tenant,
        email=f"{uid}@{tenant}.example.com",
        phone=f"+88691{n:07d}",
        lineUserId=f"U{tenant[-1]}{n:031d}",
        preferences=PREFS,
        **extra,
    )


def gym(tenant: str, users: list[dict[str, Any]], bookings: list[str]) -> dict[str, Any]:
    return {
        "tenants": [{"id": tenant, "name": f"Gym {tenant}", "timezone": "Asia/Taipei"}],
        "users": users,
        "courses": [
            {
                "id": "c1",
                "tenantId": tenant,
                "courseName": "Yoga",
                "instructorName": "Lin",
                "startTime": "2026-11-23T19:00:00+08:00",
                "location": "Room A",
                "capacity": 20,
            }
        ],
        "bookings": [
            {"id": f"b-{uid}", "tenantId": tenant, "courseId": "c1", "userId": uid}
            for uid in bookings
        ],
    }


@pytest.fixture
def gyms(db: None, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for channel in CHANNELS:
        monkeypatch.setitem(get_settings().backends, channel, "outbox")
    registry.reset_channels()
    # The same ids in both gyms: u1, admin and course c1. "b-only" exists in B alone.
    import_document(
        gym(
            A, [member("u1", A, 1), member("admin", A, 2, role="admin"), member("u2", A, 3)], ["u2"]
        )
    )
    import_document(
        gym(
            B,
            [member("u1", B, 1), member("admin", B, 2, role="admin"), member("b-only", B, 3)],
            ["u1", "b-only"],
        )
    )
    yield
    registry.reset_channels()


def run(raw: dict[str, Any]) -> str:
    """accept -> plan -> send every chunk; returns the event's status."""
    accepted = accept(raw)
    if accepted.event_pk is not None:
        for channel, ids in plan(accepted.event_pk).chunks:
            send_chunk(channel, ids)
    return str(accepted.status)


def reached() -> set[tuple[str, str, str]]:
    """(tenant, recipient, address) of every message the outbox took for a person (the
    SNS topic of the event's category is the tenant's too, not a person)."""
    with session_scope() as session:
        return {
            (m.tenant_id, m.recipient, m.address or "")
            for m in session.scalars(select(OutboxMessage).where(OutboxMessage.channel != "topic"))
        }


def sent_rows(tenant: str) -> int:
    with session_scope() as session:
        return len(
            list(
                session.scalars(
                    select(Delivery.id).where(
                        Delivery.tenant_id == tenant, Delivery.status == "sent"
                    )
                )
            )
        )


def addresses(tenant: str) -> set[str]:
    return {a for t, _, a in reached() if t == tenant}


@pytest.mark.usefixtures("gyms")
def test_a_user_id_of_another_tenant_reaches_nobody() -> None:
    raw = event("payment.failed", user="b-only", tenant=A, eventId="x-1")
    with pytest.raises(InvalidEvent) as refused:
        publish(raw)
    assert refused.value.errors == [
        {"field": "metadata.userId", "message": f"no user 'b-only' in tenant '{A}'"}
    ]
    assert run(raw) == "rejected"
    with session_scope() as session:
        assert list(session.scalars(select(Delivery))) == []
    assert reached() == set()


@pytest.mark.usefixtures("gyms")
def test_colliding_ids_reach_only_the_events_own_tenant() -> None:
    assert run(event("payment.failed", user="u1", tenant=A, eventId="pay-1")) == "accepted"
    # B's u1 (same id) is never reached; A's u1 on each of its own addresses.
    assert reached() == {
        (A, "u1", f"U{A[-1]}{1:031d}"),
        (A, "u1", f"u1@{A}.example.com"),
        (A, "u1", "+886910000001"),
    }
    ev = event(
        "course.cancelled",
        user=None,
        tenant=A,
        eventId="cancel-1",
        data={"courseId": "c1", "courseName": "Yoga", "startTime": "2026-11-23T19:00:00+08:00"},
    )
    assert run(ev) == "accepted"  # A's c1 is booked by A's u2 only; B's c1 by B's people
    ev = event(
        "file.virus_detected",
        user=None,
        tenant=A,
        eventId="virus-1",
        data={"fileName": "x.exe", "uploadedBy": "b-only", "threatName": "EICAR"},
    )
    assert run(ev) == "accepted"  # the uploader named is not in A: A's admins only
    ev = event("system.maintenance", user=None, tenant=A, eventId="maint-1")
    assert run(ev) == "accepted"  # every active person of A
    assert {t for t, _, _ in reached()} == {A}
    assert {r for _, r, _ in reached()} == {"u1", "u2", "admin"}
    assert all(a.endswith(f"@{A}.example.com") for a in addresses(A) if "@" in a)


@pytest.mark.usefixtures("gyms")
def test_a_chunk_mixing_tenants_sends_each_to_its_own_person() -> None:
    """The stalled-work sweep re-sends deliveries of any tenants in one chunk."""
    pks = [
        accept(event("payment.failed", user="u1", tenant=t, eventId="same-id")).event_pk
        for t in (A, B)
    ]
    ids: dict[str, list[int]] = {}
    for pk in pks:
        assert pk is not None
        for channel, chunk in plan(pk).chunks:
            ids.setdefault(channel, []).extend(chunk)
    for channel, chunk in ids.items():
        assert len(chunk) == 2  # one row of each tenant in one chunk
        send_chunk(channel, chunk)
    for tenant in (A, B):
        assert {a for t, r, a in reached() if t == tenant and "@" in a} == {
            f"u1@{tenant}.example.com"
        }


@pytest.mark.usefixtures("gyms")
def test_status_report_and_dead_letters_of_a_show_nothing_of_b() -> None:
    for tenant in (A, B):
        assert run(event("payment.failed", user="u1", tenant=tenant, eventId="shared")) == (
            "accepted"
        )
    assert run(event("system.maintenance", user=None, tenant=B, eventId="b-maint")) == "accepted"
    assert run(event("payment.failed", user="nobody", tenant=B, eventId="b-bad")) == "rejected"

    status_a = event_status("shared", A)
    assert status_a is not None and status_a["event"]["tenantId"] == A
    assert sorted((d["recipient"], d["channel"], d["status"]) for d in status_a["deliveries"]) == [
        ("topic:PaymentUpdates", "topic", "sent"),
        ("u1", "email", "sent"),
        ("u1", "line", "sent"),
        ("u1", "sms", "sent"),
    ]  # B's rows of its own "shared" event are not here
    with pytest.raises(AmbiguousEvent):
        event_status("shared")  # without a tenant the id is ambiguous: no guessing
    assert event_status("b-maint", A) is None
    assert event_status("b-bad", A) is None

    now = dt.datetime.now(dt.UTC)
    report_a, report_b = report(A, days=1, now=now), report(B, days=1, now=now)
    assert report_a["tenantId"] == A and report_a["totalSent"] == sent_rows(A)
    assert report_b["totalSent"] == sent_rows(B) > sent_rows(A)
    assert set(report_a["byEventType"]) == {"payment.failed"}

    with session_scope() as session:
        session.add(DeadLetter(tenant_id=B, kind="ingest", payload={"body": "{}"}, error="bad"))
    assert [d["tenantId"] for d in list_dead_letters(tenant=B)] == [B]
    assert list_dead_letters(tenant=A) == []

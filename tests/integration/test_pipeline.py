"""The spine end to end: a real worker, the real broker, the real database."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from celery.signals import before_task_publish
from sqlalchemy import select

from notifier import InvalidEvent, notify, publish
from notifier.db import session_scope
from notifier.directory import import_document
from notifier.models import DeadLetter, Event, OutboxMessage
from notifier.pipeline import plan, release_deferred
from notifier.status import event_status
from tasks import enqueue
from tests.helpers import TENANT, broker_unreachable, directory, event, person, wait_for
from tests.integration.conftest import count, deliveries, wait_settled

pytestmark = pytest.mark.usefixtures("db", "celery_worker")


def test_event_flows_to_the_outbox_and_status(celery_worker: Any) -> None:
    import_document(directory(person("u1")))
    ev = event("payment.success", eventId="pay-evt-1")
    result = notify.delay(ev).get(timeout=30)
    assert result == {"event_id": "pay-evt-1", "status": "accepted", "errors": []}
    rows = wait_settled(expected=3)
    assert sorted((r.channel, r.status) for r in rows) == [
        ("email", "sent"),
        ("line", "sent"),
        ("topic", "sent"),
    ]
    doc = event_status("pay-evt-1")
    assert doc is not None
    assert doc["event"] == {
        "eventId": "pay-evt-1",
        "eventType": "payment.success",
        "tenantId": TENANT,
        "status": "accepted",
        "errors": [],
    }
    line = next(d for d in doc["deliveries"] if d["channel"] == "line")
    assert set(line) == {
        "recipient",
        "channel",
        "status",
        "attempts",
        "providerMessageId",
        "error",
        "notBefore",
        "sentAt",
    }
    assert line["recipient"] == "u1" and line["attempts"] == 1 and line["sentAt"]
    with session_scope() as session:
        stored = {m.channel: m for m in session.scalars(select(OutboxMessage))}
    assert set(stored) == {"line", "email", "topic"}
    assert ev["data"]["paymentId"] in (stored["email"].body_text or "") + (
        stored["email"].body_html or ""
    ) + (stored["email"].subject or "")
    assert stored["email"].address == "u1@example.com"
    assert stored["email"].body_html and "<html" in stored["email"].body_html.lower()


def test_the_task_message_names_the_event_without_its_data() -> None:
    """Celery logs and task events (Flower) show a task's argsrepr: never the event data."""
    published: list[dict[str, Any]] = []

    def capture(headers: dict[str, Any] | None = None, **_: Any) -> None:
        published.append(headers or {})

    before_task_publish.connect(capture, weak=False)
    try:
        import_document(directory(person("u1")))
        notify.delay(event("payment.success", eventId="pay-argsrepr")).get(timeout=30)
    finally:
        before_task_publish.disconnect(capture)
    [sent] = [h for h in published if h.get("task") == "notifier.notify"]
    identity = {"eventId": "pay-argsrepr", "eventType": "payment.success", "tenantId": TENANT}
    assert sent["argsrepr"] == repr((identity,))
    assert sent["kwargsrepr"] == "{}"


def test_same_event_twice_creates_one_set_of_deliveries() -> None:
    import_document(directory(person("u1")))
    ev = event("member.registered")  # no eventId: the canonical hash is the key
    first = notify.delay(ev).get(timeout=30)
    second = notify.delay(ev).get(timeout=30)
    assert first["status"] == "accepted"
    assert second == {"event_id": first["event_id"], "status": "duplicate", "errors": []}
    rows = wait_settled(expected=3, timeout=120)
    assert len(rows) == 3
    assert count(Event) == 1


def _nested(depth: int) -> Any:
    value: Any = "bottom"
    for _ in range(depth):
        value = [value]
    return value


BAD_EVENTS: list[tuple[str, Any, str]] = [
    ("malformed JSON", '{"eventType": "member.registered", "tenantId": ', "malformed JSON"),
    ("not an object", [1, 2, 3], "JSON object"),
    ("unknown type", event("member.registered", eventType="member.abducted"), "unknown event type"),
    ("unknown tenant", event("member.registered", tenant="gym-nowhere"), "unknown tenant"),
    ("unknown user", event("member.registered", user="u-ghost"), "no user 'u-ghost'"),
    ("missing fields", event("course.reminder", data={"courseName": "Yoga"}), "Field required"),
    (
        "wrong types",
        event(
            "member.membership_expiring",
            data={
                "memberName": 7,
                "membershipType": ["x"],
                "expiryDate": "soon",
                "daysLeft": "many",
            },
        ),
        "valid",
    ),
    (
        "NUL character",
        event("member.registered", data={"memberName": "Amy\x00"}, eventId="nul\x00id"),
        "NUL character",
    ),
    (
        "deep nesting",
        event("member.registered", data={"memberName": "A", "x": _nested(200)}),
        "nested more than 32 levels",
    ),
    (
        "1 MB payload",
        event("member.registered", data={"memberName": "x" * (1024 * 1024)}),
        "byte limit",
    ),
]


@pytest.mark.parametrize(("label", "raw", "needle"), BAD_EVENTS, ids=[b[0] for b in BAD_EVENTS])
def test_bad_input_is_recorded_as_rejected(label: str, raw: Any, needle: str) -> None:
    import_document(directory(person("u1")))
    result = notify.delay(raw).get(timeout=30)
    assert result["status"] == "rejected"
    assert result["errors"] and needle in str(result["errors"])
    with session_scope() as session:
        stored = session.scalar(select(Event).where(Event.event_id == result["event_id"]))
    assert stored is not None and stored.status == "rejected"
    assert stored.errors == result["errors"]
    assert deliveries() == []
    # the worker is alive and nothing else is lost: a good event still goes through
    assert notify.delay(event("member.registered")).get(timeout=30)["status"] == "accepted"
    assert len(wait_settled(expected=3)) == 3


def test_a_corrected_resend_of_a_rejected_event_is_accepted() -> None:
    import_document(directory(person("u1")))
    bad = event("member.registered", eventId="evt-fixme", data={})
    assert notify.delay(bad).get(timeout=30)["status"] == "rejected"
    good = event("member.registered", eventId="evt-fixme")
    assert notify.delay(good).get(timeout=30)["status"] == "accepted"
    assert count(Event) == 1
    assert len(wait_settled(expected=3)) == 3


def test_publish_validates_in_the_caller() -> None:
    import_document(directory(person("u1")))
    with pytest.raises(InvalidEvent) as exc:
        publish(event("payment.failed", data={"amount": "x"}, metadata={"priority": "urgent"}))
    fields = {e["field"] for e in exc.value.errors}
    assert {
        "data.amount",
        "data.currency",
        "data.paymentId",
        "data.reason",
        "metadata.priority",
    } <= fields
    with pytest.raises(InvalidEvent, match="unknown tenant"):
        publish(event("member.registered", tenant="gym-b"))
    assert count(Event) == 0
    event_id = publish(event("member.registered"))
    wait_for(lambda: event_status(event_id))
    assert len(wait_settled(expected=3)) == 3


def test_a_tenant_of_another_tenant_is_never_reached() -> None:
    import_document(directory(person("u1")))
    import_document(directory(person("b1", tenant="gym-b"), tenant="gym-b"))
    result = notify.delay(event("member.registered", user="b1")).get(timeout=30)
    assert result["status"] == "rejected"
    assert "no user 'b1' in tenant 'gym-a'" in str(result["errors"])
    assert deliveries() == []


def test_tenant_wide_event_is_bulk_inserted_and_sent_in_chunks() -> None:
    people = [person(f"m{i:04d}", preferences={}) for i in range(1200)]
    people.append(person("gone", active=False, preferences={}))
    import_document({**directory(*people)})
    ev = event(
        "system.maintenance",
        user=None,
        eventId="maint-1",
        metadata={"channels": ["web_push", "email"]},
    )
    # web_push is the default channel and needs a subscription: give none, so the
    # 1,200 deliveries are recorded as skipped (no address); the narrowing leaves out topic
    result = notify.delay(ev).get(timeout=30)
    assert result["status"] == "accepted"
    rows = wait_settled(expected=1200, timeout=120)
    assert len(rows) == 1200
    assert {r.recipient for r in rows if r.channel == "web_push"} == {p["id"] for p in people[:-1]}
    assert all(
        r.status == "skipped" and r.reason == "no address" for r in rows if r.channel == "web_push"
    )


def test_broadcast_chunks_follow_the_chunk_size() -> None:
    from tests.helpers import TENANT as tenant_id

    people = [person(f"m{i:04d}") for i in range(450)]
    import_document(directory(*people))
    with session_scope() as session:
        session.add(
            Event(
                event_id="maint-2",
                tenant_id=tenant_id,
                event_type="system.maintenance",
                status="accepted",
                priority="high",
                payload=event("system.maintenance", user=None),
            )
        )
    with session_scope() as session:
        pk = session.scalar(select(Event.id).where(Event.event_id == "maint-2"))
    assert pk is not None
    result = plan(pk)
    # high -> line + sms for 450 people, chunks of 100, plus one topic delivery
    assert result.counts == {"line": 450, "sms": 450, "topic": 1}
    assert [(ch, len(ids)) for ch, ids in result.chunks] == (
        [("line", 100)] * 4 + [("line", 50)] + [("sms", 100)] * 4 + [("sms", 50)] + [("topic", 1)]
    )
    again = plan(pk)  # a redelivered plan task inserts nothing new
    assert again.counts == result.counts
    assert len(deliveries()) == 901


def test_quiet_hours_defer_then_beat_releases() -> None:
    tz = "Asia/Taipei"
    local_now = dt.datetime.now(dt.UTC).astimezone(dt.timezone(dt.timedelta(hours=8)))
    start = (local_now - dt.timedelta(hours=1)).strftime("%H:%M")
    end = (local_now + dt.timedelta(hours=1)).strftime("%H:%M")
    prefs = {
        "priority": {"medium": ["email"]},
        "schedule": {"quietHours": {"start": start, "end": end}, "timezone": tz},
    }
    import_document(directory(person("u1", preferences=prefs)))
    ev = event("member.registered", metadata={"userId": "u1", "channels": ["email"]})
    assert notify.delay(ev).get(timeout=30)["status"] == "accepted"
    [row] = wait_settled(expected=1)
    assert row.status == "deferred" and row.not_before is not None
    assert (
        dt.timedelta(minutes=50)
        < row.not_before - dt.datetime.now(dt.UTC)
        < dt.timedelta(minutes=61)
    )
    assert release_deferred() == []  # not yet
    later = row.not_before + dt.timedelta(seconds=1)
    chunks = release_deferred(now=later)
    assert chunks == [("email", [row.id])]
    assert release_deferred(now=later) == []  # released exactly once
    enqueue.send_deliveries(chunks)
    [sent] = wait_settled(expected=1)
    assert sent.status == "sent"


def test_transient_failures_retry_then_succeed(scripted: Any) -> None:
    scripted.use("email")
    scripted.channel.reset("transient", "transient")
    import_document(directory(person("u1", preferences={"priority": {"medium": ["email"]}})))
    notify.delay(event("member.registered", metadata={"userId": "u1", "channels": ["email"]}))
    [row] = wait_settled(expected=1, timeout=60)
    assert row.status == "sent"
    assert row.attempts == 3
    calls = scripted.channel.calls
    assert len(calls) == 3 and len({c.retry_key for c in calls}) == 1  # same idempotency key


def test_retries_exhausted_fail_with_dead_letter_and_others_unaffected(scripted: Any) -> None:
    scripted.use("email")
    scripted.channel.reset(*["transient"] * 10)
    import_document(directory(person("u1")))
    notify.delay(event("member.registered"))
    rows = {r.channel: r for r in wait_settled(expected=3, timeout=90)}
    assert rows["line"].status == "sent" and rows["topic"].status == "sent"
    email = rows["email"]
    assert email.status == "failed"
    assert email.reason is not None and email.reason.startswith("retries exhausted")
    assert email.attempts == 4  # the first try + NOTIFIER_SEND_MAX_RETRIES=3
    with session_scope() as session:
        [letter] = session.scalars(select(DeadLetter))
    assert letter.delivery_id == email.id and "scripted 503" in letter.error


def test_permanent_failure_is_not_retried_and_falls_back_once(scripted: Any) -> None:
    scripted.use("line", "sms")
    scripted.channel.reset("permanent", "permanent")
    prefs = {"priority": {"high": ["line", "sms"], "medium": ["line"]}}
    import_document(directory(person("u1", preferences=prefs)))
    notify.delay(event("member.registered"))
    rows = {r.channel: r for r in wait_settled(expected=3)}
    assert rows["line"].status == "failed" and rows["line"].attempts == 1
    # the medium list is only line: the fallback is the next channel the person listed, sms
    fallback = rows["sms"]
    assert fallback.fallback_of == rows["line"].id
    assert fallback.status == "failed"  # the fallback failed too, and does not fall back again
    assert len(scripted.channel.calls) == 2
    assert set(rows) == {"line", "sms", "topic"}


def test_fallback_stays_inside_metadata_channels(scripted: Any) -> None:
    scripted.use("line")
    scripted.channel.reset("permanent")
    prefs = {"priority": {"high": ["line", "sms"], "medium": ["line"]}}
    import_document(directory(person("u1", preferences=prefs)))
    notify.delay(event("member.registered", metadata={"userId": "u1", "channels": ["line"]}))
    [row] = wait_settled(expected=1)
    assert row.status == "failed"
    assert len(deliveries()) == 1


def test_permanent_address_failure_writes_a_suppression(scripted: Any) -> None:
    from notifier.models import Suppression

    scripted.use("email")
    scripted.channel.reset("suppress")
    import_document(directory(person("u1", preferences={"priority": {"medium": ["email"]}})))
    notify.delay(event("member.registered", metadata={"userId": "u1", "channels": ["email"]}))
    [row] = wait_settled(expected=1)
    assert row.status == "suppressed"
    with session_scope() as session:
        [sup] = session.scalars(select(Suppression))
    assert (sup.channel, sup.address) == ("email", "u1@example.com")
    # the next event skips the suppressed address without calling the provider
    notify.delay(event("payment.success", metadata={"userId": "u1", "channels": ["email"]}))
    rows = wait_settled(expected=2)
    assert rows[1].status == "suppressed" and rows[1].reason == "address suppressed"
    assert len(scripted.channel.calls) == 1


@pytest.mark.parametrize("outcome", ["disable", "park"])
def test_a_disabled_or_parked_channel_falls_back_and_is_skipped_next_time(
    scripted: Any, outcome: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import notifier.outcomes
    from notifier.models import ChannelState

    alarms: list[tuple[str, str]] = []
    monkeypatch.setattr(
        notifier.outcomes,
        "raise_alarm",
        lambda severity, title, **kw: alarms.append((severity, kw["key"])),
    )
    scripted.use("line")
    scripted.channel.reset(outcome)
    prefs = {"priority": {"high": ["line", "sms"], "medium": ["line"]}}
    import_document(directory(person("u1", preferences=prefs)))
    notify.delay(event("member.registered"))
    rows = {r.channel: r for r in wait_settled(expected=3)}
    assert rows["line"].status == "failed"
    assert rows["sms"].status == "sent" and rows["sms"].fallback_of == rows["line"].id
    with session_scope() as session:
        [state] = session.scalars(select(ChannelState))
    assert (state.tenant_id, state.channel) == (TENANT, "line")
    assert state.state == ("disabled" if outcome == "disable" else "parked")
    assert (state.until is None) == (outcome == "disable")
    # the next event does not even try LINE for this tenant
    notify.delay(event("payment.success"))
    later = [r for r in wait_settled(expected=5) if r.id not in {x.id for x in rows.values()}]
    line = next(r for r in later if r.channel == "line")
    assert line.status == "skipped" and line.reason.startswith(f"channel {state.state}")
    assert len(scripted.channel.calls) == 1
    expected = (
        ("CRITICAL", "channel_disabled:gym-a:line")
        if outcome == "disable"
        else ("ERROR", "quota:gym-a:line")
    )
    assert alarms == [expected]


def test_a_channel_without_its_settings_is_not_selected(monkeypatch: pytest.MonkeyPatch) -> None:
    from config.settings import get_settings

    monkeypatch.setitem(get_settings().backends, "web_push", "webpush")
    monkeypatch.delenv("VAPID_PRIVATE_KEY", raising=False)
    import_document(directory(person("u1", preferences={"priority": {"low": ["web_push"]}})))
    notify.delay(event("file.uploaded", metadata={"userId": "u1", "channels": ["web_push"]}))
    [row] = wait_settled(expected=1)
    assert row.status == "skipped"
    assert row.reason == "channel not configured: VAPID_PRIVATE_KEY unset"


def test_publish_while_the_broker_is_down_stores_the_event_for_later(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from notifier.pipeline import unplanned_events

    import_document(directory(person("u1")))
    broker_unreachable(monkeypatch)
    event_id = publish(event("member.registered", eventId="while-down"))
    assert event_id == "while-down"
    doc = event_status("while-down")
    assert doc is not None and doc["event"]["status"] == "accepted" and doc["deliveries"] == []
    with session_scope() as session:
        pk = session.scalar(select(Event.id).where(Event.event_id == "while-down"))
    assert unplanned_events() == []  # too young to be called lost
    later = dt.datetime.now(dt.UTC) + dt.timedelta(minutes=10)
    assert unplanned_events(now=later) == [pk]
    monkeypatch.undo()
    assert enqueue.start_event(pk)  # what the recovery task does once the broker is back
    assert len(wait_settled(expected=3)) == 3
    assert unplanned_events(now=later) == []


def test_links_in_messages_are_signed_click_tracked_links() -> None:
    import re

    from fastapi.testclient import TestClient

    from notifier.models import Click
    from notifier.signing import verify
    from notifier.web.app import create_app

    import_document(directory(person("u1", preferences={"priority": {"high": ["line", "email"]}})))
    ev = event("payment.failed", metadata={"userId": "u1", "channels": ["email", "line"]})
    retry_url = ev["data"]["retryUrl"]
    assert retry_url.startswith("http")
    notify.delay(ev).get(timeout=30)
    wait_settled(expected=2)
    with session_scope() as session:
        stored = {m.channel: m for m in session.scalars(select(OutboxMessage))}
    html, text = stored["email"].body_html or "", stored["email"].body_text or ""
    assert (
        retry_url not in html
        and retry_url not in text
        and retry_url not in (stored["line"].body_text or "")
    )
    tokens = re.findall(r'href="https?://[^"]+/c/([^"]+)"', html)
    targets = {verify(t, "click")["u"]: t for t in tokens}
    assert retry_url in targets  # and the brand's website link, tracked the same way
    assert "/u/" in html  # the unsubscribe link is ours: not wrapped
    with TestClient(create_app()) as client:
        response = client.get(f"/c/{targets[retry_url]}", follow_redirects=False)
    assert response.status_code == 302 and response.headers["location"] == retry_url
    with session_scope() as session:
        [click] = session.scalars(select(Click))
    assert (click.tenant_id, click.channel, click.url) == (TENANT, "email", retry_url)


def _task_tree() -> Any:
    """Record (name, id, root id, parent id) of every task the in-process worker runs."""
    from celery import signals

    ran: list[tuple[str, str, str | None, str | None]] = []

    def record(task_id: str, task: Any, **_: Any) -> None:
        request = task.request
        ran.append((task.name, task_id, request.root_id, request.parent_id))

    signals.task_prerun.connect(record, weak=False)
    return ran, record


def test_one_event_is_one_canvas_tree_with_one_root() -> None:
    from celery import signals

    import_document(directory(person("u1")))
    ran, record = _task_tree()
    try:
        notify.delay(event("payment.success", eventId="tree-1")).get(timeout=30)
        wait_settled(expected=3)  # LINE, email and the PaymentUpdates topic
        wait_for(lambda: len(ran) >= 6 or None)
    finally:
        signals.task_prerun.disconnect(record)
    by_name: dict[str, list[tuple[str, str | None, str | None]]] = {}
    for name, task_id, root, parent in ran:
        by_name.setdefault(name, []).append((task_id, root, parent))
    [(notify_id, notify_root, _)] = by_name["notifier.notify"]
    [(resolve_id, _, resolve_parent)] = by_name["notifier.resolve_recipients"]
    [(select_id, _, select_parent)] = by_name["notifier.select_channels"]
    sends = [
        (name, parent)
        for name, rows in by_name.items()
        if name.startswith("notifier.send_")
        for _, _, parent in rows
    ]
    assert sorted(name for name, _ in sends) == [
        "notifier.send_email",
        "notifier.send_line",
        "notifier.send_topic",
    ]
    assert {root for _, _, root, _ in ran} == {notify_id} and notify_root in (None, notify_id)
    assert resolve_parent == notify_id and select_parent == resolve_id
    assert {parent for _, parent in sends} == {select_id}


def test_a_broadcast_is_planned_in_pages_each_once(monkeypatch: pytest.MonkeyPatch) -> None:
    import dataclasses

    from config import settings as settings_module

    paged = dataclasses.replace(settings_module.get_settings(), plan_page_size=3)
    monkeypatch.setattr("notifier.pipeline.get_settings", lambda: paged)
    prefs = {"priority": {"high": ["email"]}}
    import_document(directory(*(person(f"u{i:02d}", preferences=prefs) for i in range(8))))
    from celery import signals

    ran, record = _task_tree()
    try:
        publish(event("system.maintenance", eventId="paged", metadata={"channels": ["email"]}))
        rows = wait_settled(expected=8)
    finally:
        signals.task_prerun.disconnect(record)
    assert sorted(r.recipient for r in rows) == [f"u{i:02d}" for i in range(8)]
    assert {r.status for r in rows} == {"sent"}
    assert [name for name, *_ in ran].count("notifier.select_channels") == 3  # 3 + 3 + 2
    with session_scope() as session:
        pk = session.scalar(select(Event.id).where(Event.event_id == "paged"))
    assert pk is not None
    # A repeated page task changes nothing: no new rows, nothing sent twice.
    assert plan(pk).chunks == []
    assert count(OutboxMessage) == 8

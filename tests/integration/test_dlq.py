"""`notifier dlq list|replay`: dead letters of failed deliveries and of ingested messages,
replayed through a real worker, idempotently."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from notifier import notify
from notifier.db import session_scope
from notifier.directory import import_document
from notifier.dlq import list_dead_letters, replay
from notifier.ingest import ingest_message
from notifier.models import DeadLetter, Event
from tasks import enqueue
from tests.helpers import TENANT, broker_unreachable, directory, event, person, wait_for
from tests.integration.conftest import deliveries, wait_settled

pytestmark = pytest.mark.usefixtures("db", "celery_worker")

BIN = Path(sys.executable).parent
QUEUE = "https://sqs.us-east-1.amazonaws.com/123456789012/events"
EMAIL_ONLY = {"priority": {"medium": ["email"]}}


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "notifier"), *args], capture_output=True, text=True, timeout=120
    )


def failed_email(scripted: Any, user: str = "u1", tenant: str = TENANT) -> int:
    """An email delivery that failed permanently; returns its dead letter's id."""
    with scripted.channel.lock:
        scripted.channel.script.append("permanent")
    notify.delay(event("member.registered", user=user, tenant=tenant))
    row = wait_for(
        lambda: next(
            (d for d in deliveries(tenant_id=tenant, recipient=user) if d.status == "failed"), None
        )
    )
    with session_scope() as session:
        letter = session.scalar(select(DeadLetter).where(DeadLetter.delivery_id == row.id))
        assert letter is not None
        return letter.id


def test_failed_delivery_replayed_is_sent_once(scripted: Any) -> None:
    scripted.use("email")
    import_document(directory(person("u1", preferences=EMAIL_ONLY)))
    letter_id = failed_email(scripted)
    [listed] = list_dead_letters()
    assert listed["id"] == letter_id and listed["kind"] == "delivery"
    assert listed["payload"]["channel"] == "email" and listed["replayedAt"] is None
    assert "scripted 400" in listed["error"]

    result = replay(enqueue=enqueue, ids=[letter_id])
    assert (result.replayed, result.skipped, result.failed) == ([letter_id], {}, {})
    wait_settled(expected=2)  # the email and the MemberActivity topic
    [row] = deliveries(channel="email")
    assert row.status == "sent" and row.reason is None
    assert row.attempts == 2  # the failed attempt is kept, the replay added one
    assert len(scripted.channel.calls) == 2

    again = replay(enqueue=enqueue, ids=[letter_id])
    assert again.replayed == [] and again.skipped == {letter_id: "already replayed"}
    assert replay(enqueue=enqueue, all=True).replayed == []  # nothing pending
    [listed] = list_dead_letters()
    assert listed["replayedAt"] is not None
    assert len(scripted.channel.calls) == 2  # nothing was sent again


def test_dead_letter_of_a_delivery_sent_since_is_left_alone(scripted: Any) -> None:
    scripted.use("email")
    import_document(directory(person("u1", preferences=EMAIL_ONLY)))
    letter_id = failed_email(scripted)
    replay(enqueue=enqueue, ids=[letter_id])
    wait_settled(expected=2)
    [row] = deliveries(channel="email")
    assert row.status == "sent"
    # a second dead letter for the same delivery (a redelivered send task wrote it)
    with session_scope() as session:
        late = DeadLetter(tenant_id=TENANT, kind="delivery", delivery_id=row.id, error="late")
        session.add(late)
        session.flush()
        late_id = late.id

    result = replay(enqueue=enqueue, all=True)
    assert result.replayed == []
    assert result.skipped == {late_id: f"delivery {row.id} is sent, not failed"}
    assert [d["replayedAt"] for d in list_dead_letters() if d["id"] == late_id] == [None]
    assert len(scripted.channel.calls) == 2


def test_replay_while_the_broker_is_down_leaves_the_delivery_queued(
    scripted: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from notifier.pipeline import requeue_stalled

    scripted.use("email")
    import_document(directory(person("u1", preferences=EMAIL_ONLY)))
    letter_id = failed_email(scripted)

    broker_unreachable(monkeypatch)
    assert replay(enqueue=enqueue, ids=[letter_id]).replayed == [letter_id]
    [row] = deliveries(channel="email")
    assert row.status == "queued"
    later = dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)
    assert ("email", [row.id]) in requeue_stalled(now=later)  # the scan sends it later


def test_replay_and_list_stay_inside_the_tenant(scripted: Any) -> None:
    scripted.use("email")
    for tenant in ("gym-a", "gym-b"):
        import_document(
            directory(person("u1", tenant=tenant, preferences=EMAIL_ONLY), tenant=tenant)
        )
    letter_a = failed_email(scripted, tenant="gym-a")
    letter_b = failed_email(scripted, tenant="gym-b")
    assert [d["id"] for d in list_dead_letters(tenant="gym-a")] == [letter_a]

    result = replay(enqueue=enqueue, all=True, tenant="gym-b")
    assert result.replayed == [letter_b]
    assert replay(enqueue=enqueue, ids=[letter_a], tenant="gym-b").skipped == {
        letter_a: "no such dead letter in tenant gym-b"
    }
    wait_for(lambda: [d.status for d in deliveries(tenant_id="gym-b", channel="email")] == ["sent"])
    assert [d.status for d in deliveries(tenant_id="gym-a", channel="email")] == ["failed"]


def test_ingest_dead_letters_replay_by_event_id() -> None:
    import_document(directory(person("u1")))
    body = json.dumps(event("payment.success", user="u9", eventId="late-user-1"))
    message = {"Body": body, "MessageId": "m-1", "Attributes": {}}
    # the same message dead-lettered twice (SQS delivered it twice)
    assert ingest_message(message, QUEUE, enqueue) == "dead_lettered"
    assert ingest_message(message, QUEUE, enqueue) == "dead_lettered"
    first, second = sorted(d["id"] for d in list_dead_letters(tenant=TENANT))
    assert list_dead_letters()[0]["payload"] == {
        "messageId": "m-1",
        "queue": QUEUE,
        "bodyBytes": len(body.encode()),
        "truncated": False,
    }

    still_bad = replay(enqueue=enqueue, ids=[first])
    assert still_bad.replayed == [] and "no user 'u9'" in still_bad.failed[first]
    assert [d["replayedAt"] for d in list_dead_letters()] == [None, None]  # still pending

    import_document(directory(person("u1"), person("u9")))  # the directory caught up
    result = replay(enqueue=enqueue, all=True)
    assert result.replayed == [first, second] and result.failed == {}
    with session_scope() as session:
        [stored] = session.scalars(select(Event))
    assert (stored.event_id, stored.status) == ("late-user-1", "accepted")
    rows = wait_settled()
    assert {r.recipient for r in rows} - {"topic:PaymentUpdates"} == {"u9"}
    assert len(rows) == len({(r.recipient, r.channel) for r in rows})  # one set, not two
    assert replay(enqueue=enqueue, all=True).replayed == []


def test_cli_lists_and_replays(scripted: Any) -> None:
    scripted.use("email")
    import_document(directory(person("u1", preferences=EMAIL_ONLY)))
    letter_id = failed_email(scripted)
    unreadable = {"Body": "{oops", "MessageId": "m-2", "Attributes": {}}
    ingest_message(unreadable, QUEUE, enqueue)

    listed = cli("dlq", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    kinds = {row["kind"]: row for row in json.loads(listed.stdout)}
    assert set(kinds) == {"delivery", "ingest"}
    assert "{oops" not in listed.stdout  # an ingested body is never printed
    table = cli("dlq", "list", "--tenant", TENANT)
    assert f"#{letter_id}" in table.stdout and "ingest" not in table.stdout

    usage = cli("dlq", "replay")
    assert usage.returncode == 2 and "--id" in usage.stderr
    first = cli("dlq", "replay", "--id", str(letter_id))
    assert first.returncode == 0, first.stderr
    assert first.stdout.strip() == f"replayed #{letter_id}"
    wait_for(lambda: [d.status for d in deliveries(channel="email")] == ["sent"])
    second = cli("dlq", "replay", "--id", str(letter_id))
    assert second.stdout.strip() == f"skipped  #{letter_id}: already replayed"

    ingest_id = kinds["ingest"]["id"]
    failing = cli("dlq", "replay", "--all", "--json")
    assert failing.returncode == 1
    assert json.loads(failing.stdout)["failed"] == {str(ingest_id): kinds["ingest"]["error"]}

"""`notifier ingest sqs`: the SQS consumer against moto's server, the real database and broker."""

from __future__ import annotations

import datetime as dt
import json
import logging
import signal
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from sqlalchemy import select

from config.settings import get_settings
from notifier.db import session_scope
from notifier.directory import import_document
from notifier.ingest import (
    DEAD_LETTER_BODY_BYTES,
    UnreadableMessage,
    consume,
    dead_letter_payload,
    to_event,
)
from notifier.models import DeadLetter, Event
from tasks import enqueue
from tests.helpers import (
    TENANT,
    broker_unreachable,
    directory,
    environment,
    event,
    person,
    wait_for,
)
from tests.integration.conftest import wait_settled
from tests.peers.moto import MotoPeer, moto_peer  # noqa: F401  (the session's moto server)
from tests.peers.slack import SlackWebhook

BIN = Path(sys.executable).parent
DATABASE_DOWN = "postgresql+psycopg://postgres@127.0.0.1:1/unreachable"


class Queues:
    def __init__(self, peer: MotoPeer):
        self.sqs = boto3.client("sqs", endpoint_url=peer.url, region_name="us-east-1")

    def create(self, name: str = "events", **attributes: str) -> str:
        if name.endswith(".fifo"):
            attributes["FifoQueue"] = "true"
        url: str = self.sqs.create_queue(QueueName=name, Attributes=attributes)["QueueUrl"]
        return url

    def send(self, url: str, body: Any, **kw: Any) -> None:
        text = body if isinstance(body, str) else json.dumps(body, ensure_ascii=False)
        self.sqs.send_message(QueueUrl=url, MessageBody=text, **kw)

    def counts(self, url: str) -> tuple[int, int]:
        """(visible, in flight): (0, 0) once every message was deleted."""
        attrs = self.sqs.get_queue_attributes(
            QueueUrl=url,
            AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
        )["Attributes"]
        return (
            int(attrs["ApproximateNumberOfMessages"]),
            int(attrs["ApproximateNumberOfMessagesNotVisible"]),
        )


def aws_environment(peer: MotoPeer) -> dict[str, str]:
    """moto's endpoint and credentials, with the channel backends pinned as they are: AWS
    credentials alone would switch email and SMS to their real backends."""
    backends = {f"NOTIFIER_{ch.upper()}_BACKEND": b for ch, b in get_settings().backends.items()}
    return {**peer.env(), **backends}


@pytest.fixture
def queues(moto_peer: MotoPeer, db: None) -> Iterator[Queues]:  # noqa: F811
    moto_peer.reset()
    with environment(aws_environment(moto_peer), pin_backends=False):
        import_document(directory(person("u1")))
        yield Queues(moto_peer)


def events_by_id() -> dict[str, Event]:
    with session_scope() as session:
        return {e.event_id: e for e in session.scalars(select(Event))}


def dead_letters() -> list[DeadLetter]:
    with session_scope() as session:
        return list(session.scalars(select(DeadLetter).order_by(DeadLetter.id)))


def sns_envelope(message: dict[str, Any]) -> dict[str, Any]:
    return {
        "Type": "Notification",
        "MessageId": str(uuid.uuid4()),
        "TopicArn": "arn:aws:sns:us-east-1:123456789012:kyo-fileprocessing",
        "Message": json.dumps(message, ensure_ascii=False),
        "Timestamp": "2026-11-22T01:00:00.000Z",
    }


def eventbridge(detail_type: str, detail: dict[str, Any], source: str = "kyo.files") -> dict:
    return {
        "version": "0",
        "id": f"eb-{uuid.uuid4()}",
        "detail-type": detail_type,
        "source": source,
        "account": "123456789012",
        "time": "2026-11-22T01:00:00Z",
        "region": "us-east-1",
        "resources": [],
        "detail": detail,
    }


FILE_PROCESSED_DETAIL = {
    "tenantId": TENANT,
    "userId": "u1",
    "priority": "high",
    "fileName": "photo.jpg",
    "category": "progress_photos",
    "status": "completed",
}


# -- body -> event ----------------------------------------------------------------------


def test_eventbridge_detail_maps_to_our_event() -> None:
    flat = eventbridge("File Processed", FILE_PROCESSED_DETAIL)
    assert to_event(json.dumps(flat)) == {
        "eventId": flat["id"],
        "eventType": "file.processed",
        "tenantId": TENANT,
        "timestamp": "2026-11-22T01:00:00Z",
        "source": "kyo.files",
        "data": {"fileName": "photo.jpg", "category": "progress_photos", "status": "completed"},
        "metadata": {"userId": "u1", "priority": "high"},
    }
    nested = eventbridge(
        "payment.success",  # a detail type naming our event type maps to itself
        {
            "tenantId": TENANT,
            "eventId": "pay-1",
            "data": {"paymentId": "p1", "amount": "10", "currency": "TWD"},
            "metadata": {"userId": "u1", "priority": "low"},
            "priority": "high",  # metadata wins over the detail's own field
        },
        source="billing",
    )
    mapped = to_event(json.dumps(sns_envelope(nested)))
    assert mapped["eventId"] == "pay-1"  # the producer's key beats the EventBridge id
    assert mapped["eventType"] == "payment.success"
    assert mapped["data"] == {"paymentId": "p1", "amount": "10", "currency": "TWD"}
    assert mapped["metadata"] == {"userId": "u1", "priority": "low"}


def test_unreadable_bodies_say_why() -> None:
    with pytest.raises(UnreadableMessage, match="malformed JSON in the message body"):
        to_event("{not json")
    with pytest.raises(UnreadableMessage, match="SNS notification's Message"):
        to_event(json.dumps({"Type": "Notification", "Message": "plain text"}))
    with pytest.raises(UnreadableMessage, match="not an event"):
        to_event(json.dumps({"hello": "world"}))
    with pytest.raises(UnreadableMessage, match="'File Deleted'") as raised:
        to_event(json.dumps(eventbridge("File Deleted", {"tenantId": TENANT})))
    assert raised.value.tenant_id == TENANT


def test_mapping_file_extends_the_defaults(tmp_path: Path) -> None:
    mapping = tmp_path / "mapping.json"
    mapping.write_text(json.dumps({"acme.billing": {"Charge Succeeded": "payment.success"}}))
    with environment({"NOTIFIER_INGEST_MAPPING_FILE": str(mapping)}, pin_backends=False):
        custom = to_event(json.dumps(eventbridge("Charge Succeeded", {}, "acme.billing")))
        default = to_event(json.dumps(eventbridge("File Processed", {}, "kyo.files")))
    assert (custom["eventType"], default["eventType"]) == ("payment.success", "file.processed")


def test_dead_letter_keeps_at_most_256_kb_of_the_body() -> None:
    body = "é" * DEAD_LETTER_BODY_BYTES  # two bytes per character: twice the limit
    payload = dead_letter_payload(body, "m-1", "https://queue", None)
    assert payload["truncated"] is True
    assert len(payload["body"].encode()) <= DEAD_LETTER_BODY_BYTES
    assert payload["body"] == "é" * (DEAD_LETTER_BODY_BYTES // 2)
    short = dead_letter_payload("x\x00y", "m-2", "https://queue", "dedup")
    assert short["truncated"] is False and short["deduplicationId"] == "dedup"
    assert short["body"] == "x\ufffdy"  # PostgreSQL JSON cannot hold a NUL


# -- the consumer -----------------------------------------------------------------------


def test_plain_sns_and_eventbridge_messages_become_deliveries(
    queues: Queues, celery_worker: Any
) -> None:
    url = queues.create()
    queues.send(url, event("payment.success", eventId="plain-1"))
    queues.send(url, sns_envelope(event("member.registered", eventId="sns-1")))
    bridged = eventbridge("File Processed", FILE_PROCESSED_DETAIL)
    queues.send(url, bridged)
    bridged_via_sns = eventbridge(
        "Member Checked In",
        {
            "tenantId": TENANT,
            "userId": "u1",
            "memberName": "Amy",
            "checkedInAt": "2026-11-22T09:00:00+08:00",
        },
        source="kyo.members",
    )
    queues.send(url, sns_envelope(bridged_via_sns))

    stats = consume(url, enqueue=enqueue, stop=threading.Event(), max_batches=1, wait_seconds=1)

    assert (stats.received, stats.accepted, stats.dead_lettered) == (4, 4, 0)
    stored = events_by_id()
    assert {k: v.event_type for k, v in stored.items()} == {
        "plain-1": "payment.success",
        "sns-1": "member.registered",
        bridged["id"]: "file.processed",
        bridged_via_sns["id"]: "member.checked_in",
    }
    assert all(e.status == "accepted" for e in stored.values())
    assert stored[bridged["id"]].priority == "high"
    assert stored[bridged["id"]].payload["data"]["fileName"] == "photo.jpg"
    assert queues.counts(url) == (0, 0)  # every message deleted
    # the consumer started each event's planning: deliveries were made and sent
    rows = wait_settled()
    assert {r.event_pk for r in rows} >= {stored["plain-1"].id, stored[bridged["id"]].id}


def test_fifo_deduplication_id_is_the_event_id(queues: Queues) -> None:
    first, second = queues.create("orders.fifo"), queues.create("orders-copy.fifo")
    body = event("payment.success")  # no eventId of its own
    changed = event("payment.success", data={"paymentId": "other", "amount": 1, "currency": "TWD"})
    for url in (first, second):
        queues.send(url, body, MessageGroupId=TENANT, MessageDeduplicationId="order-42")
    # SQS itself drops a second message with the same deduplication id within 5 minutes
    queues.send(first, changed, MessageGroupId=TENANT, MessageDeduplicationId="order-42")

    stats = consume(first, enqueue=enqueue, stop=threading.Event(), max_batches=1, wait_seconds=1)
    assert (stats.received, stats.accepted) == (1, 1)
    assert list(events_by_id()) == ["order-42"]

    # the same message delivered again (here: through a second queue) is a duplicate
    again = consume(second, enqueue=enqueue, stop=threading.Event(), max_batches=1, wait_seconds=1)
    assert (again.received, again.accepted, again.duplicates) == (1, 0, 1)
    assert queues.counts(first) == queues.counts(second) == (0, 0)
    assert list(events_by_id()) == ["order-42"]


def test_poison_messages_are_dead_lettered_and_deleted(
    queues: Queues, caplog: pytest.LogCaptureFixture
) -> None:
    url = queues.create()
    marker = "BODY-MARKER-7f3a"
    bodies = [
        "{not json " + marker,
        json.dumps({"hello": marker}),
        json.dumps(eventbridge("File Deleted", {"tenantId": TENANT, "note": marker})),
        json.dumps({"Type": "Notification", "Message": marker}),
        json.dumps(event("payment.success", data={"paymentId": marker}, eventId="bad-1")),
        json.dumps(event("member.registered", user="nobody", eventId="bad-2")),
    ]
    for body in bodies:
        queues.send(url, body)

    with caplog.at_level(logging.DEBUG, logger="notifier"):
        stats = consume(url, enqueue=enqueue, stop=threading.Event(), max_batches=1, wait_seconds=1)

    assert (stats.received, stats.dead_lettered, stats.accepted) == (6, 6, 0)
    assert queues.counts(url) == (0, 0)  # deleted: they cannot loop
    letters = {row.payload["body"]: row for row in dead_letters()}
    assert set(letters) == set(bodies)
    for row in letters.values():
        assert row.kind == "ingest" and row.payload["queue"] == url
        assert row.payload["messageId"] and row.replayed_at is None
    errors = [letters[body].error for body in bodies]
    assert errors[0].startswith("malformed JSON in the message body")
    assert errors[1].startswith("not an event")
    assert "'File Deleted'" in errors[2] and letters[bodies[2]].tenant_id == TENANT
    assert "SNS notification's Message" in errors[3]
    assert "data.amount" in errors[4] and letters[bodies[4]].tenant_id == TENANT
    assert "no user 'nobody'" in errors[5]
    # counts and reasons in the log, never a body
    logged = [str(vars(r)) for r in caplog.records if r.name.startswith("notifier")]
    assert logged and not any(marker in line for line in logged)


def test_dead_letters_raise_one_alarm_per_window(queues: Queues) -> None:
    url = queues.create()
    tenant = f"gym-{uuid.uuid4().hex[:8]}"  # an alarm key no other test has used
    for n in range(3):
        queues.send(url, event("payment.success", tenant=tenant, eventId=f"unknown-{n}"))
    with (
        SlackWebhook() as slack,
        environment({"NOTIFIER_ALARM_SLACK_WEBHOOK_URL": slack.url()}, pin_backends=False),
    ):
        stats = consume(url, enqueue=enqueue, stop=threading.Event(), max_batches=1, wait_seconds=1)
        assert stats.dead_lettered == 3
        [alarm] = slack.received
    assert (
        alarm.body["text"] == "[WARNING] notifier: SQS messages dead-lettered (notifier dlq list)"
    )
    assert tenant in alarm.raw.decode() and "pay_20261122" not in alarm.raw.decode()


def test_database_down_leaves_the_message_in_the_queue(queues: Queues) -> None:
    url = queues.create(VisibilityTimeout="1")
    queues.send(url, event("payment.success", eventId="while-down"))

    with environment({"DATABASE_URL": DATABASE_DOWN}, pin_backends=False):
        down = consume(url, enqueue=enqueue, stop=threading.Event(), max_batches=1, wait_seconds=1)
    assert (down.received, down.left_in_queue, down.accepted) == (1, 1, 0)
    assert queues.counts(url) == (0, 1)  # not deleted: in flight until the timeout

    # the database is back; the message returns after its visibility timeout
    back = consume(url, enqueue=enqueue, stop=threading.Event(), max_batches=2, wait_seconds=2)
    assert back.accepted == 1
    assert list(events_by_id()) == ["while-down"]
    assert queues.counts(url) == (0, 0)


def test_broker_down_keeps_the_event_for_the_recovery_task(
    queues: Queues, monkeypatch: pytest.MonkeyPatch
) -> None:
    from notifier.pipeline import unplanned_events

    broker_unreachable(monkeypatch)
    url = queues.create()
    queues.send(url, event("payment.success", eventId="broker-down"))
    stats = consume(url, enqueue=enqueue, stop=threading.Event(), max_batches=1, wait_seconds=1)
    assert stats.accepted == 1
    assert queues.counts(url) == (0, 0)  # stored: the message is done with
    later = dt.datetime.now(dt.UTC) + dt.timedelta(minutes=10)
    assert unplanned_events(now=later) == [events_by_id()["broker-down"].id]


class StopRequestedDuringFirstBatch(threading.Event):
    """A stop that arrives right after the first receive: the first check says 'go on' and
    every later one 'stop', as a SIGTERM landing while a batch is being ingested."""

    def is_set(self) -> bool:
        was_set = super().is_set()
        self.set()
        return was_set


def test_stop_finishes_the_batch_in_hand(queues: Queues) -> None:
    url = queues.create()
    for n in range(3):
        queues.send(url, event("payment.success", eventId=f"batch-{n}"))
    stats = consume(url, enqueue=enqueue, stop=StopRequestedDuringFirstBatch(), wait_seconds=1)
    assert (stats.batches, stats.accepted) == (1, 3)
    assert sorted(events_by_id()) == ["batch-0", "batch-1", "batch-2"]
    assert queues.counts(url) == (0, 0)


def test_cli_consumes_until_sigterm(queues: Queues) -> None:
    url = queues.create()
    queues.send(url, event("payment.success", eventId="cli-1"))
    proc = subprocess.Popen(
        [str(BIN / "notifier"), "ingest", "sqs", url, "--wait-seconds", "1"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for(lambda: "cli-1" in events_by_id(), timeout=60)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    assert json.loads(out)["accepted"] == 1
    assert queues.counts(url) == (0, 0)


def test_cli_refuses_a_queue_it_cannot_read(queues: Queues) -> None:
    missing = queues.create().replace("/events", "/no-such-queue")
    done = subprocess.run(
        [str(BIN / "notifier"), "ingest", "sqs", missing, "--max-batches", "1"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1
    assert "cannot read queue" in done.stderr

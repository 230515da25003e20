"""Events from AWS: a long-running SQS consumer (`notifier ingest sqs QUEUE_URL`).

A message body is one of
- our event, in the wire shape of docs/events.md;
- an SNS notification (`{"Type": "Notification", "Message": "<json>"}`, what a queue
  subscribed to a topic without raw message delivery receives) around our event or around
  an EventBridge event;
- an EventBridge event, mapped to our event by config/ingest_mapping.py.

A message is deleted only once its event is stored (accepted, or found to be a duplicate) or
its failure is stored as a dead letter (kind "ingest"): a poison message cannot loop, and a
message that meets a database outage stays in the queue and comes back after its visibility
timeout. A FIFO queue's MessageDeduplicationId is the eventId of an event that has none, so
a redelivered message is a duplicate. Only counts are logged, never bodies.
"""

from __future__ import annotations

import json
import logging
import re
import threading
from dataclasses import dataclass, fields
from functools import lru_cache
from pathlib import Path
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from channels.aws import aws_client
from config.ingest_mapping import ENVELOPE_KEYS, EVENTBRIDGE_EVENT_TYPES, METADATA_KEYS
from config.settings import get_settings
from notifier.alarms import raise_alarm
from notifier.db import session_scope
from notifier.events import EVENT_TYPES
from notifier.models import DeadLetter, EventStatus
from notifier.pipeline import Enqueue

log = logging.getLogger("notifier.ingest")

BATCH_SIZE = 10  # SQS's maximum per receive
MAX_WAIT_SECONDS = 20  # SQS's longest long poll
DEAD_LETTER_BODY_BYTES = 256 * 1024
MAX_BACKOFF_SECONDS = 30.0
# The database (or its pool) is unreachable: leave the message for a later receive.
DATABASE_DOWN = (OperationalError, InterfaceError, PoolTimeout)


class UnreadableMessage(ValueError):
    """A body that is not an event we can map. `tenant_id` is set when it could be read."""

    def __init__(self, reason: str, tenant_id: str = ""):
        super().__init__(reason)
        self.reason = reason
        self.tenant_id = tenant_id


class IngestConfigError(RuntimeError):
    """The consumer cannot start: the queue cannot be read, or the mapping file is bad."""


# ---------------------------------------------------------------------------------------
# Message body -> event
# ---------------------------------------------------------------------------------------


def eventbridge_mapping() -> dict[str, dict[str, str]]:
    """source -> detail-type -> eventType: the defaults plus NOTIFIER_INGEST_MAPPING_FILE."""
    return _load_mapping(get_settings().ingest_mapping_file)


@lru_cache(maxsize=4)
def _load_mapping(path: str) -> dict[str, dict[str, str]]:
    merged = {source: dict(types) for source, types in EVENTBRIDGE_EVENT_TYPES.items()}
    if not path:
        return merged
    try:
        extra = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise IngestConfigError(f"NOTIFIER_INGEST_MAPPING_FILE {path}: {exc}") from exc
    if not isinstance(extra, dict) or not all(
        isinstance(types, dict)
        and all(isinstance(k, str) and isinstance(v, str) for k, v in types.items())
        for types in extra.values()
    ):
        raise IngestConfigError(
            f"NOTIFIER_INGEST_MAPPING_FILE {path}: expected "
            '{"<source>": {"<detail-type>": "<eventType>"}}'
        )
    for source, types in extra.items():
        merged.setdefault(source, {}).update(types)
    return merged


def _parse(text: Any, what: str) -> Any:
    if not isinstance(text, str):
        raise UnreadableMessage(f"{what} is not a string")
    try:
        return json.loads(text)
    except ValueError as exc:
        raise UnreadableMessage(f"malformed JSON in {what}: {exc}") from exc


def _is_sns_notification(doc: Any) -> bool:
    return isinstance(doc, dict) and doc.get("Type") == "Notification" and "Message" in doc


def _is_eventbridge(doc: Any) -> bool:
    return isinstance(doc, dict) and {"source", "detail-type", "detail"} <= doc.keys()


def _short(value: Any) -> str:
    return repr(value)[:100]


def from_eventbridge(doc: dict[str, Any]) -> dict[str, Any]:
    """Our event from an EventBridge event (see config/ingest_mapping.py for the rules)."""
    source, detail_type, detail = doc["source"], doc["detail-type"], doc["detail"]
    tenant = detail.get("tenantId") if isinstance(detail, dict) else None
    tenant_id = tenant if isinstance(tenant, str) and len(tenant) <= 128 else ""
    event_type = None
    if isinstance(source, str) and isinstance(detail_type, str):
        event_type = eventbridge_mapping().get(source, {}).get(detail_type)
        if event_type is None and detail_type in EVENT_TYPES:
            event_type = detail_type
    if event_type is None:
        raise UnreadableMessage(
            f"no event type for EventBridge source {_short(source)}, "
            f"detail-type {_short(detail_type)} (see config/ingest_mapping.py)",
            tenant_id,
        )
    if not isinstance(detail, dict):
        raise UnreadableMessage("EventBridge detail is not an object", tenant_id)
    data = detail.get("data")
    if not isinstance(data, dict):
        data = {k: v for k, v in detail.items() if k not in ENVELOPE_KEYS}
    given = detail.get("metadata")
    metadata = dict(given) if isinstance(given, dict) else {}
    for key in METADATA_KEYS:
        if key in detail and key not in metadata:
            metadata[key] = detail[key]
    event = {
        "eventId": detail.get("eventId") or doc.get("id"),
        "eventType": event_type,
        "tenantId": detail.get("tenantId"),
        "timestamp": doc.get("time"),
        "source": source,
        "data": data,
        "metadata": metadata,
    }
    # Absent rather than null: accept() then names a missing tenantId as "Field required".
    return {k: v for k, v in event.items() if v is not None}


def to_event(body: Any, deduplication_id: str | None = None) -> dict[str, Any]:
    """The event a message body carries; raises UnreadableMessage with the reason."""
    doc = _parse(body, "the message body")
    if _is_sns_notification(doc):
        doc = _parse(doc["Message"], "the SNS notification's Message")
    if _is_eventbridge(doc):
        event = from_eventbridge(doc)
    elif isinstance(doc, dict) and "eventType" in doc:
        event = doc
    else:
        raise UnreadableMessage(
            "not an event: expected an object with eventType, an SNS notification or an "
            "EventBridge event"
        )
    if deduplication_id and not event.get("eventId"):
        event = {**event, "eventId": deduplication_id}
    return event


def _tenant_of(event: dict[str, Any]) -> str:
    tenant = event.get("tenantId")
    return tenant if isinstance(tenant, str) and len(tenant) <= 128 else ""


def describe_errors(errors: list[dict[str, str]]) -> str:
    return "; ".join(f"{e['field']}: {e['message']}" for e in errors)


def dead_letter_payload(
    body: str, message_id: str, queue_url: str, deduplication_id: str | None
) -> dict[str, Any]:
    """What a dead letter keeps of a message: enough to replay it (dlq replay)."""
    encoded = body.encode("utf-8", "replace")
    truncated = len(encoded) > DEAD_LETTER_BODY_BYTES
    if truncated:
        body = encoded[:DEAD_LETTER_BODY_BYTES].decode("utf-8", "ignore")
    return {
        # A NUL cannot be stored in PostgreSQL JSON; a body holding one is not JSON anyway.
        "body": body.replace("\x00", "\ufffd"),
        "truncated": truncated,
        "messageId": message_id,
        "queue": queue_url,
        "deduplicationId": deduplication_id,
    }


# ---------------------------------------------------------------------------------------
# The consumer
# ---------------------------------------------------------------------------------------


@dataclass
class IngestStats:
    batches: int = 0
    received: int = 0
    accepted: int = 0
    duplicates: int = 0
    dead_lettered: int = 0
    left_in_queue: int = 0
    """Not deleted (database down, unexpected error): SQS delivers them again later."""

    def as_dict(self) -> dict[str, int]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


def _queue_region(queue_url: str) -> str | None:
    match = re.match(
        r"https?://(?:sqs\.([a-z0-9-]+)|([a-z0-9-]+)\.queue)\.amazonaws\.com", queue_url
    )
    return (match.group(1) or match.group(2)) if match else None


def sqs_client(queue_url: str, wait_seconds: int) -> Any:
    """An SQS client in the queue's region; one request per call (the loop retries), and a
    read timeout above the long-poll wait."""
    return aws_client(
        "sqs", region=_queue_region(queue_url), connect_timeout=5, read_timeout=wait_seconds + 10
    )


def _backoff(failures: int) -> float:
    return float(min(MAX_BACKOFF_SECONDS, 2 ** max(0, failures - 1)))


def consume(
    queue_url: str,
    *,
    stop: threading.Event,
    enqueue: Enqueue,
    max_batches: int | None = None,
    wait_seconds: int | None = None,
) -> IngestStats:
    """Receive and ingest until `stop` is set (the batch in hand is finished first) or
    `max_batches` receives were made; each accepted event is started through `enqueue`
    (`tasks.enqueue`). Raises IngestConfigError when the queue cannot be read."""
    wait = get_settings().ingest_wait_seconds if wait_seconds is None else wait_seconds
    wait = min(max(wait, 0), MAX_WAIT_SECONDS)
    sqs = sqs_client(queue_url, wait)
    eventbridge_mapping()  # a bad mapping file fails here, not on the first message
    try:
        sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])
    except (BotoCoreError, ClientError) as exc:
        raise IngestConfigError(f"cannot read queue {queue_url}: {exc}") from exc
    stats = IngestStats()
    failures = 0
    while not stop.is_set():
        healthy = True
        try:
            messages = sqs.receive_message(
                QueueUrl=queue_url,
                MaxNumberOfMessages=BATCH_SIZE,
                WaitTimeSeconds=wait,
                AttributeNames=["All"],
                MessageSystemAttributeNames=["All"],
            ).get("Messages", [])
        except (BotoCoreError, ClientError) as exc:
            log.warning("SQS receive failed", extra={"error": type(exc).__name__})
            messages, healthy = [], False
        if messages:
            healthy = _ingest_batch(sqs, queue_url, messages, stats, enqueue)
        stats.batches += 1
        if max_batches is not None and stats.batches >= max_batches:
            break
        failures = 0 if healthy else failures + 1
        if failures:
            stop.wait(_backoff(failures))
    log.info("ingest stopped", extra={"count": stats.as_dict()})
    return stats


def _ingest_batch(
    sqs: Any,
    queue_url: str,
    messages: list[dict[str, Any]],
    stats: IngestStats,
    enqueue: Enqueue,
) -> bool:
    """Ingest one received batch; False when the database was down."""
    done: list[dict[str, Any]] = []
    healthy = True
    for position, message in enumerate(messages):
        try:
            outcome = ingest_message(message, queue_url, enqueue)
        except DATABASE_DOWN:
            log.warning("database unavailable; messages left in the queue")
            stats.left_in_queue += len(messages) - position
            healthy = False
            break
        except Exception as exc:  # one bad message never stops the consumer
            # The type only: an exception's text may quote the message.
            log.error(
                "ingest failed; message left in the queue", extra={"error": type(exc).__name__}
            )
            stats.left_in_queue += 1
            continue
        setattr(stats, outcome, getattr(stats, outcome) + 1)
        done.append(message)
    stats.received += len(messages)
    _delete(sqs, queue_url, done)
    log.info(
        "ingest batch",
        extra={"count": {"received": len(messages), "deleted": len(done)}},
    )
    return healthy


def ingest_message(message: dict[str, Any], queue_url: str, enqueue: Enqueue) -> str:
    """Store one message's event or its dead letter; returns the IngestStats field to count."""
    body = message.get("Body", "")
    deduplication_id = (message.get("Attributes") or {}).get("MessageDeduplicationId")
    try:
        event = to_event(body, deduplication_id)
    except UnreadableMessage as exc:
        _dead_letter(message, queue_url, exc.tenant_id, exc.reason)
        return "dead_lettered"
    accepted = enqueue.submit(event)  # stored, then started (a broker outage loses nothing)
    if accepted.status == EventStatus.REJECTED:
        _dead_letter(message, queue_url, _tenant_of(event), describe_errors(accepted.errors))
        return "dead_lettered"
    return "duplicates" if accepted.status == EventStatus.DUPLICATE else "accepted"


def _dead_letter(message: dict[str, Any], queue_url: str, tenant_id: str, error: str) -> None:
    payload = dead_letter_payload(
        message.get("Body", ""),
        message.get("MessageId", ""),
        queue_url,
        (message.get("Attributes") or {}).get("MessageDeduplicationId"),
    )
    with session_scope() as session:
        session.add(DeadLetter(tenant_id=tenant_id, kind="ingest", payload=payload, error=error))
    log.warning("ingest message dead-lettered", extra={"tenant": tenant_id, "error": error[:300]})
    raise_alarm(
        "WARNING",
        "SQS messages dead-lettered (notifier dlq list)",
        key=f"ingest_dead_letter:{tenant_id}",
        tenant_id=tenant_id,
        details={"queue": queue_url.rsplit("/", 1)[-1], "reason": error[:300]},
    )


def _delete(sqs: Any, queue_url: str, messages: list[dict[str, Any]]) -> None:
    if not messages:
        return
    entries = [{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(messages)]
    try:
        failed = sqs.delete_message_batch(QueueUrl=queue_url, Entries=entries).get("Failed", [])
    except (BotoCoreError, ClientError) as exc:
        # Stored already: the message comes back and is then a duplicate (or a second dead
        # letter for a poison message), never a lost event.
        log.warning("SQS delete failed", extra={"error": type(exc).__name__, "count": len(entries)})
        return
    if failed:
        log.warning("SQS delete failed for some messages", extra={"count": len(failed)})

"""Dead letters: what failed for good, listed and replayed (`notifier dlq list|replay`).

- kind "delivery" (notifier.sending): a delivery that failed permanently or ran out of
  retries. Replay puts it back to queued (its reason cleared, its attempts kept so the history
  shows) and sends it again.
- kind "ingest" (notifier.ingest): an SQS message that could not be read or whose event was
  rejected. Replay runs the stored body through the same parsing and accept path, so it is
  idempotent by eventId; one that is still invalid stays pending, with the reason reported.
- kind "webhook" (notifier.outbound_webhooks): a signed message its endpoint did not take
  after the last try, or that could not be enqueued (broker down). Replay sends it again,
  with the same webhook-id, so a receiver that got it after all drops the copy.

Replaying is idempotent: a dead letter is replayed once (replayed_at), and one whose delivery
is no longer failed (sent, or queued again) is left alone.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from notifier.db import session_scope
from notifier.ingest import UnreadableMessage, describe_errors, to_event
from notifier.models import DeadLetter, Delivery, DeliveryStatus, EventStatus, utcnow
from notifier.pipeline import Enqueue, group_chunks


@dataclass
class ReplayResult:
    replayed: list[int] = field(default_factory=list)
    skipped: dict[int, str] = field(default_factory=dict)
    """Dead letters left as they were, and why (already replayed, delivery not failed...)."""
    failed: dict[int, str] = field(default_factory=dict)
    """Dead letters whose replay did not go through (the event is still invalid), and why."""

    def as_dict(self) -> dict[str, Any]:
        return {"replayed": self.replayed, "skipped": self.skipped, "failed": self.failed}


def _summary(row: DeadLetter) -> dict[str, Any]:
    """What a listing shows of the payload: never an ingest message's body."""
    payload = row.payload if isinstance(row.payload, dict) else {}
    if row.kind == "ingest":
        body = payload.get("body")
        return {
            "messageId": payload.get("messageId"),
            "queue": payload.get("queue"),
            "bodyBytes": len(body.encode("utf-8")) if isinstance(body, str) else 0,
            "truncated": bool(payload.get("truncated")),
        }
    if row.kind == "webhook":
        message = payload.get("message")
        body = message.get("body") if isinstance(message, dict) else None
        kind = body.get("type") if isinstance(body, dict) else None
        return {"endpointId": payload.get("endpointId"), "type": kind}
    return {k: payload.get(k) for k in ("eventId", "eventType", "channel", "recipient")}


def _iso(value: dt.datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def list_dead_letters(
    tenant: str | None = None, limit: int = 100, include_replayed: bool = True
) -> list[dict[str, Any]]:
    """The newest dead letters, of one tenant when given."""
    with session_scope() as session:
        query = select(DeadLetter).order_by(DeadLetter.id.desc()).limit(limit)
        if tenant is not None:
            query = query.where(DeadLetter.tenant_id == tenant)
        if not include_replayed:
            query = query.where(DeadLetter.replayed_at.is_(None))
        return [
            {
                "id": row.id,
                "tenantId": row.tenant_id,
                "kind": row.kind,
                "deliveryId": row.delivery_id,
                "error": row.error,
                "createdAt": _iso(row.created_at),
                "replayedAt": _iso(row.replayed_at),
                "payload": _summary(row),
            }
            for row in session.scalars(query)
        ]


def replay(
    ids: list[int] | None = None,
    *,
    enqueue: Enqueue,
    all: bool = False,
    tenant: str | None = None,
    now: dt.datetime | None = None,
) -> ReplayResult:
    """Replay the dead letters `ids`, or every pending one (`all=True`), of `tenant` if given,
    sending through `enqueue` (`tasks.enqueue`). Requeued deliveries are committed as queued
    first: when the broker is unreachable, the stalled-delivery sweep sends them later."""
    if (ids is None) == (not all):
        raise ValueError("replay takes either ids or all=True")
    now = now or utcnow()
    result = ReplayResult()
    with session_scope() as session:
        query = select(DeadLetter.id, DeadLetter.kind).order_by(DeadLetter.id)
        if tenant is not None:
            query = query.where(DeadLetter.tenant_id == tenant)
        if ids is not None:
            query = query.where(DeadLetter.id.in_(ids))
        else:
            query = query.where(DeadLetter.replayed_at.is_(None))
        targets = session.execute(query).tuples().all()
    found = {dead_letter_id for dead_letter_id, _ in targets}
    for missing in sorted(set(ids or ()) - found):
        result.skipped[missing] = "no such dead letter" + (f" in tenant {tenant}" if tenant else "")
    requeued: list[tuple[str, int]] = []
    for dead_letter_id, kind in targets:
        if kind == "delivery":
            delivery = _requeue_delivery(dead_letter_id, now, result)
            if delivery is not None:
                requeued.append(delivery)
        elif kind == "ingest":
            _replay_ingest(dead_letter_id, now, result, enqueue)
        elif kind == "webhook":
            _replay_webhook(dead_letter_id, now, result, enqueue)
        else:
            result.skipped[dead_letter_id] = f"cannot replay a dead letter of kind {kind!r}"
    enqueue.send_deliveries(group_chunks(requeued))
    return result


def _mark_replayed(session: Session, dead_letter_id: int, now: dt.datetime) -> bool:
    """Claim the dead letter for this replay; False when it was replayed already."""
    marked = session.execute(
        update(DeadLetter)
        .where(DeadLetter.id == dead_letter_id, DeadLetter.replayed_at.is_(None))
        .values(replayed_at=now)
        .returning(DeadLetter.id)
    ).scalar()
    return marked is not None


def _requeue_delivery(
    dead_letter_id: int, now: dt.datetime, result: ReplayResult
) -> tuple[str, int] | None:
    """Put the failed delivery back to queued: (channel, delivery id), None when skipped."""
    with session_scope() as session:
        row = session.get(DeadLetter, dead_letter_id)
        if row is None or not _mark_replayed(session, dead_letter_id, now):
            result.skipped[dead_letter_id] = "already replayed"
            return None
        channel = session.execute(
            update(Delivery)
            .where(
                Delivery.id == row.delivery_id,
                Delivery.tenant_id == row.tenant_id,
                Delivery.status == DeliveryStatus.FAILED,
            )
            .values(status=DeliveryStatus.QUEUED, reason=None, claimed_at=None, updated_at=now)
            .returning(Delivery.channel)
        ).scalar()
        if channel is None or row.delivery_id is None:
            status = session.scalar(
                select(Delivery.status).where(
                    Delivery.id == row.delivery_id, Delivery.tenant_id == row.tenant_id
                )
            )
            session.rollback()  # nothing to do: the dead letter stays as it was
            result.skipped[dead_letter_id] = (
                f"delivery {row.delivery_id} is {status}, not failed"
                if status
                else f"delivery {row.delivery_id} no longer exists"
            )
            return None
    result.replayed.append(dead_letter_id)
    return str(channel), row.delivery_id


def _pending_payload(dead_letter_id: int, result: ReplayResult) -> dict[str, Any] | None:
    """The payload of a dead letter not replayed yet; None (skipped) when it was."""
    with session_scope() as session:
        row = session.get(DeadLetter, dead_letter_id)
        if row is None or row.replayed_at is not None:
            result.skipped[dead_letter_id] = "already replayed"
            return None
        return row.payload if isinstance(row.payload, dict) else {}


def _replayed(dead_letter_id: int, now: dt.datetime, result: ReplayResult) -> None:
    """Mark a dead letter whose work went out again; skipped when a concurrent replay did."""
    with session_scope() as session:
        if _mark_replayed(session, dead_letter_id, now):
            result.replayed.append(dead_letter_id)
        else:
            result.skipped[dead_letter_id] = "already replayed"


def _replay_ingest(
    dead_letter_id: int, now: dt.datetime, result: ReplayResult, enqueue: Enqueue
) -> None:
    payload = _pending_payload(dead_letter_id, result)
    if payload is None:
        return
    if payload.get("truncated"):
        result.failed[dead_letter_id] = "the message was truncated at 256 KB; cannot replay it"
        return
    try:
        event = to_event(payload.get("body"), payload.get("deduplicationId"))
    except UnreadableMessage as exc:
        result.failed[dead_letter_id] = exc.reason
        return
    accepted = enqueue.submit(event)  # a duplicate means the event is in: replayed all the same
    if accepted.status == EventStatus.REJECTED:
        result.failed[dead_letter_id] = describe_errors(accepted.errors)
        return
    _replayed(dead_letter_id, now, result)


def _replay_webhook(
    dead_letter_id: int, now: dt.datetime, result: ReplayResult, enqueue: Enqueue
) -> None:
    payload = _pending_payload(dead_letter_id, result)
    if payload is None:
        return
    endpoint_id, message = payload.get("endpointId"), payload.get("message")
    if not isinstance(endpoint_id, str) or not isinstance(message, dict):
        result.failed[dead_letter_id] = "the dead letter holds no webhook message"
        return
    # Marked only once enqueued: with the broker down it stays pending for the next replay.
    if not enqueue.send_webhook(endpoint_id, message):
        result.failed[dead_letter_id] = "broker unreachable; replay again once it is back"
        return
    _replayed(dead_letter_id, now, result)

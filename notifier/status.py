"""What happened to an event: the `notifier status` document, and the delivery status the
HTTP API answers (an event with its deliveries, a person's activity log)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from notifier.db import session_scope
from notifier.models import Click, Delivery, Event


class AmbiguousEvent(LookupError):
    pass


def _iso(value: Any) -> str | None:
    return value.isoformat() if value is not None else None


def event_status(event_id: str, tenant_id: str | None = None) -> dict[str, Any] | None:
    """The event and its deliveries, or None when no such event is known."""
    with session_scope() as session:
        query = select(Event).where(Event.event_id == event_id)
        if tenant_id is not None:
            query = query.where(Event.tenant_id == tenant_id)
        events = list(session.scalars(query.limit(2)))
        if not events:
            return None
        if len(events) > 1:
            raise AmbiguousEvent(f"event id {event_id!r} exists in several tenants; pass a tenant")
        event = events[0]
        deliveries = session.scalars(
            select(Delivery)
            .where(Delivery.event_pk == event.id, Delivery.tenant_id == event.tenant_id)
            .order_by(Delivery.recipient, Delivery.channel)
        )
        return {
            "event": {
                "eventId": event.event_id,
                "eventType": event.event_type,
                "tenantId": event.tenant_id,
                "status": event.status,
                "errors": event.errors or [],
            },
            "deliveries": [
                {
                    "recipient": d.recipient,
                    "channel": d.channel,
                    "status": d.status,
                    "attempts": d.attempts,
                    "providerMessageId": d.provider_message_id,
                    "error": d.reason,
                    "notBefore": _iso(d.not_before),
                    "sentAt": _iso(d.sent_at),
                }
                for d in deliveries
            ],
        }


def _delivery(d: Delivery, clicks: int) -> dict[str, Any]:
    return {
        "deliveryId": d.id,
        "recipient": d.recipient,
        "channel": d.channel,
        "priority": d.priority,
        "status": d.status,
        "attempts": d.attempts,
        "reason": d.reason,
        "providerMessageId": d.provider_message_id,
        "notBefore": _iso(d.not_before),
        "sentAt": _iso(d.sent_at),
        "createdAt": _iso(d.created_at),
        "updatedAt": _iso(d.updated_at),
        "clicks": clicks,
    }


def _clicks(session: Session, tenant_id: str, delivery_ids: list[int]) -> dict[int, int]:
    if not delivery_ids:
        return {}
    rows = session.execute(
        select(Click.delivery_id, func.count())
        .where(Click.tenant_id == tenant_id, Click.delivery_id.in_(delivery_ids))
        .group_by(Click.delivery_id)
    ).tuples()
    return {delivery_id: n for delivery_id, n in rows if delivery_id is not None}


def event_report(tenant_id: str, event_id: str) -> dict[str, Any] | None:
    """`GET /events/{eventId}`: the tenant's event and every delivery of it, or None when
    the tenant has no such event (whether another tenant has one is not looked at)."""
    with session_scope() as session:
        event = session.scalar(
            select(Event).where(Event.tenant_id == tenant_id, Event.event_id == event_id)
        )
        if event is None:
            return None
        deliveries = list(
            session.scalars(
                select(Delivery)
                .where(Delivery.event_pk == event.id, Delivery.tenant_id == tenant_id)
                .order_by(Delivery.id)
            )
        )
        clicks = _clicks(session, tenant_id, [d.id for d in deliveries])
        return {
            "eventId": event.event_id,
            "eventType": event.event_type,
            "status": event.status,
            "priority": event.priority,
            "errors": event.errors or [],
            "createdAt": _iso(event.created_at),
            "plannedAt": _iso(event.planned_at),
            "deliveries": [_delivery(d, clicks.get(d.id, 0)) for d in deliveries],
        }


def user_deliveries(
    tenant_id: str, user_id: str, *, since: dt.datetime | None, after: int | None, limit: int
) -> dict[str, Any]:
    """`GET /users/{userId}/deliveries`: a person's deliveries oldest first, created at or
    after `since`, `limit` at a time; `next` is the `after` of the next page (None at the
    end)."""
    with session_scope() as session:
        query = (
            select(Delivery, Event.event_id, Event.event_type)
            .join(Event, Event.id == Delivery.event_pk)
            .where(Delivery.tenant_id == tenant_id, Delivery.recipient == user_id)
        )
        if since is not None:
            query = query.where(Delivery.created_at >= since)
        if after is not None:
            query = query.where(Delivery.id > after)
        rows = list(session.execute(query.order_by(Delivery.id).limit(limit + 1)).tuples())
        page = rows[:limit]
        clicks = _clicks(session, tenant_id, [d.id for d, _, _ in page])
        return {
            "deliveries": [
                {"eventId": event_id, "eventType": event_type, **_delivery(d, clicks.get(d.id, 0))}
                for d, event_id, event_type in page
            ],
            "next": page[-1][0].id if len(rows) > limit else None,
        }

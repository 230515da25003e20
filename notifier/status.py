"""What happened to an event: the `notifier status` document (DESIGN.md §2)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from notifier.db import session_scope
from notifier.models import Delivery, Event


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

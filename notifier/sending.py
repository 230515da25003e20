"""Sending a chunk of deliveries on one channel: claim -> render -> provider call -> record.

A delivery is claimed atomically (queued -> sending) before anything is sent, so a
redelivered task skips what another run already sent; a claim left by a killed worker is
taken over once it is older than the stale-claim timeout.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session

from channels.base import (
    DeliveryResult,
    Message,
    NotifierError,
    PermanentChannelError,
    TransientChannelError,
)
from channels.registry import get_channel
from config.routing import ROUTES
from config.settings import get_settings
from notifier.db import session_scope
from notifier.dbutil import insert_ignore
from notifier.directory import people_for
from notifier.models import (
    DeadLetter,
    Delivery,
    DeliveryStatus,
    Event,
    Suppression,
    Tenant,
    User,
    utcnow,
)
from notifier.rendering import TemplateProblem, brand, render
from notifier.selection import fallback_channel

log = logging.getLogger("notifier.send")


@dataclass
class ChunkOutcome:
    sent: int = 0
    failed: int = 0
    retry_ids: list[int] = field(default_factory=list)
    retry_after: float | None = None
    fallbacks: list[tuple[str, list[int]]] = field(default_factory=list)


def claim(session: Session, channel: str, ids: list[int], now: dt.datetime) -> list[Delivery]:
    stale = now - dt.timedelta(seconds=get_settings().stale_claim_seconds)
    claimed_ids = (
        session.execute(
            update(Delivery)
            .where(
                Delivery.id.in_(ids),
                Delivery.channel == channel,
                or_(
                    Delivery.status == DeliveryStatus.QUEUED,
                    (Delivery.status == DeliveryStatus.SENDING) & (Delivery.claimed_at < stale),
                ),
            )
            .values(
                status=DeliveryStatus.SENDING,
                claimed_at=now,
                attempts=Delivery.attempts + 1,
                updated_at=now,
            )
            .returning(Delivery.id)
            .execution_options(synchronize_session=False)
        )
        .scalars()
        .all()
    )
    session.commit()
    if not claimed_ids:
        return []
    return list(
        session.scalars(select(Delivery).where(Delivery.id.in_(claimed_ids)).order_by(Delivery.id))
    )


def _address(channel: str, user: User | None, tenant: Tenant, route_category: str) -> str | None:
    if channel == "topic":
        return route_category
    if user is None:
        return None
    if channel == "line":
        return user.line_user_id
    if channel == "email":
        return user.email
    if channel == "sms":
        return user.phone
    if channel == "web_push":
        return user.id
    if channel == "slack":
        return tenant.slack_webhook_url
    return None


def build_message(delivery: Delivery, event: Event, user: User | None, tenant: Tenant) -> Message:
    payload = event.payload
    route = ROUTES[event.event_type]
    timezone = (user.timezone if user else None) or tenant.timezone or "UTC"
    context: dict[str, Any] = {
        "data": payload.get("data") or {},
        "event": {
            "id": event.event_id,
            "type": event.event_type,
            "priority": delivery.priority,
            "timestamp": payload.get("timestamp"),
            "source": payload.get("source"),
        },
        "recipient": {
            "id": delivery.recipient,
            "name": user.name if user else "",
            "locale": user.locale if user else None,
            "timezone": timezone,
        },
        "tenant": {
            "id": tenant.id,
            "name": tenant.name,
            "locale": tenant.locale,
            "timezone": tenant.timezone,
        },
        "brand": brand({"name": tenant.name, **(tenant.branding or {})}),
        "links": {"unsubscribe": None},
    }
    locales = [user.locale if user else None, tenant.locale]
    rendered = render(event.event_type, delivery.channel, locales, context)
    attributes: dict[str, Any] = {"locale": rendered.locale}
    if delivery.channel == "topic":
        attributes.update(category=route.category, event=payload)
    return Message(
        delivery_id=delivery.id,
        tenant_id=delivery.tenant_id,
        event_type=event.event_type,
        channel=delivery.channel,
        recipient=delivery.recipient,
        address=_address(delivery.channel, user, tenant, route.category),
        subject=rendered.subject,
        text=rendered.text,
        html=rendered.html,
        priority=delivery.priority,
        retry_key=delivery.retry_key,
        attributes=attributes,
    )


def _record_sent(
    session: Session, delivery: Delivery, result: DeliveryResult, now: dt.datetime
) -> None:
    session.execute(
        update(Delivery)
        .where(Delivery.id == delivery.id)
        .values(
            status=DeliveryStatus.SENT,
            reason=None,
            sent_at=now,
            updated_at=now,
            provider_message_id=result.provider_message_id,
            raw_response=result.raw_response,
        )
    )


def _dead_letter(session: Session, delivery: Delivery, event: Event, error: str) -> None:
    session.add(
        DeadLetter(
            tenant_id=delivery.tenant_id,
            kind="delivery",
            delivery_id=delivery.id,
            error=error,
            payload={
                "eventId": event.event_id,
                "eventType": event.event_type,
                "channel": delivery.channel,
                "recipient": delivery.recipient,
            },
        )
    )


def send_chunk(
    channel: str, ids: list[int], *, final_attempt: bool = False, now: dt.datetime | None = None
) -> ChunkOutcome:
    """Send what can be claimed of `ids`. Transient failures go back to queued (or fail
    for good on the final attempt); permanent failures fail and may fall back once."""
    now = now or utcnow()
    outcome = ChunkOutcome()
    with session_scope() as session:
        deliveries = claim(session, channel, ids, now)
        if not deliveries:
            return outcome
        events = {
            e.id: e
            for e in session.scalars(
                select(Event).where(Event.id.in_({d.event_pk for d in deliveries}))
            )
        }
        tenants = {
            t.id: t
            for t in session.scalars(
                select(Tenant).where(Tenant.id.in_({d.tenant_id for d in deliveries}))
            )
        }
        users = {
            (u.tenant_id, u.id): u
            for u in session.scalars(
                select(User).where(
                    User.tenant_id.in_({d.tenant_id for d in deliveries}),
                    User.id.in_({d.recipient for d in deliveries}),
                )
            )
        }
        backend = get_channel(channel)
        for delivery in deliveries:
            event = events[delivery.event_pk]
            tenant = tenants[delivery.tenant_id]
            user = users.get((delivery.tenant_id, delivery.recipient))
            context = {
                "event_id": event.event_id,
                "tenant": delivery.tenant_id,
                "delivery_id": delivery.id,
                "channel": channel,
            }
            try:
                message = build_message(delivery, event, user, tenant)
                result = backend.send(message)
            except TemplateProblem as exc:
                error: NotifierError = PermanentChannelError(
                    str(exc), channel=channel, delivery_id=delivery.id
                )
            except NotifierError as exc:
                error = exc
            except Exception as exc:  # an unexpected bug: retried, bounded, then dead-lettered
                log.exception("unexpected error while sending", extra=context)
                error = TransientChannelError(
                    f"{type(exc).__name__}: {exc}", channel=channel, delivery_id=delivery.id
                )
            else:
                _record_sent(session, delivery, result, utcnow())
                session.commit()
                outcome.sent += 1
                log.info("delivery sent", extra=context)
                continue
            _record_failure(
                session, delivery, event, user, tenant, error, final_attempt, outcome, now
            )
            session.commit()
            log.warning("delivery not sent", extra={**context, "error": error.describe()})
    return outcome


def _record_failure(
    session: Session,
    delivery: Delivery,
    event: Event,
    user: User | None,
    tenant: Tenant,
    error: NotifierError,
    final_attempt: bool,
    outcome: ChunkOutcome,
    now: dt.datetime,
) -> None:
    if isinstance(error, TransientChannelError) and not final_attempt:
        session.execute(
            update(Delivery)
            .where(Delivery.id == delivery.id)
            .values(status=DeliveryStatus.QUEUED, reason=error.describe(), updated_at=now)
        )
        outcome.retry_ids.append(delivery.id)
        if error.retry_after is not None:
            outcome.retry_after = max(outcome.retry_after or 0.0, error.retry_after)
        return
    suppress = isinstance(error, PermanentChannelError) and error.suppress
    status = DeliveryStatus.SUPPRESSED if suppress else DeliveryStatus.FAILED
    reason = (
        error.describe()
        if not final_attempt or isinstance(error, PermanentChannelError)
        else f"retries exhausted: {error.describe()}"
    )
    session.execute(
        update(Delivery)
        .where(Delivery.id == delivery.id)
        .values(
            status=status, reason=reason, updated_at=now, raw_response=_jsonable(error.response)
        )
    )
    outcome.failed += 1
    if suppress and (address := _address(delivery.channel, user, tenant, "")):
        insert_ignore(
            session,
            Suppression,
            [
                {
                    "tenant_id": delivery.tenant_id,
                    "channel": delivery.channel,
                    "address": address,
                    "reason": reason,
                    "created_at": now,
                }
            ],
            ("tenant_id", "channel", "address"),
        )
    _dead_letter(session, delivery, event, reason)
    if user is not None and delivery.fallback_of is None:
        _fall_back(session, delivery, event, user, tenant, outcome, now)


def _fall_back(
    session: Session,
    delivery: Delivery,
    event: Event,
    user: User,
    tenant: Tenant,
    outcome: ChunkOutcome,
    now: dt.datetime,
) -> None:
    taken = set(
        session.scalars(
            select(Delivery.channel).where(
                Delivery.event_pk == delivery.event_pk, Delivery.recipient == delivery.recipient
            )
        )
    )
    narrowed = (event.payload.get("metadata") or {}).get("channels")
    if narrowed:  # the sender limited the channels: a fallback stays inside that limit
        taken |= {c for c in ("line", "sms", "email", "web_push", "slack") if c not in narrowed}
    person = people_for(session, tenant, [user])[0]
    channel = fallback_channel(person, delivery.priority, delivery.channel, taken)
    if channel is None:
        return
    row = {
        "event_pk": delivery.event_pk,
        "tenant_id": delivery.tenant_id,
        "recipient": delivery.recipient,
        "channel": channel,
        "priority": delivery.priority,
        "status": DeliveryStatus.QUEUED,
        "reason": f"fallback after {delivery.channel} failed",
        "retry_key": delivery.retry_key,
        "attempts": 0,
        "fallback_of": delivery.id,
        "created_at": now,
        "updated_at": now,
    }
    if insert_ignore(session, Delivery, [row], ("event_pk", "recipient", "channel")):
        new_id = session.scalar(
            select(Delivery.id).where(
                Delivery.event_pk == delivery.event_pk,
                Delivery.recipient == delivery.recipient,
                Delivery.channel == channel,
            )
        )
        if new_id is not None:
            outcome.fallbacks.append((channel, [new_id]))


def _jsonable(value: Any) -> Any:
    if value is None or isinstance(value, str | int | float | bool | list | dict):
        return value
    return str(value)


def fail_remaining(channel: str, ids: list[int], reason: str) -> None:
    """Mark deliveries that can no longer be retried as failed, with a dead letter each."""
    now = utcnow()
    with session_scope() as session:
        rows = list(
            session.scalars(
                select(Delivery).where(
                    Delivery.id.in_(ids),
                    Delivery.channel == channel,
                    Delivery.status.in_([DeliveryStatus.QUEUED, DeliveryStatus.SENDING]),
                )
            )
        )
        events = {
            e.id: e
            for e in session.scalars(select(Event).where(Event.id.in_({d.event_pk for d in rows})))
        }
        for delivery in rows:
            delivery.status = DeliveryStatus.FAILED
            delivery.reason = reason
            delivery.updated_at = now
            _dead_letter(session, delivery, events[delivery.event_pk], reason)

"""Sending a chunk of deliveries on one channel: claim -> render -> provider call -> record.

A delivery is claimed atomically (queued -> sending) before anything is sent, so a
redelivered task skips what another run already sent; a claim left by a killed worker is
taken over once it is older than the stale-claim timeout; a run renews its claim on each
batch just before sending it, and skips what was taken over. Outcomes are committed per
provider call (one message, or one multicast), so a crash loses at most the call in flight.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from sqlalchemy import ColumnElement, or_, select, update
from sqlalchemy.orm import Session

from channels.base import (
    Channel,
    DeliveryResult,
    Message,
    NotifierError,
    PermanentChannelError,
    TransientChannelError,
)
from channels.registry import get_channel
from config.routing import ROUTES
from config.settings import get_settings
from notifier import ratelimit
from notifier.alarms import raise_alarm
from notifier.channel_state import turn_off, unavailable_channels
from notifier.db import session_scope
from notifier.dbutil import insert_ignore
from notifier.directory import people_for, push_subscriptions
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
from notifier.selection import PERSON_CHANNELS, fallback_channel
from notifier.signing import track_links, unsubscribe_url

log = logging.getLogger("notifier.send")
# Channels whose links become signed, click-tracked /c/ links (an SMS keeps its short link:
# every character counts against the segment budget).
TRACKED_CHANNELS = ("email", "line", "slack")


@dataclass
class ChunkOutcome:
    sent: int = 0
    failed: int = 0
    retry_ids: list[int] = field(default_factory=list)
    retry_after: float | None = None
    fallbacks: list[tuple[str, list[int]]] = field(default_factory=list)


@dataclass
class ChunkContext:
    """Everything the chunk's deliveries refer to, loaded with one query per kind."""

    events: dict[int, Event]
    tenants: dict[str, Tenant]
    users: dict[tuple[str, str], User]
    subscriptions: dict[tuple[str, str], list[dict[str, Any]]]

    def user(self, delivery: Delivery) -> User | None:
        return self.users.get((delivery.tenant_id, delivery.recipient))


def not_waiting(now: dt.datetime) -> ColumnElement[bool]:
    """A queued delivery may go now unless a provider asked to wait (Retry-After): then
    not_before lies after the row's last update, and before it no run may send it, not
    even a second task the stalled-work sweep dispatched for it. (A released quiet-hours
    deferral has its not_before at or before the release, the row's last update.)"""
    return or_(
        Delivery.not_before.is_(None),
        Delivery.not_before <= Delivery.updated_at,
        Delivery.not_before <= now,
    )


def claim(session: Session, channel: str, ids: list[int], now: dt.datetime) -> list[Delivery]:
    stale = now - dt.timedelta(seconds=get_settings().stale_claim_seconds)
    claimed = (
        session.execute(
            update(Delivery)
            .where(
                Delivery.id.in_(ids),
                Delivery.channel == channel,
                or_(
                    (Delivery.status == DeliveryStatus.QUEUED) & not_waiting(now),
                    (Delivery.status == DeliveryStatus.SENDING) & (Delivery.claimed_at < stale),
                ),
            )
            .values(
                status=DeliveryStatus.SENDING,
                claimed_at=now,
                attempts=Delivery.attempts + 1,
                updated_at=now,
            )
            # The claimed rows themselves: no second query to load them.
            .returning(Delivery)
            .execution_options(synchronize_session=False)
        )
        .scalars()
        .all()
    )
    session.commit()
    return sorted(claimed, key=lambda delivery: delivery.id)


def load_context(session: Session, channel: str, deliveries: list[Delivery]) -> ChunkContext:
    tenant_ids = {d.tenant_id for d in deliveries}
    recipients = {d.recipient for d in deliveries}
    events = {
        e.id: e
        for e in session.scalars(
            select(Event).where(Event.id.in_({d.event_pk for d in deliveries}))
        )
    }
    tenants = {t.id: t for t in session.scalars(select(Tenant).where(Tenant.id.in_(tenant_ids)))}
    users = {
        (u.tenant_id, u.id): u
        for u in session.scalars(
            select(User).where(User.tenant_id.in_(tenant_ids), User.id.in_(recipients))
        )
    }
    subscriptions: dict[tuple[str, str], list[dict[str, Any]]] = {}
    if channel == "web_push":
        for tenant_id in tenant_ids:
            for user_id, subs in push_subscriptions(session, tenant_id, recipients).items():
                subscriptions[(tenant_id, user_id)] = subs
    return ChunkContext(events, tenants, users, subscriptions)


def address_for(channel: str, user: User | None, tenant: Tenant, category: str) -> str | None:
    if channel == "topic":
        return category
    if channel == "slack":
        return tenant.slack_webhook_url
    if user is None:
        return None
    return {
        "line": user.line_user_id,
        "email": user.email,
        "sms": user.phone,
        "web_push": user.id,
    }.get(channel)


def person_context(
    recipient: str, user: User | None, tenant: Tenant, unsubscribe: str | None
) -> dict[str, Any]:
    """The template variables about who receives a message and from which tenant."""
    return {
        "recipient": {
            "id": recipient,
            "name": user.name if user else "",
            "locale": user.locale if user else None,
            "timezone": (user.timezone if user else None) or tenant.timezone or "UTC",
        },
        "tenant": {
            "id": tenant.id,
            "name": tenant.name,
            "locale": tenant.locale,
            "timezone": tenant.timezone,
        },
        "brand": brand({"name": tenant.name, **(tenant.branding or {})}),
        "links": {"unsubscribe": unsubscribe},
    }


def locales_for(user: User | None, tenant: Tenant) -> list[str | None]:
    """Template locales to try: the person's, then the tenant's (then the default)."""
    return [user.locale if user else None, tenant.locale]


def build_message(delivery: Delivery, ctx: ChunkContext) -> Message:
    event = ctx.events[delivery.event_pk]
    tenant = ctx.tenants[delivery.tenant_id]
    user = ctx.user(delivery)
    payload = event.payload
    route = ROUTES[event.event_type]
    unsubscribe = (
        unsubscribe_url(tenant.id, user.id, delivery.channel)
        if user is not None and delivery.channel == "email"
        else None
    )
    context: dict[str, Any] = {
        "data": payload.get("data") or {},
        "event": {
            "id": event.event_id,
            "type": event.event_type,
            "priority": delivery.priority,
            "timestamp": payload.get("timestamp"),
            "source": payload.get("source"),
        },
        **person_context(delivery.recipient, user, tenant, unsubscribe),
    }
    rendered = render(event.event_type, delivery.channel, locales_for(user, tenant), context)
    text, html = rendered.text, rendered.html
    if delivery.channel in TRACKED_CHANNELS:
        track = partial(
            track_links,
            delivery_id=delivery.id,
            tenant_id=tenant.id,
            channel=delivery.channel,
            event_type=event.event_type,
        )
        text = track(text, html=False)
        html = track(html, html=True) if html else html
    attributes: dict[str, Any] = {"locale": rendered.locale}
    if "messages.json" in rendered.extra:
        attributes["line_messages"] = rendered.extra["messages.json"]
    if unsubscribe:
        attributes["unsubscribe_url"] = unsubscribe
    if delivery.channel == "topic":
        attributes.update(category=route.category, event=payload)
    credentials: dict[str, Any] = {}
    if delivery.channel == "line" and tenant.line_channel_access_token:
        credentials["line_channel_access_token"] = tenant.line_channel_access_token
    if delivery.channel == "web_push":
        credentials["subscriptions"] = ctx.subscriptions.get(
            (delivery.tenant_id, delivery.recipient), []
        )
    return Message(
        delivery_id=delivery.id,
        tenant_id=delivery.tenant_id,
        event_type=event.event_type,
        channel=delivery.channel,
        recipient=delivery.recipient,
        address=address_for(delivery.channel, user, tenant, route.category),
        subject=rendered.subject,
        text=text,
        html=html,
        priority=delivery.priority,
        retry_key=delivery.retry_key,
        attributes=attributes,
        credentials=credentials,
    )


def channel_rate(backend: Channel) -> float:
    """NOTIFIER_RATE_<CHANNEL> overrides the provider's default messages per second."""
    override = os.environ.get(f"NOTIFIER_RATE_{backend.name.upper()}")
    return float(override) if override else float(backend.rate_per_sec)


def rate_limit(backend: Channel, tenant_id: str, tokens: int) -> None:
    """Per provider account, or per tenant where the tenant has its own credentials (LINE
    channel token, Slack webhook): wait for the tokens, or ask for a later retry."""
    rate = channel_rate(backend)
    if rate <= 0:
        return
    scope = tenant_id if backend.rate_scope == "tenant" else "all"
    try:
        ratelimit.throttle(f"{backend.name}:{backend.backend}:{scope}", rate, tokens)
    except ratelimit.RateLimited as exc:
        raise TransientChannelError(str(exc), retry_after=exc.wait, channel=backend.name) from exc


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
        ctx = load_context(session, channel, deliveries)
        backend = get_channel(channel)
        ready: list[tuple[Delivery, Message]] = []
        for delivery in deliveries:
            try:
                ready.append((delivery, build_message(delivery, ctx)))
            except TemplateProblem as exc:
                error = PermanentChannelError(str(exc), channel=channel, delivery_id=delivery.id)
                _record(session, delivery, ctx, error, final_attempt, outcome, now)
                session.commit()
        batch_size = max(1, int(getattr(backend, "batch_size", 1)))
        for start in range(0, len(ready), batch_size):
            # Each provider call's outcomes are committed in one transaction, together with
            # the claim renewal of the next call (one commit per message, not two): a crash
            # never leaves part of a multicast recorded, so a re-send carries the same
            # members and the same retry key.
            batch = _renew_claims(session, ready[start : start + batch_size], now)
            if not batch:
                continue
            results = _send(backend, batch, batch_size)
            sent: list[tuple[Delivery, DeliveryResult]] = []
            for (sent_delivery, _), result in zip(batch, results, strict=True):
                if isinstance(result, DeliveryResult):
                    sent.append((sent_delivery, result))
                else:
                    _record(session, sent_delivery, ctx, result, final_attempt, outcome, now)
            _record_sent(session, sent, ctx, outcome)
        session.commit()
    return outcome


def _renew_claims(
    session: Session, batch: list[tuple[Delivery, Message]], claimed_at: dt.datetime
) -> list[tuple[Delivery, Message]]:
    """Refresh the claim of the batch about to be sent and keep only the rows this run
    still holds. A chunk that outlasts the stale-claim timeout (a slow provider, a long
    chunk) must not send rows that another worker has meanwhile taken over and sent.
    Commits: the renewal, and the session's pending outcomes of the previous call."""
    renewed_at = max(claimed_at, utcnow())
    held = set(
        session.execute(
            update(Delivery)
            .where(
                Delivery.id.in_([delivery.id for delivery, _ in batch]),
                Delivery.status == DeliveryStatus.SENDING,
                Delivery.claimed_at == claimed_at,
            )
            .values(claimed_at=renewed_at)
            .returning(Delivery.id)
            .execution_options(synchronize_session=False)
        ).scalars()
    )
    session.commit()
    return [(delivery, message) for delivery, message in batch if delivery.id in held]


def _send(
    backend: Channel, batch: list[tuple[Delivery, Message]], batch_size: int
) -> list[DeliveryResult | NotifierError]:
    """One result or error per message. Unexpected exceptions become transient errors:
    retried, bounded by the retry budget, then dead-lettered."""
    messages = [message for _, message in batch]
    try:
        rate_limit(backend, messages[0].tenant_id, 1 if batch_size > 1 else len(messages))
        if batch_size > 1:
            return backend.send_many(messages)
        return [backend.send(messages[0])]
    except NotifierError as exc:
        return [exc] * len(messages)
    except Exception as exc:
        log.exception("unexpected error while sending", extra={"channel": backend.name})
        error = TransientChannelError(f"{type(exc).__name__}: {exc}", channel=backend.name)
        return [error] * len(messages)


def _log_context(ctx: ChunkContext, delivery: Delivery) -> dict[str, Any]:
    return {
        "event_id": ctx.events[delivery.event_pk].event_id,
        "tenant": delivery.tenant_id,
        "delivery_id": delivery.id,
        "channel": delivery.channel,
    }


def _record_sent(
    session: Session,
    sent: list[tuple[Delivery, DeliveryResult]],
    ctx: ChunkContext,
    outcome: ChunkOutcome,
) -> None:
    """Mark what one provider call sent, in one executemany UPDATE: a multicast's 500 rows
    cost one statement, not 500 (which took longer than the multicast itself)."""
    if not sent:
        return
    sent_at = utcnow()
    session.execute(
        update(Delivery),
        [
            {
                "id": delivery.id,
                "status": DeliveryStatus.SENT,
                "reason": None,
                "sent_at": sent_at,
                "updated_at": sent_at,
                "provider_message_id": result.provider_message_id,
                "raw_response": jsonable(result.raw_response),
            }
            for delivery, result in sent
        ],
    )
    outcome.sent += len(sent)
    for delivery, _ in sent:
        log.info("delivery sent", extra=_log_context(ctx, delivery))


def _record(
    session: Session,
    delivery: Delivery,
    ctx: ChunkContext,
    result: NotifierError,
    final_attempt: bool,
    outcome: ChunkOutcome,
    now: dt.datetime,
) -> None:
    _record_failure(session, delivery, ctx, result, final_attempt, outcome, now)
    log.warning(
        "delivery not sent", extra={**_log_context(ctx, delivery), "error": result.describe()}
    )


def _record_failure(
    session: Session,
    delivery: Delivery,
    ctx: ChunkContext,
    error: NotifierError,
    final_attempt: bool,
    outcome: ChunkOutcome,
    now: dt.datetime,
) -> None:
    # The budget is the row's own attempts too: a task the stalled-work sweep dispatched
    # again starts its retry count afresh, the delivery does not.
    final_attempt = final_attempt or delivery.attempts > get_settings().send_max_retries
    if isinstance(error, TransientChannelError) and not final_attempt:
        waiting: dict[str, Any] = {}
        if error.retry_after:
            waiting["not_before"] = utcnow() + dt.timedelta(seconds=error.retry_after)
        session.execute(
            update(Delivery)
            .where(Delivery.id == delivery.id)
            .values(
                status=DeliveryStatus.QUEUED, reason=error.describe(), updated_at=now, **waiting
            )
        )
        outcome.retry_ids.append(delivery.id)
        if error.retry_after is not None:
            outcome.retry_after = max(outcome.retry_after or 0.0, error.retry_after)
        return
    permanent = isinstance(error, PermanentChannelError)
    suppress = isinstance(error, PermanentChannelError) and error.suppress
    reason = error.describe() if permanent else f"retries exhausted: {error.describe()}"
    session.execute(
        update(Delivery)
        .where(Delivery.id == delivery.id)
        .values(
            status=DeliveryStatus.SUPPRESSED if suppress else DeliveryStatus.FAILED,
            reason=reason,
            updated_at=now,
            raw_response=jsonable(error.response),
        )
    )
    outcome.failed += 1
    event = ctx.events[delivery.event_pk]
    tenant = ctx.tenants[delivery.tenant_id]
    user = ctx.user(delivery)
    if suppress and (address := address_for(delivery.channel, user, tenant, "")):
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
    if isinstance(error, PermanentChannelError) and (error.disable_channel or error.park_seconds):
        until = now + dt.timedelta(seconds=error.park_seconds) if error.park_seconds else None
        turn_off(session, delivery.tenant_id, delivery.channel, error.describe(), until)
    alarm_for_failure(error, delivery.tenant_id, delivery.channel, reason)
    session.add(
        DeadLetter(
            tenant_id=delivery.tenant_id,
            kind="delivery",
            delivery_id=delivery.id,
            error=reason,
            payload={
                "eventId": event.event_id,
                "eventType": event.event_type,
                "channel": delivery.channel,
                "recipient": delivery.recipient,
            },
        )
    )
    if user is not None and delivery.fallback_of is None and delivery.channel != "topic":
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
    taken |= set(unavailable_channels(session, tenant.id, now))
    narrowed = (event.payload.get("metadata") or {}).get("channels")
    if narrowed:  # the sender limited the channels: a fallback stays inside that limit
        taken |= {c for c in PERSON_CHANNELS if c not in narrowed}
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


def alarm_for_failure(error: NotifierError, tenant_id: str, channel: str, reason: str) -> None:
    """One alarm per kind, tenant and channel per alarm window, however many fail."""
    details = {"reason": reason[:300]}
    if isinstance(error, PermanentChannelError) and error.disable_channel:
        raise_alarm(
            "CRITICAL",
            f"{channel} disabled for tenant {tenant_id}",
            key=f"channel_disabled:{tenant_id}:{channel}",
            tenant_id=tenant_id,
            channel=channel,
            details=details,
        )
    elif isinstance(error, PermanentChannelError) and error.park_seconds:
        raise_alarm(
            "ERROR",
            f"{channel} quota reached for tenant {tenant_id}",
            key=f"quota:{tenant_id}:{channel}",
            tenant_id=tenant_id,
            channel=channel,
            details=details,
        )
    else:
        raise_alarm(
            "WARNING",
            f"{channel} deliveries dead-lettered for tenant {tenant_id}",
            key=f"dead_letter:{tenant_id}:{channel}",
            tenant_id=tenant_id,
            channel=channel,
            details=details,
        )


def jsonable(value: Any) -> Any:
    if value is None or isinstance(value, str | int | float | bool | list | dict):
        return value
    return str(value)

"""Digests: batched deliveries of one person on one channel, sent as ONE message.

Batched deliveries wait in the database (status `batched`), so a worker killed between
buffering and flushing loses nothing. A flush assigns them to digest rows in one atomic
UPDATE each (a delivery joins one digest only, even when two flushes race), and a digest is
claimed before it is sent, so a flush that runs twice sends once.
"""

from __future__ import annotations

import datetime as dt
import logging
import uuid
from dataclasses import dataclass
from functools import partial
from typing import Any

from sqlalchemy import func, or_, select, update
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
from config.settings import get_settings
from notifier.channel_state import turn_off
from notifier.db import session_scope
from notifier.dbutil import insert_ignore
from notifier.models import (
    DeadLetter,
    Delivery,
    DeliveryStatus,
    Digest,
    Event,
    Suppression,
    utcnow,
)
from notifier.rendering import TemplateProblem, render
from notifier.sending import (
    ChunkOutcome,
    address_for,
    alarm_for_failure,
    build_message,
    jsonable,
    load_context,
    locales_for,
    person_context,
    rate_limit,
)
from notifier.status_hooks import StatusChange

log = logging.getLogger("notifier.digest")
DIGEST_TYPE = "digest"


def assign_digests(
    session: Session,
    now: dt.datetime,
    *,
    tenant_id: str | None = None,
    recipients: list[str] | None = None,
) -> list[int]:
    """Put waiting deliveries into digests of at most `digest_max_items`; returns new ids.

    Without `recipients`: every group holding a full digest, or whose oldest item has
    waited the window. With `recipients` (a high or critical event for them): their groups
    now, whatever their age."""
    settings = get_settings()
    size = settings.digest_max_items
    cutoff = now - dt.timedelta(seconds=settings.digest_window_seconds)
    waiting = (Delivery.status == DeliveryStatus.BATCHED) & Delivery.digest_id.is_(None)
    groups = select(
        Delivery.tenant_id,
        Delivery.recipient,
        Delivery.channel,
        func.count(),
        func.min(Delivery.created_at),
    ).where(waiting)
    if recipients is not None:
        groups = groups.where(Delivery.tenant_id == tenant_id, Delivery.recipient.in_(recipients))
    groups = groups.group_by(Delivery.tenant_id, Delivery.recipient, Delivery.channel)
    if recipients is None:
        groups = groups.having(or_(func.min(Delivery.created_at) <= cutoff, func.count() >= size))
    created: list[int] = []
    for tenant, recipient, channel, count, oldest in session.execute(groups).tuples().all():
        due = recipients is not None or _aware(oldest) <= cutoff
        chunks = count // size + (1 if count % size and due else 0)
        for _ in range(chunks):
            digest = Digest(
                tenant_id=tenant,
                recipient=recipient,
                channel=channel,
                status=DeliveryStatus.QUEUED,
                retry_key=uuid.uuid4().hex,
                created_at=now,
            )
            session.add(digest)
            session.flush()
            members = (
                select(Delivery.id)
                .where(
                    waiting,
                    Delivery.tenant_id == tenant,
                    Delivery.recipient == recipient,
                    Delivery.channel == channel,
                )
                .order_by(Delivery.id)
                .limit(size)
            )
            taken = (
                session.execute(
                    update(Delivery)
                    .where(Delivery.id.in_(members), waiting)
                    .values(digest_id=digest.id, updated_at=now)
                    .returning(Delivery.id)
                    .execution_options(synchronize_session=False)
                )
                .scalars()
                .all()
            )
            if not taken:  # another flush took them first
                session.delete(digest)
                session.flush()
                break
            digest.item_count = len(taken)
            created.append(digest.id)
    return created


def _aware(value: dt.datetime) -> dt.datetime:
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)


def flush(now: dt.datetime | None = None) -> list[int]:
    """Assign due digests, and return every digest waiting to be sent: the new ones, and
    older ones whose send task was lost (unclaimed, or claimed by a worker that died, for
    longer than the stale-claim timeout; or waiting for a retry that never came)."""
    now = now or utcnow()
    settings = get_settings()
    stale = now - dt.timedelta(seconds=settings.stale_claim_seconds)
    lost_retry = now - dt.timedelta(
        seconds=settings.send_backoff_max + settings.stale_claim_seconds
    )
    with session_scope() as session:
        created = assign_digests(session, now)
        session.commit()
        queued = Digest.status == DeliveryStatus.QUEUED
        lost = session.scalars(
            select(Digest.id)
            .where(
                or_(
                    queued & Digest.claimed_at.is_(None) & (Digest.created_at < stale),
                    queued & (Digest.claimed_at < lost_retry),
                    (Digest.status == DeliveryStatus.SENDING) & (Digest.claimed_at < stale),
                )
            )
            .order_by(Digest.id)
        ).all()
    return [*created, *(i for i in lost if i not in created)]


@dataclass
class DigestOutcome:
    status: str
    retry_after: float | None = None


def _claim(session: Session, digest_id: int, now: dt.datetime) -> Digest | None:
    stale = now - dt.timedelta(seconds=get_settings().stale_claim_seconds)
    claimed = session.execute(
        update(Digest)
        .where(
            Digest.id == digest_id,
            or_(
                Digest.status == DeliveryStatus.QUEUED,
                (Digest.status == DeliveryStatus.SENDING) & (Digest.claimed_at < stale),
            ),
        )
        .values(status=DeliveryStatus.SENDING, claimed_at=now, attempts=Digest.attempts + 1)
        .returning(Digest.id)
    ).scalar()
    session.commit()
    return session.get(Digest, claimed) if claimed is not None else None


def build_digest_message(session: Session, digest: Digest, members: list[Delivery]) -> Message:
    """One message listing every item, each summarised by its own template's title."""
    ctx = load_context(session, digest.channel, members)
    items: list[dict[str, Any]] = []
    for delivery in members:
        item = build_message(delivery, ctx)
        summary = item.subject or (item.text.splitlines() or [""])[0]
        event = ctx.events[delivery.event_pk]
        items.append(
            {
                "summary": summary,
                "type": event.event_type,
                "timestamp": event.payload.get("timestamp"),
            }
        )
    tenant = ctx.tenants[digest.tenant_id]
    user = ctx.user(members[0])
    context = {
        "items": items,
        "count": len(items),
        **person_context(digest.recipient, user, tenant, None),
    }
    rendered = render(DIGEST_TYPE, digest.channel, locales_for(user, tenant), context)
    first = build_message(members[0], ctx)
    return Message(
        delivery_id=members[0].id,
        tenant_id=digest.tenant_id,
        event_type=DIGEST_TYPE,
        channel=digest.channel,
        recipient=digest.recipient,
        address=address_for(digest.channel, user, tenant, ""),
        subject=rendered.subject,
        text=rendered.text,
        html=rendered.html,
        priority="low",
        retry_key=digest.retry_key,
        attributes={"locale": rendered.locale, "items": len(items)},
        credentials=first.credentials,
    )


def send_digest(
    digest_id: int, *, final_attempt: bool = False, now: dt.datetime | None = None
) -> DigestOutcome:
    """Claim, render, send and record one digest; every member delivery follows it."""
    now = now or utcnow()
    pending = ChunkOutcome()
    with session_scope() as session:
        digest = _claim(session, digest_id, now)
        if digest is None:
            return DigestOutcome("skipped")
        members = list(
            session.scalars(
                select(Delivery).where(Delivery.digest_id == digest.id).order_by(Delivery.id)
            )
        )
        if not members:
            digest.status = DeliveryStatus.SKIPPED
            return DigestOutcome("skipped")
        backend = get_channel(digest.channel)
        result: DeliveryResult | NotifierError
        # The budget counts the digest's own attempts: a digest that kills its worker is
        # recovered by flush(), and must not be sent again once its attempts are spent.
        max_retries = get_settings().send_max_retries
        final_attempt = final_attempt or digest.attempts > max_retries
        if digest.attempts > max_retries + 1:
            result = TransientChannelError(
                f"the last of {digest.attempts - 1} attempts never finished (its worker was lost)",
                channel=digest.channel,
            )
        else:
            result = _build_and_send(session, backend, digest, members)
        outcome = _record(session, digest, members, result, final_attempt, now, pending)
    pending.committed()  # alarms and status hooks once the outcome is in the database
    return outcome


def _build_and_send(
    session: Session, backend: Channel, digest: Digest, members: list[Delivery]
) -> DeliveryResult | NotifierError:
    """Build the digest (any error there fails it for good: the same items fail the same
    way on every retry) and send it."""
    try:
        message = build_digest_message(session, digest, members)
    except TemplateProblem as exc:
        return PermanentChannelError(str(exc), channel=digest.channel)
    except Exception as exc:
        return PermanentChannelError(
            f"building the digest from templates {DIGEST_TYPE}/{digest.channel}.* failed: "
            f"{type(exc).__name__}: {str(exc)[:200]}",
            channel=digest.channel,
        )
    try:
        rate_limit(backend, digest.tenant_id, 1)
        return backend.send(message)
    except NotifierError as exc:
        return exc
    except Exception as exc:  # unexpected: retried within the budget, then failed
        log.exception(
            "unexpected error while sending a digest",
            extra={"channel": digest.channel, "tenant": digest.tenant_id},
        )
        return TransientChannelError(f"{type(exc).__name__}: {exc}", channel=digest.channel)


def _record(
    session: Session,
    digest: Digest,
    members: list[Delivery],
    result: DeliveryResult | NotifierError,
    final_attempt: bool,
    now: dt.datetime,
    pending: ChunkOutcome,
) -> DigestOutcome:
    member_ids = [d.id for d in members]
    events: dict[int, tuple[str, dt.datetime]] = {
        delivery_id: (event_id, accepted_at)
        for delivery_id, event_id, accepted_at in session.execute(
            select(Delivery.id, Event.event_id, Event.created_at)
            .join(Event, Event.id == Delivery.event_pk)
            .where(Delivery.id.in_(member_ids))
        ).all()
    }

    def changed(status: str, reason: str | None, message_id: str | None = None) -> None:
        pending.changes.extend(
            StatusChange(
                delivery_id=d.id,
                tenant_id=d.tenant_id,
                event_id=events[d.id][0] if d.id in events else "",
                recipient=d.recipient,
                channel=d.channel,
                status=status,
                reason=reason,
                provider_message_id=message_id,
                digest_id=digest.id,
                accepted_at=events[d.id][1] if d.id in events else None,
            )
            for d in members
        )

    log_context = {"tenant": digest.tenant_id, "channel": digest.channel, "count": len(members)}
    if isinstance(result, DeliveryResult):
        digest.status, digest.sent_at = DeliveryStatus.SENT, now
        digest.provider_message_id, digest.reason = result.provider_message_id, None
        session.execute(
            update(Delivery)
            .where(Delivery.id.in_(member_ids))
            .values(
                status=DeliveryStatus.SENT,
                reason=f"sent in digest {digest.id}",
                sent_at=now,
                updated_at=now,
                provider_message_id=result.provider_message_id,
                raw_response=jsonable(result.raw_response),
            )
        )
        log.info("digest sent", extra=log_context)
        changed(DeliveryStatus.SENT, None, result.provider_message_id)
        return DigestOutcome("sent")
    if isinstance(result, TransientChannelError) and not final_attempt:
        # claimed_at now marks the last attempt: a lost retry is picked up by the next flush
        digest.status, digest.reason, digest.claimed_at = (
            DeliveryStatus.QUEUED,
            result.describe(),
            now,
        )
        log.warning(
            "digest not sent, will retry", extra={**log_context, "error": result.describe()}
        )
        return DigestOutcome("retry", result.retry_after)
    permanent = isinstance(result, PermanentChannelError)
    reason = result.describe() if permanent else f"retries exhausted: {result.describe()}"
    suppress = isinstance(result, PermanentChannelError) and result.suppress
    status = DeliveryStatus.SUPPRESSED if suppress else DeliveryStatus.FAILED
    digest.status, digest.reason = status, reason
    session.execute(
        update(Delivery)
        .where(Delivery.id.in_(member_ids))
        .values(status=status, reason=reason, updated_at=now)
    )
    if suppress and (message_address := _member_address(session, members[0])):
        insert_ignore(
            session,
            Suppression,
            [
                {
                    "tenant_id": digest.tenant_id,
                    "channel": digest.channel,
                    "address": message_address,
                    "reason": reason,
                    "created_at": now,
                }
            ],
            ("tenant_id", "channel", "address"),
        )
    session.add(
        DeadLetter(
            tenant_id=digest.tenant_id,
            kind="delivery",
            delivery_id=members[0].id,
            error=reason,
            payload={
                "digestId": digest.id,
                "channel": digest.channel,
                "recipient": digest.recipient,
                "deliveries": member_ids,
            },
        )
    )
    if isinstance(result, PermanentChannelError) and (
        result.disable_channel or result.park_seconds
    ):
        until = now + dt.timedelta(seconds=result.park_seconds) if result.park_seconds else None
        turn_off(session, digest.tenant_id, digest.channel, result.describe(), until)
    changed(status, reason)
    pending.alarms.append(
        partial(alarm_for_failure, result, digest.tenant_id, digest.channel, reason)
    )
    log.warning("digest failed", extra={**log_context, "error": reason})
    return DigestOutcome("failed")


def _member_address(session: Session, delivery: Delivery) -> str | None:
    ctx = load_context(session, delivery.channel, [delivery])
    return address_for(delivery.channel, ctx.user(delivery), ctx.tenants[delivery.tenant_id], "")

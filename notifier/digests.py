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
from notifier.db import session_scope
from notifier.models import (
    Delivery,
    DeliveryStatus,
    Digest,
    utcnow,
)
from notifier.outcomes import AfterCommit, Target, record
from notifier.preferences import link_for as preference_link
from notifier.rendering import TemplateProblem, render
from notifier.sending import (
    ChunkContext,
    address_for,
    build_message,
    load_context,
    locales_for,
    person_context,
    rate_limit,
    with_preference_link,
)

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


def build_digest_message(digest: Digest, members: list[Delivery], ctx: ChunkContext) -> Message:
    """One message listing every item, each summarised by its own template's title."""
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
    settings_link = preference_link(tenant, user, digest.channel)
    context = {
        "items": items,
        "count": len(items),
        **person_context(digest.recipient, user, tenant, None, settings_link),
    }
    rendered = render(DIGEST_TYPE, digest.channel, locales_for(user, tenant), context)
    attributes: dict[str, Any] = {"locale": rendered.locale, "items": len(items)}
    text = with_preference_link(digest.channel, rendered.text, attributes, settings_link)
    first = build_message(members[0], ctx)
    return Message(
        delivery_id=members[0].id,
        tenant_id=digest.tenant_id,
        event_type=DIGEST_TYPE,
        channel=digest.channel,
        recipient=digest.recipient,
        address=address_for(digest.channel, user, tenant, ""),
        subject=rendered.subject,
        text=text,
        html=rendered.html,
        priority="low",
        retry_key=digest.retry_key,
        attributes=attributes,
        credentials=first.credentials,
    )


def send_digest(
    digest_id: int, *, final_attempt: bool = False, now: dt.datetime | None = None
) -> DigestOutcome:
    """Claim, render, send and record one digest; every member delivery follows it."""
    now = now or utcnow()
    after = AfterCommit()
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
        ctx = load_context(session, digest.channel, members)
        message: Message | None = None
        result: DeliveryResult | NotifierError
        # A digest that kills its worker is recovered by flush(): once its attempts are
        # spent it is failed, never sent again.
        if digest.attempts > get_settings().send_max_retries + 1:
            result = TransientChannelError(
                f"the last of {digest.attempts - 1} attempts never finished (its worker was lost)",
                channel=digest.channel,
            )
        else:
            message, result = _build_and_send(get_channel(digest.channel), digest, members, ctx)
        target = Target(
            members,
            ctx.events,
            digest.attempts,
            address=message.address if message else None,
            digest_id=digest.id,
        )
        [verdict] = record(
            session, [(target, result)], final_attempt=final_attempt, now=now, after=after
        )
    after.committed()  # alarms, removals and status hooks once the outcome is in the database
    if verdict.retry:
        return DigestOutcome("retry", verdict.retry_after)
    return DigestOutcome("sent" if verdict.status == DeliveryStatus.SENT else "failed")


def _build_and_send(
    backend: Channel, digest: Digest, members: list[Delivery], ctx: ChunkContext
) -> tuple[Message | None, DeliveryResult | NotifierError]:
    """Build the digest (any error there fails it for good: the same items fail the same
    way on every retry) and send it."""
    try:
        message = build_digest_message(digest, members, ctx)
    except TemplateProblem as exc:
        return None, PermanentChannelError(str(exc), channel=digest.channel)
    except Exception as exc:
        return None, PermanentChannelError(
            f"building the digest from templates {DIGEST_TYPE}/{digest.channel}.* failed: "
            f"{type(exc).__name__}: {str(exc)[:200]}",
            channel=digest.channel,
        )
    try:
        rate_limit(backend, digest.tenant_id, 1)
        return message, backend.send(message)
    except NotifierError as exc:
        return message, exc
    except Exception as exc:  # unexpected: retried within the budget, then failed
        log.exception(
            "unexpected error while sending a digest",
            extra={"channel": digest.channel, "tenant": digest.tenant_id},
        )
        return message, TransientChannelError(
            f"{type(exc).__name__}: {exc}", channel=digest.channel
        )

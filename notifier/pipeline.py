"""The pipeline's plain functions: accept an event, plan its deliveries, release deferred
ones. Celery tasks in tasks/ are thin wrappers around these."""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import reprlib
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from channels.registry import get_channel, not_configured
from config.routing import ROUTES
from config.settings import CHANNELS, get_settings
from notifier import metrics
from notifier.channel_state import unavailable_channels
from notifier.db import session_scope
from notifier.dbutil import insert_ignore, insert_new, insert_one
from notifier.digests import assign_digests
from notifier.directory import (
    iter_user_pages,
    people_for,
    recipients_query,
    suppressed_channels,
)
from notifier.events import (
    InvalidEvent,
    ValidEvent,
    canonical_id,
    payload_size,
    storage_problem,
    validate_event,
)
from notifier.models import Delivery, DeliveryStatus, Event, EventStatus, Tenant, User, utcnow
from notifier.selection import select_channels
from notifier.sending import fail_spent, not_waiting

log = logging.getLogger("notifier.pipeline")


class Enqueue(Protocol):
    """What the domain's entry points (SQS ingestion, dead letter replay) need of the
    broker, passed in by their caller: the module `tasks.enqueue` is one. The domain never
    imports the Celery app itself."""

    def submit(self, event: dict[str, Any]) -> Accepted: ...

    def send_deliveries(self, chunks: Sequence[tuple[str, list[int]]]) -> bool: ...


@dataclass(frozen=True)
class Accepted:
    event_id: str
    status: EventStatus
    errors: list[dict[str, str]] = field(default_factory=list)
    event_pk: int | None = None

    def as_result(self) -> dict[str, Any]:
        return {"event_id": self.event_id, "status": str(self.status), "errors": self.errors}


def directory_errors(session: Session, event: ValidEvent) -> list[dict[str, str]]:
    """Checks that need the directory: the tenant exists, the addressed user is in it."""
    addressed = ROUTES[event.event_type].recipients == "event_user"
    # The tenant and the addressed user in one query.
    query = select(Tenant.id, User.id).where(Tenant.id == event.tenant_id)
    query = query.outerjoin(
        User, (User.tenant_id == Tenant.id) & (User.id == (event.user_id or "")) & addressed
    )
    found = session.execute(query).first()
    if found is None:
        return [{"field": "tenantId", "message": f"unknown tenant {event.tenant_id!r}"}]
    if addressed and not event.user_id:
        return [
            {
                "field": "metadata.userId",
                "message": f"required: {event.event_type} is sent to metadata.userId",
            }
        ]
    if addressed and found[1] is None:
        return [
            {
                "field": "metadata.userId",
                "message": f"no user {event.user_id!r} in tenant {event.tenant_id!r}",
            }
        ]
    return []


OTHER_TENANT = {"field": "tenantId", "message": "this API key sends its own tenant's events only"}


def check_event(raw: Any, tenant_id: str | None = None) -> ValidEvent:
    """Full validation as the caller sees it: schema, then directory. Raises InvalidEvent.

    With `tenant_id` (the tenant of an API key), an event of any other tenant is refused
    before the directory is asked anything, so the answer says nothing about that tenant."""
    event = validate_event(raw, get_settings().max_payload_bytes)
    if tenant_id is not None and event.tenant_id != tenant_id:
        raise InvalidEvent([OTHER_TENANT])
    with session_scope() as session:
        errors = directory_errors(session, event)
    if errors:
        raise InvalidEvent(errors)
    return event


# Excerpts of rejected input: bounded in depth and length whatever the input is.
_EXCERPT = reprlib.Repr()
_EXCERPT.maxlevel, _EXCERPT.maxstring, _EXCERPT.maxother = 6, 500, 200
_EXCERPT.maxlist = _EXCERPT.maxdict = 30


def _excerpt(raw: Any) -> str:
    return _EXCERPT.repr(raw)[:2000]  # repr escapes NUL and control characters


def _clean(text: str, limit: int) -> str:
    # Neither NUL nor a lone surrogate can be stored (PostgreSQL, UTF-8): dropped, replaced.
    return text.replace("\x00", "").encode("utf-8", "replace").decode("utf-8")[:limit]


def _rejected_identity(raw: Any) -> tuple[str, str, str]:
    if not isinstance(raw, dict):
        return _digest(_excerpt(raw)), "", ""
    event_id, tenant_id, event_type = raw.get("eventId"), raw.get("tenantId"), raw.get("eventType")
    ident = _clean(event_id, 200) if isinstance(event_id, str) and 0 < len(event_id) <= 200 else ""
    if not ident and storage_problem(raw) is None:
        ident = canonical_id(raw)
    return (
        ident or _digest(_excerpt(raw)),
        _clean(tenant_id, 128) if isinstance(tenant_id, str) else "",
        _clean(event_type, 100) if isinstance(event_type, str) else "",
    )


def _digest(text: str) -> str:
    return "h-" + hashlib.sha256(text.encode("utf-8", "replace")).hexdigest()[:40]


def _reject(raw: Any, errors: list[dict[str, str]]) -> Accepted:
    event_id, tenant_id, event_type = _rejected_identity(raw)
    storable = (
        isinstance(raw, dict)
        and storage_problem(raw) is None
        and payload_size(raw) <= get_settings().max_payload_bytes
    )
    stored = raw if storable else {"excerpt": _excerpt(raw)}
    errors = [{k: _clean(str(v), 2000) for k, v in error.items()} for error in errors]
    with session_scope() as session:
        insert_ignore(
            session,
            Event,
            [
                {
                    "event_id": event_id,
                    "tenant_id": tenant_id,
                    "event_type": event_type,
                    "status": EventStatus.REJECTED,
                    "errors": errors,
                    "payload": stored,
                    "created_at": utcnow(),
                }
            ],
            ("tenant_id", "event_id"),
        )
    log.warning(
        "event rejected",
        extra={"event_id": event_id, "tenant": tenant_id, "errors": [e["field"] for e in errors]},
    )
    return _counted(Accepted(event_id, EventStatus.REJECTED, errors))


def _counted(accepted: Accepted) -> Accepted:
    metrics.count_event(accepted.status)
    return accepted


def accept(raw: Any) -> Accepted:
    """Validate and store an event. Never raises on bad input: it records the rejection."""
    try:
        event = validate_event(raw, get_settings().max_payload_bytes)
    except InvalidEvent as exc:
        return _reject(raw, exc.errors)
    # One session for the directory check and the insert, no transaction around them: the
    # insert is atomic and idempotent by itself (a unique key), the check only reads.
    with session_scope(autocommit=True) as session:
        errors = directory_errors(session, event)
        if not errors:
            return store(event, session)
    return _reject(raw, errors)


def store(event: ValidEvent, session: Session | None = None) -> Accepted:
    """Store a valid event once per (tenant, eventId): accepted, or a duplicate. In the
    caller's session when given (committed by the caller), else in a session of its own."""
    if session is None:
        with session_scope(autocommit=True) as own:
            return store(event, own)
    route = ROUTES[event.event_type]
    row = {
        "event_id": event.event_id,
        "tenant_id": event.tenant_id,
        "event_type": event.event_type,
        "status": EventStatus.ACCEPTED,
        "priority": event.priority or route.priority,
        "errors": [],
        "payload": event.to_wire(),
        "created_at": utcnow(),
    }
    pk = insert_one(session, Event, row, ("tenant_id", "event_id"))
    if pk is not None:
        log.info(
            "event accepted",
            extra={
                "event_id": event.event_id,
                "tenant": event.tenant_id,
                "event_type": event.event_type,
            },
        )
        return _counted(Accepted(event.event_id, EventStatus.ACCEPTED, [], pk))
    # The key is taken. A corrected resend of a rejected event takes the slot over.
    revived = session.execute(
        update(Event)
        .where(
            Event.tenant_id == event.tenant_id,
            Event.event_id == event.event_id,
            Event.status == EventStatus.REJECTED,
        )
        .values({k: v for k, v in row.items() if k not in ("event_id", "tenant_id")})
        .returning(Event.id)
    ).scalar()
    if revived is not None:
        return _counted(Accepted(event.event_id, EventStatus.ACCEPTED, [], revived))
    stored = session.scalar(
        select(Event.payload).where(
            Event.tenant_id == event.tenant_id, Event.event_id == event.event_id
        )
    )
    log.info("duplicate event", extra={"event_id": event.event_id, "tenant": event.tenant_id})
    if _content(stored) != _content(event.to_wire()):  # a conflict: dropped, and said so
        errors = [{"field": "eventId", "message": "already used by an event with other content"}]
        return _counted(Accepted(event.event_id, EventStatus.DUPLICATE, errors))
    return _counted(Accepted(event.event_id, EventStatus.DUPLICATE))


def _content(wire: Any) -> Any:
    """What makes two events with one eventId the same event: all but the timestamp (a
    retrying sender may stamp its resend anew)."""
    return {k: v for k, v in wire.items() if k != "timestamp"} if isinstance(wire, dict) else wire


@dataclass(frozen=True)
class Plan:
    """Delivery ids to send, per channel, in chunks; digests to send before them."""

    chunks: list[tuple[str, list[int]]]
    counts: dict[str, int]
    digests: list[int] = field(default_factory=list)


def _delivery_row(
    event: Event,
    recipient: str,
    channel: str,
    priority: str,
    status: str,
    reason: str | None,
    not_before: dt.datetime | None,
    now: dt.datetime,
) -> dict[str, Any]:
    return {
        "event_pk": event.id,
        "tenant_id": event.tenant_id,
        "recipient": recipient,
        "channel": channel,
        "priority": priority,
        "status": status,
        "reason": reason,
        "not_before": not_before,
        "retry_key": uuid.uuid4().hex,
        "attempts": 0,
        "created_at": now,
        "updated_at": now,
    }


def plan(event_pk: int, now: dt.datetime | None = None) -> Plan:
    """Resolve recipients, select channels, insert deliveries in bulk, return send chunks.

    Safe to run twice (a redelivered task): existing deliveries are kept, not duplicated.
    """
    now = now or utcnow()
    settings = get_settings()
    with session_scope() as session:
        found = session.execute(
            select(Event, Tenant)
            .join(Tenant, Tenant.id == Event.tenant_id)
            .where(Event.id == event_pk, Event.status == EventStatus.ACCEPTED)
        ).first()
        if found is None:
            return Plan([], {})
        event, tenant = found
        payload = event.payload
        meta = payload.get("metadata") or {}
        route = ROUTES[event.event_type]
        priority = event.priority or route.priority
        narrowed = tuple(meta["channels"]) if meta.get("channels") else None
        policy = tenant.quiet_hours_policy or settings.quiet_hours_policy
        query = recipients_query(
            tenant.id, route.recipients, meta.get("userId"), payload.get("data") or {}
        )
        # Low-priority and digest-marked events wait in the database for one digest per
        # person; a high or critical event sends a person's waiting digest first.
        batch = route.batch or priority == "low"
        urgent = priority in ("high", "critical")
        digests: list[int] = []
        unavailable = unavailable_channels(session, tenant.id, now)
        for channel in CHANNELS:
            missing = not_configured(channel, tenant.line_channel_access_token, route.category)
            if missing:
                unavailable.setdefault(channel, missing)
        web_push = "web_push" not in unavailable and (narrowed is None or "web_push" in narrowed)
        for page in iter_user_pages(session, query, settings.bulk_insert_chunk):
            people = people_for(session, tenant, page, web_push=web_push)
            suppressed = suppressed_channels(session, tenant.id, people)
            if urgent:
                digests += assign_digests(
                    session, now, tenant_id=tenant.id, recipients=[p.id for p in people]
                )
            rows = [
                _delivery_row(
                    event,
                    person.id,
                    choice.channel,
                    priority,
                    choice.status,
                    choice.reason,
                    choice.not_before,
                    now,
                )
                for person in people
                for choice in select_channels(
                    person,
                    priority,
                    now,
                    narrowed_to=narrowed,
                    suppressed=frozenset(suppressed.get(person.id, ())),
                    quiet_policy=policy,
                    unavailable=unavailable,
                    batch=batch,
                )
            ]
            insert_new(session, Delivery, rows, ("event_pk", "recipient", "channel"))
        if route.topic and (narrowed is None or "topic" in narrowed) and "topic" not in unavailable:
            insert_ignore(
                session,
                Delivery,
                [
                    _delivery_row(
                        event,
                        f"topic:{route.category}",
                        "topic",
                        priority,
                        DeliveryStatus.QUEUED,
                        None,
                        None,
                        now,
                    )
                ],
                ("event_pk", "recipient", "channel"),
            )
        event.planned_at = now
        queued = (
            session.execute(
                select(Delivery.channel, Delivery.id)
                .where(Delivery.event_pk == event.id, Delivery.status == DeliveryStatus.QUEUED)
                .order_by(Delivery.channel, Delivery.id)
            )
            .tuples()
            .all()
        )
    counts: dict[str, int] = {}
    for channel, _ in queued:
        counts[channel] = counts.get(channel, 0) + 1
    return Plan(group_chunks(list(queued)), counts, digests)


def chunked(ids: list[int], size: int) -> Iterator[list[int]]:
    for start in range(0, len(ids), size):
        yield ids[start : start + size]


def release_deferred(
    now: dt.datetime | None = None, limit: int = 10_000
) -> list[tuple[str, list[int]]]:
    """Move deferred deliveries whose not_before has come back to queued; each row is
    released once even when two Beat processes run this at the same moment."""
    now = now or utcnow()
    with session_scope() as session:
        due = (
            select(Delivery.id)
            .where(Delivery.status == DeliveryStatus.DEFERRED, Delivery.not_before <= now)
            .order_by(Delivery.id)
            .limit(limit)
        )
        released = (
            session.execute(
                update(Delivery)
                .where(Delivery.id.in_(due), Delivery.status == DeliveryStatus.DEFERRED)
                .values(status=DeliveryStatus.QUEUED, reason=None, updated_at=now)
                .returning(Delivery.channel, Delivery.id)
                .execution_options(synchronize_session=False)
            )
            .tuples()
            .all()
        )
    return group_chunks(released)


def group_chunks(rows: Sequence[tuple[str, int]]) -> list[tuple[str, list[int]]]:
    by_channel: dict[str, list[int]] = {}
    for channel, delivery_id in rows:
        by_channel.setdefault(channel, []).append(delivery_id)
    return [
        (ch, chunk)
        for ch, ids in sorted(by_channel.items())
        for chunk in chunked(sorted(ids), chunk_size(ch))
    ]


def chunk_size(channel: str) -> int:
    """Deliveries per send task: a bulk API's batch (LINE multicast: 500), else the setting."""
    batch = int(getattr(get_channel(channel), "batch_size", 1))
    return batch if batch > 1 else get_settings().send_chunk_size


def requeue_stalled(
    now: dt.datetime | None = None, limit: int = 10_000
) -> list[tuple[str, list[int]]]:
    """Deliveries whose send task was lost: a claim older than the stale timeout, or a
    queued row untouched for longer than the longest retry countdown. A delivery whose
    attempts are spent (a message that kills its worker every time) fails instead: never
    sent again, dead-lettered, and its fallback channel is what gets queued."""
    now = now or utcnow()
    settings = get_settings()
    stale_claim = now - dt.timedelta(seconds=settings.stale_claim_seconds)
    stale_queue = now - dt.timedelta(
        seconds=settings.send_backoff_max + settings.stale_claim_seconds
    )
    with session_scope() as session:
        rows = (
            session.execute(
                select(Delivery.channel, Delivery.id, Delivery.attempts)
                .where(
                    (
                        (Delivery.status == DeliveryStatus.SENDING)
                        & (Delivery.claimed_at < stale_claim)
                    )
                    | (
                        (Delivery.status == DeliveryStatus.QUEUED)
                        & (Delivery.updated_at < stale_queue)
                        & not_waiting(stale_claim)  # a Retry-After wait is not a stall
                    )
                )
                .order_by(Delivery.id)
                .limit(limit)
            )
            .tuples()
            .all()
        )
    budget = settings.send_max_retries + 1
    spent = [(channel, pk) for channel, pk, attempts in rows if attempts >= budget]
    again = [(channel, pk) for channel, pk, attempts in rows if attempts < budget]
    for channel, ids in group_chunks(spent):
        again.extend(
            (fallback, pk)
            for fallback, pks in fail_spent(channel, ids, stale_claim, now).fallbacks
            for pk in pks
        )
    return group_chunks(again)


def unplanned_events(now: dt.datetime | None = None, limit: int = 1_000) -> list[int]:
    """Accepted events whose plan task was lost (or never enqueued: the broker was down
    when they were published), older than the stale timeout."""
    now = now or utcnow()
    stale = now - dt.timedelta(seconds=get_settings().stale_claim_seconds)
    with session_scope() as session:
        return list(
            session.scalars(
                select(Event.id)
                .where(
                    Event.status == EventStatus.ACCEPTED,
                    Event.planned_at.is_(None),
                    Event.created_at < stale,
                )
                .order_by(Event.id)
                .limit(limit)
            )
        )

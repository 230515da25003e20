"""The pipeline's plain functions: accept an event, plan its deliveries, release deferred
ones. Celery tasks in tasks/ are thin wrappers around these."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import reprlib
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, cast

from sqlalchemy import ColumnElement, Select, Table, func, literal, or_, select, text, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from channels.registry import (
    channel_names,
    declaration,
    get_channel,
    not_configured,
    person_channels,
)
from config.routing import ROUTES, STAFF_ROLES, Route
from config.settings import get_settings
from notifier import metrics
from notifier.channel_state import unavailable_channels
from notifier.db import session_scope
from notifier.dbutil import insert_ignore, insert_one
from notifier.digests import assign_digests
from notifier.directory import as_person, audience_keys, page_starts, recipients_query
from notifier.events import (
    InvalidEvent,
    ValidEvent,
    canonical_id,
    payload_size,
    storage_problem,
    validate_event,
)
from notifier.models import (
    ChannelState,
    Delivery,
    DeliveryStatus,
    Event,
    EventStatus,
    Suppression,
    Tenant,
    User,
    WebPushSubscription,
    utcnow,
)
from notifier.preferences import critical_ignores_opt_outs
from notifier.selection import select_channels
from notifier.sending import fail_spent, not_waiting

log = logging.getLogger("notifier.pipeline")


class Enqueue(Protocol):
    """What the domain's entry points (SQS ingestion, dead letter replay) need of the
    broker, passed in by their caller: the module `tasks.enqueue` is one. The domain never
    imports the Celery app itself."""

    def submit(self, event: dict[str, Any]) -> Accepted: ...

    def send_deliveries(self, chunks: Sequence[tuple[str, list[int]]]) -> bool: ...

    def send_webhook(self, endpoint_id: str, message: dict[str, Any]) -> bool: ...


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
        raise InvalidEvent([OTHER_TENANT], "forbidden")
    with session_scope() as session:
        errors = directory_errors(session, event)
    if errors:  # a user the directory does not have (a missing userId is invalid)
        missing = errors[0]["field"] == "metadata.userId" and not event.user_id
        raise InvalidEvent(errors, "invalid" if missing else "conflict")
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
    # No transaction: each statement is atomic and idempotent by itself (a unique key).
    with session_scope(autocommit=True) as session:
        accepted = _store_if_known(session, event)
        if accepted is not None:
            return accepted
        # Not stored: find out why (the directory, else a duplicate or a revived rejection).
        errors = directory_errors(session, event)
        if not errors:
            return store(event, session)
    return _reject(raw, errors)


def _event_row(event: ValidEvent) -> dict[str, Any]:
    return {
        "event_id": event.event_id,
        "tenant_id": event.tenant_id,
        "event_type": event.event_type,
        "status": EventStatus.ACCEPTED,
        "priority": event.priority or ROUTES[event.event_type].priority,
        "errors": [],
        "payload": event.to_wire(),
        "created_at": utcnow(),
    }


def _store_if_known(session: Session, event: ValidEvent) -> Accepted | None:
    """The common case in one statement: INSERT ... SELECT the row WHERE the tenant (and
    the addressed user) exist, ON CONFLICT DO NOTHING RETURNING its id. None when nothing
    was inserted, for whatever reason."""
    table = cast(Table, Event.__table__)
    row = _event_row(event)
    known: ColumnElement[bool] = select(Tenant.id).where(Tenant.id == event.tenant_id).exists()
    if ROUTES[event.event_type].recipients == "event_user":
        user = User.tenant_id == event.tenant_id, User.id == (event.user_id or "")
        known = known & select(User.id).where(*user).exists()
    values = select(*(literal(value, table.c[key].type) for key, value in row.items()))
    module = postgresql if session.get_bind().dialect.name == "postgresql" else sqlite
    pk = session.execute(
        module.insert(table)
        .from_select(list(row), values.where(known))
        .on_conflict_do_nothing(index_elements=["tenant_id", "event_id"])
        .returning(table.c.id)
    ).scalar()
    if pk is None:
        return None
    _log_accepted(event)
    return _counted(Accepted(event.event_id, EventStatus.ACCEPTED, [], pk))


def _log_accepted(event: ValidEvent) -> None:
    log.info(
        "event accepted",
        extra={
            "event_id": event.event_id,
            "tenant": event.tenant_id,
            "event_type": event.event_type,
        },
    )


def store(event: ValidEvent, session: Session | None = None) -> Accepted:
    """Store a valid event once per (tenant, eventId): accepted, or a duplicate. In the
    caller's session when given (committed by the caller), else in a session of its own."""
    if session is None:
        with session_scope(autocommit=True) as own:
            return store(event, own)
    row = _event_row(event)
    pk = insert_one(session, Event, row, ("tenant_id", "event_id"))
    if pk is not None:
        _log_accepted(event)
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


@dataclass(frozen=True)
class Audience:
    """What a page of recipients needs to know of its event: ids and names only, carried by
    each `notifier.select_channels` task so that a page costs no read of the event (never
    the event's data, never a list of recipients)."""

    tenant_id: str
    event_type: str
    priority: str
    user_id: str | None = None
    keys: dict[str, str] = field(default_factory=dict)
    channels: list[str] | None = None

    @property
    def route(self) -> Route:
        return ROUTES[self.event_type]


@dataclass(frozen=True)
class Page:
    """A keyset range of recipient ids: `first` <= id < `before` (None: to the end). The
    first page starts at "" and carries the event's topic delivery."""

    first: str
    before: str | None

    @property
    def is_first(self) -> bool:
        return self.first == ""


@dataclass(frozen=True)
class Resolution:
    audience: Audience
    pages: list[Page]


def resolve(event_pk: int, now: dt.datetime | None = None) -> Resolution | None:
    """Mark the event planned and split its audience into keyset pages of
    NOTIFIER_PLAN_PAGE_SIZE recipients. One statement for an event addressed to one person
    (one more, over the index of user ids, for a wider audience). None when the event is
    not accepted (rejected, or gone).

    Safe to run again: pages are ranges, and planning a page twice inserts nothing twice."""
    now = now or utcnow()
    with session_scope(autocommit=True) as session:
        found = session.execute(
            update(Event)
            .where(Event.id == event_pk, Event.status == EventStatus.ACCEPTED)
            .values(planned_at=now)
            .returning(Event.tenant_id, Event.event_type, Event.priority, Event.payload)
        ).first()
        if found is None:
            return None
        tenant_id, event_type, priority, payload = found
        route = ROUTES[event_type]
        meta = payload.get("metadata") or {}
        audience = Audience(
            tenant_id=tenant_id,
            event_type=event_type,
            priority=priority or route.priority,
            user_id=meta.get("userId"),
            keys=audience_keys(route.recipients, payload.get("data") or {}),
            channels=list(meta["channels"]) if meta.get("channels") else None,
        )
        if route.recipients == "event_user":  # one person: one page, nothing to count
            return Resolution(audience, [Page("", None)])
        starts = page_starts(session, _recipients(audience), get_settings().plan_page_size)
    bounds = ["", *starts[1:]]
    return Resolution(
        audience, [Page(a, b) for a, b in zip(bounds, [*bounds[1:], None], strict=True)]
    )


def _recipients(audience: Audience) -> Select[Any]:
    route = audience.route
    return recipients_query(audience.tenant_id, route.recipients, audience.user_id, audience.keys)


def _aggregate(session: Session, expression: Any, *, as_json: bool) -> Any:
    """The dialect's aggregate of `expression` into one text: a JSON array, or
    comma-separated."""
    postgres = session.get_bind().dialect.name == "postgresql"
    if as_json:
        return func.json_agg(expression) if postgres else func.json_group_array(expression)
    return func.string_agg(expression, ",") if postgres else func.group_concat(expression, ",")


def _json_array(session: Session, *values: Any) -> Any:
    postgres = session.get_bind().dialect.name == "postgresql"
    return func.json_build_array(*values) if postgres else func.json_array(*values)


def _suppressed_address(channel: str, column: Any) -> ColumnElement[bool]:
    """A suppression of the address the channel reaches the user at (a tenant's address
    reaches its staff only)."""
    match = (Suppression.channel == channel) & (Suppression.address == column)
    return match & User.role.in_(STAFF_ROLES) if declaration(channel).audience == "staff" else match


def _people_page(
    session: Session, audience: Audience, page: Page, now: dt.datetime, web_push: bool
) -> list[Any]:
    """One statement: the page's users with their tenant, the tenant's channels turned off
    now (a JSON array), each user's suppressed channels and whether they have a push
    subscription."""
    suppressed_here = or_(
        *(
            _suppressed_address(channel, column)
            for channel in person_channels()
            if (column := declaration(channel).address_column()) is not None
        )
    )
    suppressed = (
        select(_aggregate(session, Suppression.channel, as_json=False))
        .where(Suppression.tenant_id == User.tenant_id, suppressed_here)
        .scalar_subquery()
    )
    turned_off = (
        select(
            _aggregate(
                session,
                _json_array(session, ChannelState.channel, ChannelState.state, ChannelState.reason),
                as_json=True,
            )
        )
        .where(
            ChannelState.tenant_id == Tenant.id,
            or_(ChannelState.until.is_(None), ChannelState.until > now),
        )
        .scalar_subquery()
    )
    has_push: Any = (
        select(WebPushSubscription.id)
        .where(
            WebPushSubscription.tenant_id == User.tenant_id,
            WebPushSubscription.user_id == User.id,
        )
        .exists()
        if web_push
        else literal(False)
    )
    query = (
        _recipients(audience)
        .add_columns(Tenant, turned_off, suppressed, has_push)
        .join(Tenant, Tenant.id == User.tenant_id)
        .where(User.id >= page.first)
        .order_by(User.id)
    )
    if page.before is not None:
        query = query.where(User.id < page.before)
    return list(session.execute(query).tuples())


def _turned_off(value: Any) -> dict[str, str]:
    rows = json.loads(value) if isinstance(value, str) else (value or [])
    return {channel: f"channel {state}: {reason}" for channel, state, reason in rows}


def plan_page(
    event_pk: int, audience: Audience, page: Page, now: dt.datetime | None = None
) -> Plan:
    """Select the channels of one page of recipients and insert its deliveries: one read
    (people, tenant, suppressions, channels turned off) and one INSERT ... ON CONFLICT ...
    RETURNING that also gives back the page's queued deliveries a previous run inserted, so
    a repeated page task sends what a lost one left (the claim keeps each send once)."""
    now = now or utcnow()
    settings = get_settings()
    route = audience.route
    narrowed = tuple(audience.channels) if audience.channels else None
    # Low-priority and digest-marked events wait in the database for one digest per
    # person; a high or critical event sends a person's waiting digest first.
    batch = route.batch or audience.priority == "low"
    urgent = audience.priority in ("high", "critical")
    with session_scope(autocommit=True) as session:
        web_push = narrowed is None or "web_push" in narrowed
        found = _people_page(session, audience, page, now, web_push)
        tenant = found[0][1] if found else session.get(Tenant, audience.tenant_id)
        if tenant is None:
            return Plan([], {})
        unavailable = (
            _turned_off(found[0][2])
            if found
            else unavailable_channels(session, audience.tenant_id, now)
        )
        for channel in channel_names():
            missing = not_configured(channel, tenant, route.category)
            if missing:
                unavailable.setdefault(channel, missing)
        policy = tenant.quiet_hours_policy or settings.quiet_hours_policy
        topic_opt_outs = audience.priority != "critical" or not critical_ignores_opt_outs(tenant)
        rows = [
            _delivery_row(
                event_pk,
                audience.tenant_id,
                person.id,
                choice.channel,
                audience.priority,
                choice.status,
                choice.reason,
                choice.not_before,
                now,
            )
            for user, _, _, suppressed, has_push in found
            for person in [as_person(user, tenant, bool(has_push))]
            for choice in select_channels(
                person,
                audience.priority,
                now,
                narrowed_to=narrowed,
                suppressed=frozenset(suppressed.split(",")) if suppressed else frozenset(),
                quiet_policy=policy,
                unavailable=unavailable,
                batch=batch,
                event_type=audience.event_type,
                category=route.category,
                topic_opt_outs=topic_opt_outs,
            )
        ]
        topic = route.topic and (narrowed is None or "topic" in narrowed)
        if page.is_first and topic and "topic" not in unavailable:
            rows.append(
                _delivery_row(
                    event_pk,
                    audience.tenant_id,
                    f"topic:{route.category}",
                    "topic",
                    audience.priority,
                    DeliveryStatus.QUEUED,
                    None,
                    None,
                    now,
                )
            )
        digests: list[int] = []
        if urgent and found:
            with session_scope() as digest_session:
                digests = assign_digests(
                    digest_session,
                    now,
                    tenant_id=audience.tenant_id,
                    recipients=[user.id for user, *_ in found],
                )
        queued = _insert_deliveries(session, rows)
    counts: dict[str, int] = {}
    for channel, _ in queued:
        counts[channel] = counts.get(channel, 0) + 1
    return Plan(group_chunks(queued), counts, digests)


def _delivery_row(
    event_pk: int,
    tenant_id: str,
    recipient: str,
    channel: str,
    priority: str,
    status: str,
    reason: str | None,
    not_before: dt.datetime | None,
    now: dt.datetime,
) -> dict[str, Any]:
    return {
        "event_pk": event_pk,
        "tenant_id": tenant_id,
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


_DELIVERY_TABLE = cast(Table, Delivery.__table__)


def _insert_deliveries(session: Session, rows: list[dict[str, Any]]) -> list[tuple[str, int]]:
    """Insert the rows once per (event, recipient, channel) and return (channel, id) of
    every queued one among them: the new ones, and those already there and still queued
    (their no-op update is what makes RETURNING show them)."""
    if not rows:
        return []
    if session.get_bind().dialect.name == "postgresql":
        return _insert_deliveries_postgresql(session, rows)
    module = sqlite
    table = _DELIVERY_TABLE
    statement = (
        module.insert(table)
        .on_conflict_do_update(
            index_elements=["event_pk", "recipient", "channel"],
            set_={"updated_at": table.c.updated_at},
            where=table.c.status == DeliveryStatus.QUEUED,
        )
        .returning(table.c.channel, table.c.id, table.c.status)
    )
    returned = session.execute(statement, rows).tuples().all()
    return [(channel, pk) for channel, pk, status in returned if status == DeliveryStatus.QUEUED]


# PostgreSQL: a page's rows as one array per column, unnested into one INSERT ... SELECT.
# The statement text stays the same whatever the page's size, so it is parsed once; a
# multi-row VALUES list (what an executemany with RETURNING becomes) is a new text of
# megabytes per page that the driver and the server both parse: the plan's largest cost.
_ARRAY_COLUMNS = (
    ("event_pk", "bigint"),
    ("tenant_id", "text"),
    ("recipient", "text"),
    ("channel", "text"),
    ("priority", "text"),
    ("status", "text"),
    ("reason", "text"),
    ("not_before", "timestamptz"),
    ("retry_key", "text"),
    ("attempts", "integer"),
    ("created_at", "timestamptz"),
    ("updated_at", "timestamptz"),
)
_INSERT_UNNESTED = text(
    "INSERT INTO deliveries (event_pk, tenant_id, recipient, channel, priority, status, "
    "reason, not_before, retry_key, attempts, created_at, updated_at) "
    "SELECT * FROM unnest(CAST(:event_pk AS bigint[]), CAST(:tenant_id AS text[]), "
    "CAST(:recipient AS text[]), CAST(:channel AS text[]), CAST(:priority AS text[]), "
    "CAST(:status AS text[]), CAST(:reason AS text[]), CAST(:not_before AS timestamptz[]), "
    "CAST(:retry_key AS text[]), CAST(:attempts AS integer[]), "
    "CAST(:created_at AS timestamptz[]), CAST(:updated_at AS timestamptz[])) "
    "ON CONFLICT (event_pk, recipient, channel) DO UPDATE "
    "SET updated_at = deliveries.updated_at WHERE deliveries.status = :queued "
    "RETURNING channel, id, status"
)


def _plain(value: Any) -> str | None:
    return None if value is None else str(value)  # a StrEnum as its text


def _insert_deliveries_postgresql(
    session: Session, rows: list[dict[str, Any]]
) -> list[tuple[str, int]]:
    params: dict[str, Any] = {
        name: [_plain(row.get(name)) if kind == "text" else row.get(name) for row in rows]
        for name, kind in _ARRAY_COLUMNS
    }
    params["queued"] = str(DeliveryStatus.QUEUED)
    returned = session.execute(_INSERT_UNNESTED, params).tuples().all()
    return [(channel, pk) for channel, pk, status in returned if status == DeliveryStatus.QUEUED]


def plan(event_pk: int, now: dt.datetime | None = None) -> Plan:
    """Resolve and plan every page here, in this process: what the canvas does, without a
    worker (the tasks run `resolve` and `plan_page` in separate tasks)."""
    resolution = resolve(event_pk, now)
    if resolution is None:
        return Plan([], {})
    plans = [plan_page(event_pk, resolution.audience, page, now) for page in resolution.pages]
    counts: dict[str, int] = {}
    for each in plans:
        for channel, n in each.counts.items():
            counts[channel] = counts.get(channel, 0) + n
    return Plan(
        [chunk for each in plans for chunk in each.chunks],
        counts,
        [digest for each in plans for digest in each.digests],
    )


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
    batch = get_channel(channel).batch_size
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

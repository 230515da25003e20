"""Who can be reached and how: the directory import (idempotent upsert) and the lookups
the pipeline makes. Every query is scoped by tenant."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Iterator
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError
from pydantic.alias_generators import to_camel
from sqlalchemy import ARRAY, Select, String, and_, any_, bindparam, delete, select
from sqlalchemy.orm import Session

from config.routing import ADMIN_ROLES, STAFF_ROLES
from notifier.db import session_scope
from notifier.events import InvalidEvent
from notifier.models import (
    Booking,
    Course,
    Membership,
    Suppression,
    Tenant,
    User,
    WebPushSubscription,
)
from notifier.selection import Person
from notifier.urlpolicy import BlockedURL, Purpose, check_url


def _allowed_url(purpose: Purpose) -> AfterValidator:
    """A URL field that follows the outbound URL policy (checked again at each send)."""

    def check(url: str) -> str:
        try:
            check_url(url, purpose)
        except BlockedURL as exc:
            raise ValueError(str(exc)) from None
        return url

    return AfterValidator(check)


SlackWebhookURL = Annotated[str, _allowed_url("slack")]
PushEndpoint = Annotated[str, Field(min_length=1, max_length=1024), _allowed_url("web_push")]


class _Doc(BaseModel):
    model_config = ConfigDict(extra="forbid", alias_generator=to_camel, populate_by_name=True)


class TenantDoc(_Doc):
    id: str = Field(min_length=1, max_length=128)
    name: str
    timezone: str = "UTC"
    locale: str = "en"
    slack_webhook_url: SlackWebhookURL | None = None
    line_channel_access_token: str | None = None
    branding: dict[str, Any] = Field(default_factory=dict)
    quiet_hours_policy: str | None = Field(default=None, pattern="^(defer|drop)$")


class PushKeys(BaseModel):
    p256dh: str
    auth: str


class PushSubscriptionDoc(BaseModel):
    endpoint: PushEndpoint
    keys: PushKeys


class UserDoc(_Doc):
    id: str = Field(min_length=1, max_length=128)
    tenant_id: str
    name: str = ""
    role: str = "member"
    email: str | None = None
    phone: str | None = None
    line_user_id: str | None = None
    locale: str | None = None
    timezone: str | None = None
    active: bool = True
    web_push_subscriptions: list[PushSubscriptionDoc] = Field(default_factory=list)
    preferences: dict[str, Any] = Field(default_factory=dict)


class MembershipDoc(_Doc):
    id: str
    tenant_id: str
    user_id: str
    membership_type: str
    expires_at: dt.date


class CourseDoc(_Doc):
    id: str
    tenant_id: str
    course_name: str
    instructor_name: str = ""
    start_time: dt.datetime
    location: str = ""
    capacity: int = 0
    status: str = "scheduled"


class BookingDoc(_Doc):
    id: str
    tenant_id: str
    course_id: str
    user_id: str
    status: str = "confirmed"


class DirectoryDoc(_Doc):
    tenants: list[TenantDoc] = Field(default_factory=list)
    users: list[UserDoc] = Field(default_factory=list)
    memberships: list[MembershipDoc] = Field(default_factory=list)
    courses: list[CourseDoc] = Field(default_factory=list)
    bookings: list[BookingDoc] = Field(default_factory=list)


def _upsert(session: Session, model: Any, key: tuple[Any, ...], values: dict[str, Any]) -> bool:
    """Insert or update one row; True when something changed."""
    row = session.get(model, key)
    if row is None:
        session.add(model(**values))
        return True
    changed = False
    for name, value in values.items():
        if getattr(row, name) != value:
            setattr(row, name, value)
            changed = True
    return changed


def import_document(doc: dict[str, Any]) -> dict[str, int]:
    """Upsert a directory document; the same document twice changes nothing.

    Returns how many rows of each kind were created or changed.
    """
    try:
        parsed = DirectoryDoc.model_validate(doc)
    except ValidationError as exc:
        raise InvalidEvent(
            [{"field": ".".join(map(str, e["loc"])), "message": e["msg"]} for e in exc.errors()]
        ) from exc
    counts = {
        "tenants": 0,
        "users": 0,
        "webPushSubscriptions": 0,
        "memberships": 0,
        "courses": 0,
        "bookings": 0,
    }
    with session_scope() as session:
        for tenant in parsed.tenants:
            values = tenant.model_dump()
            counts["tenants"] += _upsert(session, Tenant, (tenant.id,), values)
        session.flush()
        for user in parsed.users:
            values = user.model_dump(exclude={"web_push_subscriptions"})
            counts["users"] += _upsert(session, User, (user.tenant_id, user.id), values)
        session.flush()
        for user in parsed.users:
            for sub in user.web_push_subscriptions:
                existing = session.scalar(
                    select(WebPushSubscription).where(
                        WebPushSubscription.tenant_id == user.tenant_id,
                        WebPushSubscription.endpoint == sub.endpoint,
                    )
                )
                values = {
                    "tenant_id": user.tenant_id,
                    "user_id": user.id,
                    "endpoint": sub.endpoint,
                    "p256dh": sub.keys.p256dh,
                    "auth": sub.keys.auth,
                }
                if existing is None:
                    session.add(WebPushSubscription(**values))
                    counts["webPushSubscriptions"] += 1
                elif any(getattr(existing, k) != v for k, v in values.items()):
                    for k, v in values.items():
                        setattr(existing, k, v)
                    counts["webPushSubscriptions"] += 1
        for membership in parsed.memberships:
            counts["memberships"] += _upsert(
                session, Membership, (membership.tenant_id, membership.id), membership.model_dump()
            )
        for course in parsed.courses:
            if course.start_time.tzinfo is None:
                raise InvalidEvent(
                    [{"field": f"courses.{course.id}.startTime", "message": "needs a UTC offset"}]
                )
            counts["courses"] += _upsert(
                session, Course, (course.tenant_id, course.id), course.model_dump()
            )
        session.flush()
        for booking in parsed.bookings:
            counts["bookings"] += _upsert(
                session, Booking, (booking.tenant_id, booking.id), booking.model_dump()
            )
    return counts


def recipients_query(
    tenant_id: str, rule: str, user_id: str | None, data: dict[str, Any]
) -> Select[Any]:
    """The users a routing rule reaches, always inside the event's tenant."""
    query = select(User).where(User.tenant_id == tenant_id)
    if rule == "event_user":
        return query.where(User.id == (user_id or ""))
    if rule == "uploader_and_admins":
        return query.where(
            (User.id == str(data.get("uploadedBy", "")))
            | (and_(User.role.in_(ADMIN_ROLES), User.active.is_(True)))
        )
    if rule == "course_bookings":
        booked = select(Booking.user_id).where(
            Booking.tenant_id == tenant_id,
            Booking.course_id == str(data.get("courseId", "")),
            Booking.status == "confirmed",
        )
        return query.where(User.id.in_(booked))
    if rule == "tenant_admins":
        return query.where(User.role.in_(ADMIN_ROLES), User.active.is_(True))
    if rule == "all_active":
        return query.where(User.active.is_(True))
    raise ValueError(f"unknown recipient rule {rule!r}")


def iter_user_pages(session: Session, query: Select[Any], page_size: int) -> Iterator[list[User]]:
    """Keyset pagination by user id: constant memory for a tenant of any size."""
    last = ""
    while True:
        page = list(session.scalars(query.where(User.id > last).order_by(User.id).limit(page_size)))
        if not page:
            return
        yield page
        if len(page) < page_size:  # the last page: no query for an empty one after it
            return
        last = page[-1].id


def people_for(
    session: Session, tenant: Tenant, users: Iterable[User], *, web_push: bool = True
) -> list[Person]:
    """The users as selection sees them. web_push=False when Web Push cannot be chosen
    anyway (the event is narrowed to other channels, or it is turned off): no lookup of
    the subscriptions then."""
    users = list(users)
    ids = [u.id for u in users]
    with_push = (
        set(
            session.scalars(
                select(WebPushSubscription.user_id)
                .where(
                    WebPushSubscription.tenant_id == tenant.id,
                    WebPushSubscription.user_id.in_(ids),
                )
                .distinct()
            )
        )
        if web_push
        else set()
    )
    return [
        Person(
            id=u.id,
            role=u.role,
            email=u.email,
            phone=u.phone,
            line_user_id=u.line_user_id,
            has_web_push=u.id in with_push,
            slack_webhook=tenant.slack_webhook_url,
            timezone=u.timezone or tenant.timezone or "UTC",
            preferences=u.preferences or {},
            is_staff=u.role in STAFF_ROLES,
        )
        for u in users
    ]


def suppressed_channels(
    session: Session, tenant_id: str, people: list[Person]
) -> dict[str, set[str]]:
    """For each person, the channels whose address is on the tenant's suppression list."""
    wanted = [
        (ch, addr, p.id)
        for p in people
        for ch in ("line", "email", "sms", "slack")
        if (addr := p.address(ch))
    ]
    if not wanted:
        return {}
    channels = sorted({ch for ch, _, _ in wanted})
    addresses = sorted({addr for _, addr, _ in wanted})
    # A page of 2,000 people is thousands of addresses. As one array parameter PostgreSQL
    # gets them without the driver parsing a placeholder for each (that parse was most of
    # the lookup's time); the (tenant, channel, address) index serves both forms.
    address_match = (
        Suppression.address == any_(bindparam("addresses", addresses, type_=ARRAY(String)))
        if session.get_bind().dialect.name == "postgresql"
        else Suppression.address.in_(addresses)
    )
    hits = set(
        session.execute(
            select(Suppression.channel, Suppression.address).where(
                Suppression.tenant_id == tenant_id,
                Suppression.channel.in_(channels),
                address_match,
            )
        ).tuples()
    )
    result: dict[str, set[str]] = {}
    for channel, address, person_id in wanted:
        if (channel, address) in hits:
            result.setdefault(person_id, set()).add(channel)
    return result


def delete_push_subscription(tenant_id: str, endpoint: str) -> None:
    """A push service said the subscription is gone (404/410): forget it."""
    with session_scope() as session:
        session.execute(
            delete(WebPushSubscription).where(
                WebPushSubscription.tenant_id == tenant_id,
                WebPushSubscription.endpoint == endpoint,
            )
        )


def push_subscriptions(
    session: Session, tenant_id: str, user_ids: Iterable[str]
) -> dict[str, list[dict[str, Any]]]:
    """user id -> the Web Push subscriptions of that user, in the shape pywebpush takes."""
    result: dict[str, list[dict[str, Any]]] = {}
    rows = session.scalars(
        select(WebPushSubscription)
        .where(
            WebPushSubscription.tenant_id == tenant_id,
            WebPushSubscription.user_id.in_(list(user_ids)),
        )
        .order_by(WebPushSubscription.id)
    )
    for row in rows:
        result.setdefault(row.user_id, []).append(
            {"endpoint": row.endpoint, "keys": {"p256dh": row.p256dh, "auth": row.auth}}
        )
    return result

"""SQLAlchemy 2 models. Every row that belongs to a tenant carries tenant_id, and every
query the pipeline makes filters on it."""

from __future__ import annotations

import datetime as dt
import enum
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Date,
    DateTime,
    ForeignKeyConstraint,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

from notifier.sealing import Sealed

JSONType = JSON().with_variant(JSONB(), "postgresql")
ID = String(128)


class UTCDateTime(TypeDecorator[dt.datetime]):
    """Stores UTC, always returns aware datetimes (SQLite forgets offsets)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect: Dialect) -> Any:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTCDateTime column")
        value = value.astimezone(dt.UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=dt.UTC)
        return value.astimezone(dt.UTC)


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class Base(DeclarativeBase):
    pass


class EventStatus(enum.StrEnum):
    ACCEPTED = "accepted"
    DUPLICATE = "duplicate"
    REJECTED = "rejected"


class DeliveryStatus(enum.StrEnum):
    """The lifecycle of one delivery row (and of a digest row)."""

    QUEUED = "queued"
    SENDING = "sending"
    DEFERRED = "deferred"
    BATCHED = "batched"
    SENT = "sent"
    FAILED = "failed"
    SUPPRESSED = "suppressed"
    SKIPPED = "skipped"


class Tenant(Base):
    __tablename__ = "tenants"

    id: Mapped[str] = mapped_column(ID, primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    timezone: Mapped[str] = mapped_column(String(64), default="UTC")
    locale: Mapped[str] = mapped_column(String(16), default="en")
    slack_webhook_url: Mapped[str | None] = mapped_column(Text)
    line_channel_access_token: Mapped[str | None] = mapped_column(
        Sealed("tenants.line_channel_access_token")
    )
    branding: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    quiet_hours_policy: Mapped[str | None] = mapped_column(String(16))
    critical_ignores_opt_outs: Mapped[bool | None] = mapped_column(Boolean)
    """Whether critical events skip people's category and event-type opt-outs; None: yes."""
    preference_link_channels: Mapped[list[str] | None] = mapped_column(JSONType, nullable=True)
    """Text channels ("line", "sms") whose messages end with a preference center link (email
    always carries one in its footer); None: none."""
    api_key_hash: Mapped[str | None] = mapped_column(String(128))
    """sha256 hex of the tenant's API key for POST /events (the key itself is never stored)."""
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


class User(Base):
    __tablename__ = "users"
    __table_args__ = (
        ForeignKeyConstraint(["tenant_id"], ["tenants.id"], ondelete="CASCADE"),
        Index("ix_users_tenant_role", "tenant_id", "role"),
        Index("ix_users_tenant_active", "tenant_id", "active"),
    )

    tenant_id: Mapped[str] = mapped_column(ID, primary_key=True)
    id: Mapped[str] = mapped_column(ID, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), default="")
    role: Mapped[str] = mapped_column(String(32), default="member")
    addresses: Mapped[dict[str, str]] = mapped_column(
        JSONType, default=dict, server_default=text("'{}'")
    )
    """Channel name -> the person's address on it ({"email": ..., "sms": ..., "line": ...}):
    a new channel keeps its addresses here, with no column or migration of its own."""
    locale: Mapped[str | None] = mapped_column(String(16))
    timezone: Mapped[str | None] = mapped_column(String(64))
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    preferences: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


class WebPushSubscription(Base):
    __tablename__ = "web_push_subscriptions"
    __table_args__ = (
        ForeignKeyConstraint(
            ["tenant_id", "user_id"], ["users.tenant_id", "users.id"], ondelete="CASCADE"
        ),
        UniqueConstraint("tenant_id", "endpoint", name="uq_web_push_endpoint"),
        Index("ix_web_push_user", "tenant_id", "user_id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    tenant_id: Mapped[str] = mapped_column(ID)
    user_id: Mapped[str] = mapped_column(ID)
    endpoint: Mapped[str] = mapped_column(String(1024))
    p256dh: Mapped[str] = mapped_column(String(255))
    auth: Mapped[str] = mapped_column(String(255))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)


class Membership(Base):
    __tablename__ = "memberships"
    __table_args__ = (
        ForeignKeyConstraint(
            ["tenant_id", "user_id"], ["users.tenant_id", "users.id"], ondelete="CASCADE"
        ),
        # The expiry scan is a range query on expires_at across tenants.
        Index("ix_memberships_expires_at", "expires_at"),
        Index("ix_memberships_user", "tenant_id", "user_id"),
    )

    tenant_id: Mapped[str] = mapped_column(ID, primary_key=True)
    id: Mapped[str] = mapped_column(ID, primary_key=True)
    user_id: Mapped[str] = mapped_column(ID)
    membership_type: Mapped[str] = mapped_column(String(100))
    expires_at: Mapped[dt.date] = mapped_column(Date)


class Course(Base):
    __tablename__ = "courses"
    __table_args__ = (
        ForeignKeyConstraint(["tenant_id"], ["tenants.id"], ondelete="CASCADE"),
        Index("ix_courses_start_time", "start_time"),
    )

    tenant_id: Mapped[str] = mapped_column(ID, primary_key=True)
    id: Mapped[str] = mapped_column(ID, primary_key=True)
    course_name: Mapped[str] = mapped_column(String(200))
    instructor_name: Mapped[str] = mapped_column(String(200), default="")
    start_time: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    location: Mapped[str] = mapped_column(String(200), default="")
    capacity: Mapped[int] = mapped_column(Integer, default=0)
    status: Mapped[str] = mapped_column(String(16), default="scheduled")


class Booking(Base):
    __tablename__ = "bookings"
    __table_args__ = (
        ForeignKeyConstraint(
            ["tenant_id", "course_id"], ["courses.tenant_id", "courses.id"], ondelete="CASCADE"
        ),
        ForeignKeyConstraint(
            ["tenant_id", "user_id"], ["users.tenant_id", "users.id"], ondelete="CASCADE"
        ),
        Index("ix_bookings_course_status", "tenant_id", "course_id", "status"),
    )

    tenant_id: Mapped[str] = mapped_column(ID, primary_key=True)
    id: Mapped[str] = mapped_column(ID, primary_key=True)
    course_id: Mapped[str] = mapped_column(ID)
    user_id: Mapped[str] = mapped_column(ID)
    status: Mapped[str] = mapped_column(String(16), default="confirmed")


class Event(Base):
    __tablename__ = "events"
    __table_args__ = (
        # Idempotency: one row per (tenant, eventId). Scoped by tenant so one tenant's ids
        # can never mark another tenant's event as a duplicate.
        UniqueConstraint("tenant_id", "event_id", name="uq_events_tenant_event_id"),
        Index("ix_events_event_id", "event_id"),
        Index("ix_events_tenant_created", "tenant_id", "created_at"),
        Index("ix_events_unplanned", "status", "planned_at"),
    )

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    event_id: Mapped[str] = mapped_column(String(200))
    tenant_id: Mapped[str] = mapped_column(ID)
    event_type: Mapped[str] = mapped_column(String(100))
    status: Mapped[str] = mapped_column(String(16))
    priority: Mapped[str | None] = mapped_column(String(16))
    errors: Mapped[list[Any]] = mapped_column(JSONType, default=list)
    payload: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    planned_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    """When its deliveries were created; an accepted event still unplanned after the
    stale timeout lost its plan task and is planned again."""
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)


class Delivery(Base):
    __tablename__ = "deliveries"
    __table_args__ = (
        UniqueConstraint("event_pk", "recipient", "channel", name="uq_deliveries_event_rcpt_ch"),
        Index("ix_deliveries_release", "status", "not_before"),
        Index("ix_deliveries_tenant_created", "tenant_id", "created_at"),
        Index("ix_deliveries_recipient", "tenant_id", "recipient"),
        Index("ix_deliveries_digest", "digest_id"),
        # SES bounce and complaint notifications find their delivery by the SES MessageId.
        Index("ix_deliveries_provider_message_id", "provider_message_id"),
    )

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    event_pk: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"))
    tenant_id: Mapped[str] = mapped_column(ID)
    recipient: Mapped[str] = mapped_column(ID)
    channel: Mapped[str] = mapped_column(String(16))
    priority: Mapped[str] = mapped_column(String(16), default="medium")
    status: Mapped[str] = mapped_column(String(16), default=DeliveryStatus.QUEUED)
    reason: Mapped[str | None] = mapped_column(Text)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    retry_key: Mapped[str | None] = mapped_column(String(64))
    provider_message_id: Mapped[str | None] = mapped_column(String(255))
    raw_response: Mapped[Any] = mapped_column(JSONType, nullable=True)
    not_before: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    claimed_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    sent_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    fallback_of: Mapped[int | None] = mapped_column(BigInteger().with_variant(Integer, "sqlite"))
    digest_id: Mapped[int | None] = mapped_column(BigInteger().with_variant(Integer, "sqlite"))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


class OutboxMessage(Base):
    """What the outbox backend 'sent': the rendered message, as the person would see it."""

    __tablename__ = "outbox_messages"
    __table_args__ = (
        UniqueConstraint("delivery_id", name="uq_outbox_delivery"),
        Index("ix_outbox_tenant_created", "tenant_id", "created_at"),
    )

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    delivery_id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"))
    tenant_id: Mapped[str] = mapped_column(ID)
    event_type: Mapped[str] = mapped_column(String(100))
    channel: Mapped[str] = mapped_column(String(16))
    recipient: Mapped[str] = mapped_column(ID)
    address: Mapped[str | None] = mapped_column(Text)
    subject: Mapped[str | None] = mapped_column(Text)
    body_text: Mapped[str | None] = mapped_column(Text)
    body_html: Mapped[str | None] = mapped_column(Text)
    payload: Mapped[Any] = mapped_column(JSONType, nullable=True)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)


class Suppression(Base):
    __tablename__ = "suppressions"
    __table_args__ = (UniqueConstraint("tenant_id", "channel", "address", name="uq_suppressions"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    tenant_id: Mapped[str] = mapped_column(ID)
    channel: Mapped[str] = mapped_column(String(16))
    address: Mapped[str] = mapped_column(String(1024))
    reason: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)


class DeadLetter(Base):
    __tablename__ = "dead_letters"
    __table_args__ = (Index("ix_dead_letters_tenant_created", "tenant_id", "created_at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    tenant_id: Mapped[str] = mapped_column(ID, default="")
    kind: Mapped[str] = mapped_column(String(16))
    delivery_id: Mapped[int | None] = mapped_column(BigInteger().with_variant(Integer, "sqlite"))
    payload: Mapped[Any] = mapped_column(JSONType, nullable=True)
    error: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    replayed_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)


class ChannelState(Base):
    """A channel turned off for a tenant: `disabled` until an operator re-enables it (bad
    credentials, a removed webhook), or `parked` until `until` (a monthly quota)."""

    __tablename__ = "channel_states"

    tenant_id: Mapped[str] = mapped_column(ID, primary_key=True)
    channel: Mapped[str] = mapped_column(String(16), primary_key=True)
    state: Mapped[str] = mapped_column(String(16))
    until: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    reason: Mapped[str] = mapped_column(Text, default="")
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


class Digest(Base):
    """One message that carries several batched deliveries of one person on one channel."""

    __tablename__ = "digests"
    __table_args__ = (Index("ix_digests_status", "status", "created_at"),)

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ID)
    recipient: Mapped[str] = mapped_column(ID)
    channel: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16), default=DeliveryStatus.QUEUED)
    item_count: Mapped[int] = mapped_column(Integer, default=0)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    retry_key: Mapped[str | None] = mapped_column(String(64))
    provider_message_id: Mapped[str | None] = mapped_column(String(255))
    reason: Mapped[str | None] = mapped_column(Text)
    claimed_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    sent_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)


class Click(Base):
    """A click on a tracked link in a message."""

    __tablename__ = "clicks"
    __table_args__ = (Index("ix_clicks_tenant_created", "tenant_id", "created_at"),)

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ID)
    delivery_id: Mapped[int | None] = mapped_column(BigInteger().with_variant(Integer, "sqlite"))
    channel: Mapped[str] = mapped_column(String(16), default="")
    event_type: Mapped[str] = mapped_column(String(100), default="")
    url: Mapped[str] = mapped_column(Text)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)


class Operator(Base):
    """A person who may use the console. `tenant_ids` None: every tenant; else only these."""

    __tablename__ = "operators"
    __table_args__ = (
        UniqueConstraint("name", name="uq_operators_name"),
        UniqueConstraint("key_hash", name="uq_operators_key_hash"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(200))
    key_hash: Mapped[str] = mapped_column(String(128))
    """sha256 hex of the operator's key (the key itself is never stored)."""
    tenant_ids: Mapped[list[str] | None] = mapped_column(JSONType, nullable=True)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)


class OperatorSession(Base):
    """A console login: the cookie holds the token, the row only its hash."""

    __tablename__ = "operator_sessions"
    __table_args__ = (
        ForeignKeyConstraint(["operator_id"], ["operators.id"], ondelete="CASCADE"),
        Index("ix_operator_sessions_expires_at", "expires_at"),
    )

    token_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    operator_id: Mapped[int] = mapped_column(Integer)
    csrf_token: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)


class WebhookEndpoint(Base):
    """Where a tenant hears about its deliveries: signed POSTs (Standard Webhooks)."""

    __tablename__ = "webhook_endpoints"
    __table_args__ = (Index("ix_webhook_endpoints_tenant", "tenant_id"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ID)
    url: Mapped[str] = mapped_column(Text)
    event_types: Mapped[list[str] | None] = mapped_column(JSONType, nullable=True)
    """The message types sent there; null for all."""
    secret: Mapped[str] = mapped_column(Sealed("webhook_endpoints.secret"))
    """`whsec_<base64>`: the key the messages are signed with (the receiver has it too)."""
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)

"""A person's notification preferences: their shape, how they are read and replaced, and the
change they make (the `preferences.updated` outbound webhook).

The shape (camelCase, every section optional; the seed's NotificationPreference is a valid
one)::

    {"channels":   {"line": true, "email": true, "sms": false, "webPush": true, "slack": true},
     "schedule":   {"quietHours": {"start": "22:00", "end": "08:00"}, "timezone": "Asia/Taipei",
                    "workdays": [true, true, true, true, true, false, false]},
     "priority":   {"high": ["line", "sms"], "medium": ["line", "email"], "low": ["web_push"]},
     "categories": {"MemberActivity": {"line": false}},
     "eventTypes": {"member.checked_in": {"line": false}, "payment.failed": {"line": true}}}

How a channel is decided for one event (notifier.selection): a channel switched off in
`channels` (or by a one-click unsubscribe) is off for every event. Otherwise the event
type's switch for that channel, when set, decides; else the category's switch (the five
topic categories of config/routing.py), when set; else the channel is on. A critical event
ignores the `categories` and `eventTypes` switches unless its tenant sets
`criticalIgnoresOptOuts` to false; `channels` holds for critical events too.

All of it is evaluated in memory on the person's row: selecting channels costs no query.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any, Literal, get_args
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    ValidationError,
)
from pydantic.alias_generators import to_camel
from sqlalchemy import select

from channels.registry import person_channels
from config.routing import ROUTES
from notifier.db import session_scope
from notifier.events import EVENT_TYPES
from notifier.models import Tenant, User, WebhookEndpoint
from notifier.signing import preference_url

log = logging.getLogger("notifier.preferences")

Category = Literal[
    "FileProcessing", "MemberActivity", "CourseManagement", "PaymentUpdates", "SystemAlerts"
]
CATEGORIES: tuple[str, ...] = get_args(Category)
if TYPE_CHECKING:
    PersonChannel = str
    EventTypeName = str
else:  # the registry's channels that reach people and the event types, as schema enums
    PersonChannel = Literal[person_channels()]
    EventTypeName = Literal[EVENT_TYPES]
ChangeSource = Literal["api", "directory", "preference_center", "unsubscribe"]
"""Who changed a person's preferences: the preferences route, `PUT`/`PATCH /users/{userId}`,
the person on the preference center, or the person's one-click unsubscribe."""


WIRE_CONFIG = ConfigDict(
    extra="forbid",
    alias_generator=to_camel,
    validate_by_alias=True,
    validate_by_name=False,
    serialize_by_alias=True,
)
"""camelCase on the wire only; an unknown field is an error (the directory's shapes too)."""


class _Camel(BaseModel):
    model_config = WIRE_CONFIG


class ChannelSwitches(_Camel):
    """Per channel: false turns it off, true turns it on, absent leaves it as it is."""

    line: StrictBool | None = None
    email: StrictBool | None = None
    sms: StrictBool | None = None
    web_push: StrictBool | None = None
    slack: StrictBool | None = None


HHMM = Annotated[
    str, Field(pattern=r"^([01]?[0-9]|2[0-3]):[0-5][0-9]$", description="HH:MM, 24-hour")
]


ZONES = frozenset(available_timezones())
"""The IANA names this machine's time zone database has (the schema's enum)."""


def _timezone(value: str) -> str:
    try:
        if value not in ZONES:
            raise ZoneInfoNotFoundError(value)
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        message = f"unknown time zone {value!r} (an IANA name such as Asia/Taipei)"
        raise ValueError(message) from None
    return value


class QuietHours(_Camel):
    start: HHMM
    end: HHMM


class Schedule(_Camel):
    """Quiet hours: low and medium priority wait (or are dropped) inside the window and on
    days that are not workdays; high and critical go out."""

    quiet_hours: QuietHours | None = None
    timezone: (
        Annotated[
            str,
            Field(
                min_length=1,
                max_length=64,
                description="An IANA time zone",
                json_schema_extra={"enum": sorted(ZONES)},
            ),
            AfterValidator(_timezone),
        ]
        | None
    ) = None
    workdays: list[StrictBool] | None = Field(
        None, min_length=7, max_length=7, description="Monday first"
    )


ChannelList = Annotated[list[PersonChannel], Field(max_length=len(person_channels()))]


class PriorityLists(_Camel):
    """The channels to use, in order, per priority (critical uses every channel)."""

    high: ChannelList | None = None
    medium: ChannelList | None = None
    low: ChannelList | None = None


class Preferences(_Camel):
    """A person's preferences; see notifier.preferences for how they decide a channel."""

    channels: ChannelSwitches | None = Field(
        None, description="Off here: off for every event (a one-click unsubscribe sets this)"
    )
    schedule: Schedule | None = None
    priority: PriorityLists | None = None
    categories: dict[Category, ChannelSwitches] | None = Field(
        None, description="Per topic category: the channels turned off (or on) for its events"
    )
    event_types: dict[EventTypeName, ChannelSwitches] | None = Field(
        None, description="Per event type: decides over its category's switches"
    )
    user_id: str | None = Field(
        None,
        max_length=128,
        pattern=r"^[^\x00]*$",  # no NUL, as everywhere (the OpenAPI document says so)
        description="Ignored (the seed's NotificationPreference has it)",
    )
    tenant_id: str | None = Field(
        None,
        max_length=128,
        pattern=r"^[^\x00]*$",  # no NUL, as everywhere (the OpenAPI document says so)
        description="Ignored (the seed's NotificationPreference has it)",
    )

    def stored(self) -> dict[str, Any]:
        """The JSON kept on the person: camelCase, without unset switches or the ids."""
        return self.model_dump(exclude_none=True, exclude={"user_id", "tenant_id"})


if set(CATEGORIES) != {route.category for route in ROUTES.values()}:
    raise RuntimeError("preferences.Category and config.routing list different categories")

_SECTIONS = ("channels", "schedule", "priority", "categories", "eventTypes")


def clean(raw: Any) -> dict[str, Any]:
    """Stored preferences in today's shape: what validates is kept, a section that does not
    (written before preferences were validated) is left out. Never raises."""
    if not isinstance(raw, dict):
        return {}
    try:
        return Preferences.model_validate(raw).stored()
    except ValidationError:
        pass
    kept: dict[str, Any] = {}
    for section in _SECTIONS:
        if section not in raw:
            continue
        try:
            kept.update(Preferences.model_validate({section: raw[section]}).stored())
        except ValidationError:
            continue
    return kept


def read(tenant_id: str, user_id: str) -> dict[str, Any] | None:
    """The person's preferences, or None when there is no such person in the tenant."""
    with session_scope() as session:
        found = session.execute(
            select(User.preferences).where(User.tenant_id == tenant_id, User.id == user_id)
        ).first()
    return None if found is None else clean(found[0])


@dataclass(frozen=True)
class Change:
    """Preferences of one person that changed (committed)."""

    tenant_id: str
    user_id: str
    preferences: dict[str, Any]
    source: str
    at: dt.datetime


def replace(
    tenant_id: str, user_id: str, preferences: Preferences | dict[str, Any], source: str
) -> tuple[dict[str, Any], Change | None] | None:
    """Replace the person's preferences; (the stored preferences, the change or None when
    nothing changed), or None when there is no such person in the tenant."""
    stored = (
        preferences.stored()
        if isinstance(preferences, Preferences)
        else Preferences.model_validate(preferences).stored()
    )
    with session_scope() as session:
        user = session.scalars(
            select(User).where(User.tenant_id == tenant_id, User.id == user_id).with_for_update()
        ).first()
        if user is None:
            return None
        before = user.preferences
        if before != stored:
            user.preferences = dict(stored)  # a new dict: JSON columns track assignment only
    change = change_of(tenant_id, user_id, before, stored, source)
    if change is not None:
        log.info("preferences changed", extra={"tenant": tenant_id, "source": source})
    return stored, change


def change_of(tenant_id: str, user_id: str, before: Any, after: Any, source: str) -> Change | None:
    """The change from `before` to `after` (stored JSON), or None when they are the same."""
    old, new = clean(before), clean(after)
    if old == new:
        return None
    return Change(tenant_id, user_id, new, source, dt.datetime.now(dt.UTC))


def webhook_messages(changes: Sequence[Change]) -> list[tuple[str, dict[str, Any]]]:
    """(endpoint id, message) of a `preferences.updated` message for every endpoint of the
    change's tenant that takes that type. The message id is the same for the same change."""
    if not changes:
        return []
    with session_scope() as session:
        endpoints = list(
            session.scalars(
                select(WebhookEndpoint).where(
                    WebhookEndpoint.tenant_id.in_({c.tenant_id for c in changes})
                )
            )
        )
    messages = []
    for change in changes:
        stamp = change.at.isoformat()
        body = {
            "type": "preferences.updated",
            "timestamp": stamp,
            "data": {
                "userId": change.user_id,
                "source": change.source,
                "preferences": change.preferences,
            },
        }
        micros = int(change.at.timestamp() * 1_000_000)
        message = {"id": f"msg_pref_{_safe(change.user_id)}_{micros}", "body": body}
        for endpoint in endpoints:
            if endpoint.tenant_id != change.tenant_id:
                continue
            if endpoint.event_types is None or "preferences.updated" in endpoint.event_types:
                messages.append((endpoint.id, message))
    return messages


def _safe(user_id: str) -> str:
    """A user id as it may appear in a message id (Standard Webhooks ids are plain text)."""
    return hashlib.sha256(user_id.encode()).hexdigest()[:16]


def critical_ignores_opt_outs(tenant: Tenant) -> bool:
    """Whether the tenant's critical events skip category and event-type opt-outs (the
    default) or follow them (`criticalIgnoresOptOuts: false`)."""
    return tenant.critical_ignores_opt_outs is not False


TEXT_LINK_CHANNELS = ("line", "sms")
"""Text channels whose messages end with the preference center link where the tenant
enables it (`preferenceLinkChannels`); email carries it in its footer always."""
LINK_LINES = {"en": "Notification settings: {url}", "zh-TW": "通知設定：{url}"}


def link_for(tenant: Tenant, user: User | None, channel: str) -> str | None:
    """The person's signed preference center link for a message on `channel`, or None: on
    email always, on LINE and SMS where the tenant enables it, never on a shared channel
    (Slack, topics) nor for a message to no one in the directory."""
    if user is None:
        return None
    if channel != "email" and channel not in (tenant.preference_link_channels or ()):
        return None
    if channel not in ("email", *TEXT_LINK_CHANNELS):
        return None
    return preference_url(tenant.id, user.id)


def link_line(locale: str, url: str) -> str:
    """The line a LINE or SMS text ends with, in the message's locale."""
    return LINK_LINES.get(locale, LINK_LINES["en"]).format(url=url)

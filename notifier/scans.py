"""The scheduled scans run by Beat: membership-expiry reminders and course reminders.

Every reminder is an ordinary event published through `accept()`, with a deterministic
eventId that is its durable dedup key:

    expiry:{membership id}:{window}d:{expiry date}
    reminder:{booking id}:{window}h:{course start, UTC}

The events table's unique (tenant_id, event_id) makes a repeated scan, a late scan or two
Beat processes scanning at once a `duplicate` no-op. A changed expiry date or start time is
a new key, so a renewed membership or a moved class is reminded again.

Missed windows (the scan was down): only the nearest window that has arrived is sent, and
only while it still means something.
- Membership: a window's reminder is due from `expiry_hour` (tenant's local time) on the day
  `window` days before the expiry date. The scan sends the smallest window whose day has
  come, while the membership has not expired (expiry date >= today, local). A "7 days"
  reminder missed by a day goes out the next morning with the true daysLeft (6); one missed
  until the "3 days" day is superseded by the "3 days" reminder.
- Class: a window's reminder is due `window` hours before the start. The scan sends the
  smallest window that has arrived, never once the class has started: a scan one hour late
  still sends the 24 h reminder, a scan down until the 2 h mark sends only the 2 h one.

Cost: one indexed range query per tenant timezone (memberships.expires_at; courses'
start_time for classes), one unique-index lookup of the keys already published per 1,000
due reminders, and `accept()` (about four statements) only for reminders not yet published;
planning and sending fan out to the workers as `plan` tasks. For 1,000 new reminders that is
~4,000 short statements and 1,000 broker messages, a few seconds once; every later scan
of the same window is three statements. The cost follows the reminders due (memberships
inside the longest window), never the size of the memberships or bookings tables.
"""

from __future__ import annotations

import datetime as dt
import functools
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy import Select, func, select, tuple_
from sqlalchemy.orm import aliased

from config.settings import get_settings
from notifier.db import session_scope
from notifier.models import (
    Booking,
    Course,
    Event,
    EventStatus,
    Membership,
    Tenant,
    User,
)
from notifier.pipeline import accept

log = logging.getLogger("notifier.scans")

SOURCE = "notifier.scans"
KEY_LOOKUP_CHUNK = 1000


@dataclass(frozen=True)
class ScanResult:
    published: int = 0
    duplicates: int = 0
    """Reminders an earlier (or a concurrent) scan already published."""
    skipped: int = 0
    """Due reminders accept() rejected (e.g. a member without a name): stored as rejected
    events with the reason, and tried again by the next scan."""
    event_pks: tuple[int, ...] = ()
    """The events published now, for the caller to plan (tasks.scheduled enqueues them;
    one lost before planning is planned again by requeue_stalled)."""

    def counts(self) -> dict[str, int]:
        return {"published": self.published, "duplicates": self.duplicates, "skipped": self.skipped}


def parse_moment(value: str | None) -> dt.datetime:
    """`now` for a scan: an ISO 8601 time with an offset, or the current time when None."""
    if value is None:
        return dt.datetime.now(dt.UTC)
    try:
        moment = dt.datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(f"not an ISO 8601 time: {value!r}") from None
    if moment.tzinfo is None:
        raise ValueError(f"the time needs a UTC offset, e.g. {value}+08:00 or {value}Z")
    return moment


def expiry_window(
    expiry_date: dt.date, local_now: dt.datetime, days: Sequence[int], hour: int
) -> int | None:
    """The window (days before expiry) whose reminder is due now, or None.

    `local_now` is in the tenant's timezone; a window's day has come once that day's
    `hour` has passed. The smallest such window wins, and none once the membership expired.
    """
    today = local_now.date()
    if expiry_date < today:
        return None
    latest_morning = today if local_now.hour >= hour else today - dt.timedelta(days=1)
    arrived = [d for d in days if expiry_date - dt.timedelta(days=d) <= latest_morning]
    return min(arrived) if arrived else None


def reminder_window(start: dt.datetime, now: dt.datetime, hours: Sequence[int]) -> int | None:
    """The window (hours before start) whose reminder is due now, or None: the smallest
    one that has arrived, and none once the class has started."""
    if start <= now:
        return None
    arrived = [h for h in hours if start - dt.timedelta(hours=h) <= now]
    return min(arrived) if arrived else None


@functools.lru_cache(maxsize=256)
def _zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        # A bad timezone in the directory must not stop every other tenant's reminders.
        log.warning("unknown tenant timezone; using UTC", extra={"error": name[:64]})
        return ZoneInfo("UTC")


def expiry_candidates(timezone: str, first: dt.date, last: dt.date) -> Select[*tuple[Any, ...]]:
    """Memberships of active members of the tenants in `timezone` expiring between `first`
    and `last`: a range on ix_memberships_expires_at, then primary-key joins."""
    return (
        select(
            Membership.tenant_id,
            Membership.id,
            Membership.user_id,
            Membership.membership_type,
            Membership.expires_at,
            User.name,
        )
        .join(User, (User.tenant_id == Membership.tenant_id) & (User.id == Membership.user_id))
        .join(Tenant, Tenant.id == Membership.tenant_id)
        .where(
            Tenant.timezone == timezone,
            Membership.expires_at.between(first, last),
            User.active.is_(True),
        )
        .order_by(Membership.tenant_id, Membership.id)
    )


def scan_membership_expiry(now: dt.datetime) -> ScanResult:
    """Publish the `member.membership_expiring` reminders due at `now` (see module doc)."""
    settings = get_settings()
    days, hour = settings.expiry_days, settings.expiry_hour
    events: list[dict[str, Any]] = []
    with session_scope() as session:
        timezones = session.scalars(select(Tenant.timezone).distinct()).all()
        for timezone in timezones:
            local_now = now.astimezone(_zone(timezone))
            today = local_now.date()
            latest_morning = today if local_now.hour >= hour else today - dt.timedelta(days=1)
            query = expiry_candidates(
                timezone, today, latest_morning + dt.timedelta(days=max(days))
            )
            for row in session.execute(query):
                window = expiry_window(row.expires_at, local_now, days, hour)
                if window is None:
                    continue
                expiry = row.expires_at.isoformat()
                events.append(
                    {
                        "eventId": f"expiry:{row.id}:{window}d:{expiry}",
                        "eventType": "member.membership_expiring",
                        "tenantId": row.tenant_id,
                        "timestamp": now.isoformat(),
                        "source": SOURCE,
                        "data": {
                            "memberName": row.name,
                            "membershipType": row.membership_type,
                            "expiryDate": expiry,
                            "daysLeft": (row.expires_at - today).days,
                        },
                        "metadata": {"userId": row.user_id},
                    }
                )
    return _publish("scan_membership_expiry", events)


def reminder_candidates(first: dt.datetime, last: dt.datetime) -> Select[*tuple[Any, ...]]:
    """Confirmed bookings of active members in scheduled courses starting after `first` and
    at or before `last` (a range on ix_courses_start_time), with each course's count of
    confirmed bookings."""
    other = aliased(Booking)
    confirmed = (
        select(func.count())
        .where(
            other.tenant_id == Course.tenant_id,
            other.course_id == Course.id,
            other.status == "confirmed",
        )
        .correlate(Course)
        .scalar_subquery()
    )
    return (
        select(
            Booking.tenant_id,
            Booking.id,
            Booking.user_id,
            Course.id.label("course_id"),
            Course.course_name,
            Course.instructor_name,
            Course.start_time,
            Course.location,
            Course.capacity,
            confirmed.label("confirmed"),
            Tenant.timezone,
        )
        .join(Course, (Course.tenant_id == Booking.tenant_id) & (Course.id == Booking.course_id))
        .join(User, (User.tenant_id == Booking.tenant_id) & (User.id == Booking.user_id))
        .join(Tenant, Tenant.id == Booking.tenant_id)
        .where(
            Course.start_time > first,
            Course.start_time <= last,
            Course.status == "scheduled",
            Booking.status == "confirmed",
            User.active.is_(True),
        )
        .order_by(Booking.tenant_id, Booking.id)
    )


def scan_course_reminders(now: dt.datetime) -> ScanResult:
    """Publish the `course.reminder` events due at `now` (see module doc)."""
    hours = get_settings().reminder_hours
    events: list[dict[str, Any]] = []
    with session_scope() as session:
        query = reminder_candidates(now, now + dt.timedelta(hours=max(hours)))
        for row in session.execute(query):
            window = reminder_window(row.start_time, now, hours)
            if window is None:
                continue
            start_utc = row.start_time.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
            events.append(
                {
                    "eventId": f"reminder:{row.id}:{window}h:{start_utc}",
                    "eventType": "course.reminder",
                    "tenantId": row.tenant_id,
                    "timestamp": now.isoformat(),
                    "source": SOURCE,
                    "data": {
                        "courseId": row.course_id,
                        "courseName": row.course_name,
                        "instructorName": row.instructor_name,
                        # The tenant's offset reads well in topics and Slack; the person's
                        # templates show it in the person's own timezone.
                        "startTime": row.start_time.astimezone(_zone(row.timezone)).isoformat(),
                        "location": row.location,
                        "remainingSlots": max(row.capacity - row.confirmed, 0),
                    },
                    # The last reminder must not wait for the end of quiet hours: that
                    # can be after the class started. High goes out at night.
                    "metadata": {"userId": row.user_id}
                    | ({"priority": "high"} if window == min(hours) else {}),
                }
            )
    return _publish("scan_course_reminders", events)


def _already_published(events: list[dict[str, Any]]) -> set[tuple[str, str]]:
    """The keys among these events that are taken by an accepted event: one statement of
    unique-index lookups. (A rejected one is retried: accept() lets a valid event take
    over a rejected key.)"""
    keys = [(ev["tenantId"], ev["eventId"]) for ev in events]
    with session_scope() as session:
        rows = session.execute(
            select(Event.tenant_id, Event.event_id).where(
                tuple_(Event.tenant_id, Event.event_id).in_(keys),
                Event.status == EventStatus.ACCEPTED,
            )
        ).tuples()
        return set(rows)


def _publish(scan: str, events: list[dict[str, Any]]) -> ScanResult:
    """accept() each reminder not yet published; the unique key settles any race."""
    published = duplicates = skipped = 0
    to_plan: list[int] = []
    for start in range(0, len(events), KEY_LOOKUP_CHUNK):
        chunk = events[start : start + KEY_LOOKUP_CHUNK]
        taken = _already_published(chunk)
        for event in chunk:
            if (event["tenantId"], event["eventId"]) in taken:
                duplicates += 1
                continue
            outcome = accept(event)
            if outcome.status == EventStatus.ACCEPTED and outcome.event_pk is not None:
                published += 1
                to_plan.append(outcome.event_pk)
            elif outcome.status == EventStatus.DUPLICATE:
                duplicates += 1
            else:
                skipped += 1
    log.info(
        "scan finished: %d published, %d duplicates, %d skipped",
        published,
        duplicates,
        skipped,
        extra={"task": scan, "count": published},
    )
    return ScanResult(published, duplicates, skipped, tuple(to_plan))

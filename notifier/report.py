"""Analytics per tenant (`notifier report`): the seed's NotificationAnalytics report (totalSent,
totalClicked, clickRate, dailyBreakdown), computed from the deliveries and clicks tables
instead of CloudWatch, plus sent / failed / failureRate per channel and per event type.

Days are the tenant's local calendar days. A delivery counts as sent on the day of its
sent_at, as failed on the day it failed (its updated_at); a click on the day it happened.

The optional CloudWatch exporter puts the same numbers under the seed's metric names
(NotificationSent with TenantId / Channel / EventType, NotificationClicked with TenantId /
Channel, and TenantId-only daily totals that the seed's generateNotificationReport reads).
`export_all(now)` is the Beat-able job: each tenant's closed local day is exported once.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy import ColumnElement, and_, case, func, literal, or_, select
from sqlalchemy.orm import Session

from channels.aws import aws_client
from config.settings import get_settings
from notifier import ratelimit
from notifier.db import session_scope
from notifier.models import Click, Delivery, DeliveryStatus, Event, Tenant, utcnow

log = logging.getLogger("notifier.report")

MAX_DAYS = 366
UNKNOWN = "unknown"
"""The channel / event type of a click whose link did not say."""
METRICS_PER_REQUEST = 1000  # PutMetricData's limit of metrics per request
EXPORT_CLOSED_DAYS = 2
"""export_all looks back this many closed days, so a Beat outage of a day loses nothing."""


class UnknownTenant(LookupError):
    pass


@dataclass
class Counts:
    sent: int = 0
    failed: int = 0
    clicked: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "sent": self.sent,
            "failed": self.failed,
            "failureRate": _rate(self.failed, self.sent + self.failed),
            "clicked": self.clicked,
        }


def _rate(part: int, whole: int) -> float:
    return round(part / whole, 4) if whole else 0.0


def tenant_zone(name: str | None) -> dt.tzinfo:
    try:
        return ZoneInfo(name or "UTC")
    except (ZoneInfoNotFoundError, ValueError):
        return dt.UTC


def day_start(day: dt.date, tz: dt.tzinfo) -> dt.datetime:
    """The UTC instant at which `day` begins in `tz`."""
    return dt.datetime.combine(day, dt.time(), tzinfo=tz).astimezone(dt.UTC)


def report(tenant_id: str, days: int = 30, now: dt.datetime | None = None) -> dict[str, Any]:
    """The tenant's report for its last `days` local days, today included, up to `now`."""
    if not 1 <= days <= MAX_DAYS:
        raise ValueError(f"days must be between 1 and {MAX_DAYS}")
    now = now or utcnow()
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    with session_scope() as session:
        tenant = _tenant(session, tenant_id)
        tz = tenant_zone(tenant.timezone)
        today = now.astimezone(tz).date()
        return _report(session, tenant, tz, today - dt.timedelta(days=days - 1), today, now)


def closed_day_report(tenant_id: str, day: dt.date) -> dict[str, Any]:
    """The report of one whole local day of the tenant."""
    with session_scope() as session:
        tenant = _tenant(session, tenant_id)
        tz = tenant_zone(tenant.timezone)
        return _report(session, tenant, tz, day, day, day_start(day + dt.timedelta(days=1), tz))


def _tenant(session: Session, tenant_id: str) -> Tenant:
    tenant = session.get(Tenant, tenant_id)
    if tenant is None:
        raise UnknownTenant(f"unknown tenant {tenant_id!r}")
    return tenant


def _day_index(ts: Any, starts: list[dt.datetime]) -> ColumnElement[int]:
    """0 for the first day, 1 for the second...: compares with each later day's start."""
    if not starts:
        return literal(0)
    return case(*[(ts < start, i) for i, start in enumerate(starts)], else_=len(starts))


def _report(
    session: Session,
    tenant: Tenant,
    tz: dt.tzinfo,
    first: dt.date,
    last: dt.date,
    end: dt.datetime,
) -> dict[str, Any]:
    n_days = (last - first).days + 1
    dates = [first + dt.timedelta(days=k) for k in range(n_days)]
    begin = day_start(first, tz)
    end = min(end, day_start(last + dt.timedelta(days=1), tz))
    later_starts = [day_start(day, tz) for day in dates[1:]]

    sent = Delivery.status == DeliveryStatus.SENT
    failed = Delivery.status == DeliveryStatus.FAILED
    when = case((sent, Delivery.sent_at), else_=Delivery.updated_at)
    # Grouped in an outer query over plain columns: PostgreSQL cannot match a GROUP BY on an
    # expression whose bound parameters are repeated.
    deliveries = (
        select(
            _day_index(when, later_starts).label("day"),
            Delivery.channel.label("channel"),
            Event.event_type.label("event_type"),
            Delivery.status.label("status"),
        )
        .join(Event, Event.id == Delivery.event_pk)
        .where(
            Delivery.tenant_id == tenant.id,
            Event.tenant_id == tenant.id,
            or_(
                and_(sent, Delivery.sent_at >= begin, Delivery.sent_at < end),
                and_(failed, Delivery.updated_at >= begin, Delivery.updated_at < end),
            ),
        )
        .subquery()
    )
    clicks = (
        select(
            _day_index(Click.created_at, later_starts).label("day"),
            Click.channel.label("channel"),
            Click.event_type.label("event_type"),
        )
        .where(Click.tenant_id == tenant.id, Click.created_at >= begin, Click.created_at < end)
        .subquery()
    )

    daily = [Counts() for _ in dates]
    by_channel: dict[str, Counts] = {}
    by_event_type: dict[str, Counts] = {}
    by_pair: dict[tuple[str, str], Counts] = {}

    def tally(day: int, channel: str, event_type: str, field: str, count: int) -> None:
        channel, event_type = channel or UNKNOWN, event_type or UNKNOWN
        for counts in (
            daily[day],
            by_channel.setdefault(channel, Counts()),
            by_event_type.setdefault(event_type, Counts()),
            by_pair.setdefault((channel, event_type), Counts()),
        ):
            setattr(counts, field, getattr(counts, field) + count)

    delivery_rows = session.execute(
        select(deliveries.c.day, deliveries.c.channel, deliveries.c.event_type, deliveries.c.status)
        .add_columns(func.count())
        .group_by(
            deliveries.c.day, deliveries.c.channel, deliveries.c.event_type, deliveries.c.status
        )
    ).tuples()
    for day, channel, event_type, status, count in delivery_rows:
        tally(
            day, channel, event_type, "sent" if status == DeliveryStatus.SENT else "failed", count
        )
    click_rows = session.execute(
        select(clicks.c.day, clicks.c.channel, clicks.c.event_type)
        .add_columns(func.count())
        .group_by(clicks.c.day, clicks.c.channel, clicks.c.event_type)
    ).tuples()
    for day, channel, event_type, count in click_rows:
        tally(day, channel, event_type, "clicked", count)

    total = Counts(
        sum(c.sent for c in daily), sum(c.failed for c in daily), sum(c.clicked for c in daily)
    )
    return {
        "tenantId": tenant.id,
        "timezone": str(tz),
        "days": n_days,
        "from": first.isoformat(),
        "to": last.isoformat(),
        "totalSent": total.sent,
        "totalFailed": total.failed,
        "totalClicked": total.clicked,
        "clickRate": _rate(total.clicked, total.sent),
        "failureRate": _rate(total.failed, total.sent + total.failed),
        "dailyBreakdown": [
            {"date": day.isoformat(), "sent": counts.sent, "clicked": counts.clicked}
            for day, counts in zip(dates, daily, strict=True)
        ],
        "byChannel": {k: v.as_dict() for k, v in sorted(by_channel.items())},
        "byEventType": {k: v.as_dict() for k, v in sorted(by_event_type.items())},
        "byChannelAndEventType": [
            {"channel": channel, "eventType": event_type, **counts.as_dict()}
            for (channel, event_type), counts in sorted(by_pair.items())
        ],
    }


# ---------------------------------------------------------------------------------------
# CloudWatch
# ---------------------------------------------------------------------------------------


def cloudwatch_client() -> Any:
    """A CloudWatch client making one request per call: a failed export is retried by the
    next scheduled run, not by botocore inside this one."""
    return aws_client("cloudwatch", connect_timeout=5, read_timeout=15)


def _datum(
    name: str, value: int, when: dt.datetime, dimensions: list[tuple[str, str]]
) -> dict[str, Any]:
    return {
        "MetricName": name,
        "Dimensions": [{"Name": k, "Value": v} for k, v in dimensions],
        "Value": float(value),
        "Unit": "Count",
        "Timestamp": when,
    }


def metric_data(report_doc: dict[str, Any]) -> list[dict[str, Any]]:
    """The report as CloudWatch data: the TenantId daily totals at each day's start; the
    per channel / event type numbers at the report's first day (meant for one-day reports,
    as export_all makes)."""
    tenant = report_doc["tenantId"]
    tz = tenant_zone(report_doc["timezone"])
    data: list[dict[str, Any]] = []
    for day in report_doc["dailyBreakdown"]:
        when = day_start(dt.date.fromisoformat(day["date"]), tz)
        data.append(_datum("NotificationSent", day["sent"], when, [("TenantId", tenant)]))
        data.append(_datum("NotificationClicked", day["clicked"], when, [("TenantId", tenant)]))
    start = day_start(dt.date.fromisoformat(report_doc["from"]), tz)
    for row in report_doc["byChannelAndEventType"]:
        dims = [("TenantId", tenant), ("Channel", row["channel"]), ("EventType", row["eventType"])]
        for name, value in (
            ("NotificationSent", row["sent"]),
            ("NotificationFailed", row["failed"]),
        ):
            if value:
                data.append(_datum(name, value, start, dims))
    for channel, counts in report_doc["byChannel"].items():
        if counts["clicked"]:
            dims = [("TenantId", tenant), ("Channel", channel)]
            data.append(_datum("NotificationClicked", counts["clicked"], start, dims))
    return data


def export_cloudwatch(report_doc: dict[str, Any], namespace: str = "Kyo/Notifications") -> int:
    """PutMetricData for one report; returns how many data points were put. Raises the
    botocore error when CloudWatch refuses or cannot be reached."""
    data = metric_data(report_doc)
    client = cloudwatch_client()
    for start in range(0, len(data), METRICS_PER_REQUEST):
        client.put_metric_data(
            Namespace=namespace, MetricData=data[start : start + METRICS_PER_REQUEST]
        )
    return len(data)


def export_all(now: dt.datetime | None = None) -> int:
    """Export each tenant's recently closed local days that are not exported yet (a Redis
    marker per tenant and day: safe on two Beat processes and on reruns). Returns the number
    of tenant-days exported; 0 when NOTIFIER_CLOUDWATCH_ENABLED is off."""

    settings = get_settings()
    if not settings.cloudwatch_enabled:
        return 0
    now = now or utcnow()
    redis = ratelimit.redis_client()
    with session_scope() as session:
        tenants = session.execute(select(Tenant.id, Tenant.timezone).order_by(Tenant.id)).all()
    exported = 0
    for tenant_id, timezone in tenants:
        today = now.astimezone(tenant_zone(timezone)).date()
        for back in range(EXPORT_CLOSED_DAYS, 0, -1):
            day = today - dt.timedelta(days=back)
            marker = f"notifier:{settings.queue_prefix}cloudwatch:{tenant_id}:{day.isoformat()}"
            if not redis.set(marker, "1", nx=True, ex=(EXPORT_CLOSED_DAYS + 1) * 86400):
                continue
            try:
                export_cloudwatch(closed_day_report(tenant_id, day), settings.cloudwatch_namespace)
            except Exception as exc:  # the next run tries this day again
                redis.delete(marker)
                log.warning(
                    "CloudWatch export failed",
                    extra={"tenant": tenant_id, "error": type(exc).__name__},
                )
                continue
            exported += 1
    return exported

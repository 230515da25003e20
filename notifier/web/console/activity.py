"""Activity: events searched by id, type, person, tenant, status and time, newest first, and
one event's timeline (accepted, planned, each delivery with its attempts, reasons, provider
ids, fallbacks, digests and clicks, dead letters, the raw payload)."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

from fastapi import APIRouter, Query
from fastapi.responses import HTMLResponse
from sqlalchemy import func, select

from notifier.db import session_scope
from notifier.models import (
    Click,
    DeadLetter,
    Delivery,
    DeliveryStatus,
    Digest,
    Event,
    EventStatus,
)
from notifier.operators import OperatorScope
from notifier.web.console.access import NO_NUL, Operator, newest_page, not_found, page, scoped

REFRESH_SECONDS = 3
IN_FLIGHT = (DeliveryStatus.QUEUED, DeliveryStatus.SENDING, DeliveryStatus.BATCHED)
"""Statuses that change within seconds (a deferred delivery waits for hours: not these)."""

router = APIRouter()


def parse_moment(value: str) -> dt.datetime | None:
    """A date or a date and time from a form field, read as UTC unless it has an offset;
    None when empty or unreadable."""
    value = value.strip()
    if not value:
        return None
    try:
        moment = dt.datetime.fromisoformat(value)
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)


def when(value: dt.datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S UTC") if value else ""


def search_events(operator: OperatorScope, filters: dict[str, Any]) -> dict[str, Any]:
    query = scoped(select(Event), Event.tenant_id, operator)
    if filters["event_id"]:
        query = query.where(Event.event_id == filters["event_id"])
    if filters["event_type"]:
        query = query.where(Event.event_type == filters["event_type"])
    if filters["tenant"]:
        query = query.where(Event.tenant_id == filters["tenant"])
    if filters["status"]:
        query = query.where(Event.status == filters["status"])
    if filters["person"]:
        people = scoped(
            select(Delivery.event_pk).where(Delivery.recipient == filters["person"]),
            Delivery.tenant_id,
            operator,
        )
        if filters["tenant"]:
            people = people.where(Delivery.tenant_id == filters["tenant"])
        query = query.where(Event.id.in_(people))
    since, until = parse_moment(filters["since"]), parse_moment(filters["until"])
    if since:
        query = query.where(Event.created_at >= since)
    if until:
        query = query.where(Event.created_at <= until)
    with session_scope() as session:
        rows, next_before = newest_page(session, query, Event.id, filters["before"])
        counts: dict[int, dict[str, int]] = {}
        if rows:
            grouped = session.execute(
                select(Delivery.event_pk, Delivery.status, func.count())
                .where(Delivery.event_pk.in_([r.id for r in rows]))
                .group_by(Delivery.event_pk, Delivery.status)
            ).tuples()
            for event_pk, status, count in grouped:
                counts.setdefault(event_pk, {})[status] = count
        events = [
            {
                "pk": row.id,
                "event_id": row.event_id,
                "event_type": row.event_type,
                "tenant": row.tenant_id,
                "status": row.status,
                "person": (row.payload.get("metadata") or {}).get("userId")
                if isinstance(row.payload, dict)
                else None,
                "created_at": when(row.created_at),
                "deliveries": sorted(counts.get(row.id, {}).items()),
            }
            for row in rows
        ]
    return {"events": events, "next_before": next_before}


@router.get("/", response_class=HTMLResponse, include_in_schema=False)
@router.get("/events", response_class=HTMLResponse, include_in_schema=False)
def activity(
    operator: Operator,
    event_id: str = Query(default="", max_length=200, pattern=NO_NUL),
    event_type: str = Query(default="", max_length=100, pattern=NO_NUL),
    person: str = Query(default="", max_length=128, pattern=NO_NUL),
    tenant: str = Query(default="", max_length=128, pattern=NO_NUL),
    status: str = Query(default="", max_length=16, pattern=NO_NUL),
    since: str = Query(default="", max_length=40, pattern=NO_NUL),
    until: str = Query(default="", max_length=40, pattern=NO_NUL),
    before: int | None = Query(default=None, ge=1, le=2**62),
) -> HTMLResponse:
    filters = {
        "event_id": event_id.strip(),
        "event_type": event_type.strip(),
        "person": person.strip(),
        "tenant": tenant.strip(),
        "status": status.strip(),
        "since": since,
        "until": until,
        "before": before,
    }
    found = search_events(operator, filters)
    return page(
        "activity.html.j2",
        operator,
        {
            **found,
            "filters": filters,
            "statuses": [s.value for s in EventStatus],
            "query": {k: v for k, v in filters.items() if v and k != "before"},
        },
    )


def _digest_view(digest: Digest | None) -> dict[str, Any] | None:
    if digest is None:
        return None
    return {
        "id": digest.id,
        "status": digest.status,
        "items": digest.item_count,
        "attempts": digest.attempts,
        "provider_message_id": digest.provider_message_id,
        "reason": digest.reason,
        "sent_at": when(digest.sent_at),
    }


def timeline(operator: OperatorScope, event_pk: int) -> dict[str, Any] | None:
    """The event's page, None when it does not exist or belongs to a tenant not shown."""
    with session_scope() as session:
        event = session.scalar(
            scoped(select(Event), Event.tenant_id, operator).where(Event.id == event_pk)
        )
        if event is None:
            return None
        deliveries = list(
            session.scalars(
                select(Delivery)
                .where(Delivery.event_pk == event.id, Delivery.tenant_id == event.tenant_id)
                .order_by(Delivery.id)
            )
        )
        ids = [d.id for d in deliveries]
        digests = {
            d.id: d
            for d in session.scalars(
                select(Digest).where(
                    Digest.id.in_({d.digest_id for d in deliveries if d.digest_id}),
                    Digest.tenant_id == event.tenant_id,
                )
            )
        }
        clicks: dict[int, list[Click]] = {}
        dead: dict[int, list[DeadLetter]] = {}
        if ids:
            for click in session.scalars(
                select(Click)
                .where(Click.delivery_id.in_(ids), Click.tenant_id == event.tenant_id)
                .order_by(Click.id)
            ):
                clicks.setdefault(click.delivery_id or 0, []).append(click)
            for letter in session.scalars(
                select(DeadLetter)
                .where(DeadLetter.delivery_id.in_(ids), DeadLetter.tenant_id == event.tenant_id)
                .order_by(DeadLetter.id)
            ):
                dead.setdefault(letter.delivery_id or 0, []).append(letter)

        steps: list[dict[str, Any]] = []

        def step(at: dt.datetime | None, kind: str, text: str) -> None:
            if at is not None:
                steps.append({"at": at, "when": when(at), "kind": kind, "text": text})

        step(event.created_at, event.status, f"event {event.status}")
        for problem in event.errors or []:
            if isinstance(problem, dict):
                step(
                    event.created_at,
                    "rejected",
                    f"{problem.get('field')}: {problem.get('message')}",
                )
        step(event.planned_at, "planned", f"planned: {len(deliveries)} deliveries")
        views = []
        for d in deliveries:
            label = f"#{d.id} {d.channel} to {d.recipient}"
            origin = f" as fallback of #{d.fallback_of}" if d.fallback_of else ""
            step(d.created_at, "created", f"{label} created{origin}")
            if d.sent_at:
                step(
                    d.sent_at, "sent", f"{label} sent (provider id {d.provider_message_id or '-'})"
                )
            elif d.status not in IN_FLIGHT:
                step(d.updated_at, d.status, f"{label} {d.status}: {d.reason or ''}".rstrip(": "))
            digest = digests.get(d.digest_id) if d.digest_id else None
            if digest is not None:
                step(
                    digest.sent_at or digest.created_at,
                    "digest",
                    f"{label} went into digest #{digest.id}"
                    f" ({digest.status}, {digest.item_count} items)",
                )
            for click in clicks.get(d.id, []):
                step(click.created_at, "clicked", f"{label} clicked: {click.url}")
            for letter in dead.get(d.id, []):
                step(
                    letter.created_at,
                    "dead letter",
                    f"{label} dead-lettered (#{letter.id}): {letter.error}",
                )
                step(letter.replayed_at, "replayed", f"{label} dead letter #{letter.id} replayed")
            views.append(
                {
                    "id": d.id,
                    "channel": d.channel,
                    "recipient": d.recipient,
                    "priority": d.priority,
                    "status": d.status,
                    "attempts": d.attempts,
                    "reason": d.reason or "",
                    "provider_message_id": d.provider_message_id or "",
                    "not_before": when(d.not_before),
                    "sent_at": when(d.sent_at),
                    "updated_at": when(d.updated_at),
                    "fallback_of": d.fallback_of,
                    "digest": _digest_view(digest),
                    "clicks": [
                        {"when": when(c.created_at), "url": c.url} for c in clicks.get(d.id, [])
                    ],
                    "dead_letters": [letter.id for letter in dead.get(d.id, [])],
                }
            )
        steps.sort(key=lambda s: s["at"])
        in_flight = any(d.status in IN_FLIGHT for d in deliveries) or (
            event.status == EventStatus.ACCEPTED and event.planned_at is None
        )
        return {
            "event": {
                "pk": event.id,
                "event_id": event.event_id,
                "event_type": event.event_type,
                "tenant": event.tenant_id,
                "status": event.status,
                "priority": event.priority or "",
                "created_at": when(event.created_at),
                "planned_at": when(event.planned_at),
            },
            "steps": steps,
            "deliveries": views,
            "payload": json.dumps(event.payload, ensure_ascii=False, indent=2, sort_keys=True),
            "in_flight": in_flight,
        }


@router.get("/events/{event_pk}", response_class=HTMLResponse, include_in_schema=False)
def event_page(event_pk: int, operator: Operator) -> HTMLResponse:
    if not 1 <= event_pk <= 2**62:
        return not_found(operator, "event")
    found = timeline(operator, event_pk)
    if found is None:
        return not_found(operator, "event")
    return page(
        "event.html.j2", operator, found, refresh=REFRESH_SECONDS if found["in_flight"] else None
    )

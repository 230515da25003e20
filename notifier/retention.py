"""Retention: delete events (with their deliveries), outbox messages and replayed dead
letters older than NOTIFIER_RETENTION_DAYS, in batches, one transaction per batch.

Kept whatever their age: dead letters not yet replayed, and the events and deliveries they
point at (an operator may still replay them). This job runs across tenants by design.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Callable
from typing import Any, cast

from sqlalchemy import CursorResult, Delete, delete, select
from sqlalchemy.orm import Session

from config.settings import Settings, get_settings
from notifier.db import session_scope
from notifier.models import DeadLetter, Delivery, Event, OutboxMessage

DEFAULT_BATCH = 5000


def retention_cutoff(now: dt.datetime, settings: Settings) -> dt.datetime:
    """Rows created before this go. The scans' dedup keys are events, so an event must
    outlive its reminder window (a 7-day expiry key is looked up for 8 days), whatever
    the setting says."""
    longest_window_days = max(
        max(settings.expiry_days), math.ceil(max(settings.reminder_hours) / 24)
    )
    days = max(settings.retention_days, longest_window_days + 2)
    return now - dt.timedelta(days=days)


def _purge(
    model: Any,
    cutoff: dt.datetime,
    batch_size: int,
    delete_batch: Callable[[Session, list[int]], None],
) -> None:
    """Walk the table oldest id first and hand each batch of rows created before `cutoff`
    to `delete_batch`. Ids grow with created_at, so the walk stops at the first row that
    is new enough instead of scanning the whole table (created_at has no index of its own);
    a row that committed out of order is caught by the next run."""
    after = 0
    while True:
        with session_scope() as session:
            rows = (
                session.execute(
                    select(model.id, model.created_at)
                    .where(model.id > after)
                    .order_by(model.id)
                    .limit(batch_size)
                )
                .tuples()
                .all()
            )
            old = [row_id for row_id, created_at in rows if created_at < cutoff]
            if old:
                delete_batch(session, old)
        if len(old) < batch_size:
            return
        after = rows[-1][0]


def _deleted(session: Session, statement: Delete) -> int:
    # A DELETE's rowcount is exact on PostgreSQL and SQLite.
    return cast(CursorResult[Any], session.execute(statement)).rowcount


def cleanup(now: dt.datetime, batch_size: int = DEFAULT_BATCH) -> dict[str, int]:
    """Delete what is older than the retention period; returns how many rows of each kind."""
    cutoff = retention_cutoff(now, get_settings())
    removed = {"events": 0, "deliveries": 0, "outbox_messages": 0, "dead_letters": 0}

    def events_batch(session: Session, ids: list[int]) -> None:
        pinned = set(
            session.scalars(
                select(Delivery.event_pk)
                .join(DeadLetter, DeadLetter.delivery_id == Delivery.id)
                .where(Delivery.event_pk.in_(ids), DeadLetter.replayed_at.is_(None))
            )
        )
        victims = [event_pk for event_pk in ids if event_pk not in pinned]
        if not victims:
            return
        removed["deliveries"] += _deleted(
            session, delete(Delivery).where(Delivery.event_pk.in_(victims))
        )
        removed["events"] += _deleted(session, delete(Event).where(Event.id.in_(victims)))

    def outbox_batch(session: Session, ids: list[int]) -> None:
        removed["outbox_messages"] += _deleted(
            session, delete(OutboxMessage).where(OutboxMessage.id.in_(ids))
        )

    def dead_letters_batch(session: Session, ids: list[int]) -> None:
        removed["dead_letters"] += _deleted(
            session,
            delete(DeadLetter).where(DeadLetter.id.in_(ids), DeadLetter.replayed_at.is_not(None)),
        )

    _purge(Event, cutoff, batch_size, events_batch)
    _purge(OutboxMessage, cutoff, batch_size, outbox_batch)
    _purge(DeadLetter, cutoff, batch_size, dead_letters_batch)
    return removed

"""Channels turned off per tenant (disabled or parked), consulted by channel selection."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import delete, or_, select
from sqlalchemy.orm import Session

from notifier.models import ChannelState, utcnow


def unavailable_channels(session: Session, tenant_id: str, now: dt.datetime) -> dict[str, str]:
    """channel -> reason, for the tenant's channels that must not be selected now."""
    rows = session.scalars(
        select(ChannelState).where(
            ChannelState.tenant_id == tenant_id,
            or_(ChannelState.until.is_(None), ChannelState.until > now),
        )
    )
    return {row.channel: f"channel {row.state}: {row.reason}" for row in rows}


def turn_off(
    session: Session, tenant_id: str, channel: str, reason: str, until: dt.datetime | None
) -> None:
    """Disable (until=None) or park (until=a time) a channel for a tenant."""
    row = session.get(ChannelState, (tenant_id, channel))
    state = "parked" if until is not None else "disabled"
    if row is None:
        session.add(
            ChannelState(
                tenant_id=tenant_id,
                channel=channel,
                state=state,
                until=until,
                reason=reason,
                updated_at=utcnow(),
            )
        )
    else:
        row.state, row.until, row.reason = state, until, reason


def enable(session: Session, tenant_id: str, channel: str) -> None:
    session.execute(
        delete(ChannelState).where(
            ChannelState.tenant_id == tenant_id, ChannelState.channel == channel
        )
    )

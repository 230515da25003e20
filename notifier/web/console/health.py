"""Channel health: per tenant, the channels turned off (disabled: bad credentials; parked:
a quota) with their reasons and a button to turn them on again; suppressions (bounced,
complained, unfollowed, gone) with search and removal."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, Query
from fastapi.responses import HTMLResponse, RedirectResponse
from sqlalchemy import delete, select

from notifier.channel_state import enable
from notifier.db import session_scope
from notifier.models import ChannelState, Suppression, utcnow
from notifier.web.console.access import (
    NO_NUL,
    CheckedForm,
    Operator,
    field,
    newest_page,
    page,
    scoped,
)
from notifier.web.console.activity import when

router = APIRouter()


@router.get("/channels", response_class=HTMLResponse, include_in_schema=False)
def channel_health(
    operator: Operator,
    tenant: str = Query(default="", max_length=128, pattern=NO_NUL),
    channel: str = Query(default="", max_length=16, pattern=NO_NUL),
    address: str = Query(default="", max_length=320, pattern=NO_NUL),
    before: int | None = Query(default=None, ge=1, le=2**62),
    enabled: str = Query(default="", max_length=200, pattern=NO_NUL),
    removed: str = Query(default="", max_length=400, pattern=NO_NUL),
) -> HTMLResponse:
    now = utcnow()
    states = scoped(select(ChannelState), ChannelState.tenant_id, operator)
    suppressions = scoped(select(Suppression), Suppression.tenant_id, operator)
    if tenant.strip():
        states = states.where(ChannelState.tenant_id == tenant.strip())
        suppressions = suppressions.where(Suppression.tenant_id == tenant.strip())
    if channel.strip():
        states = states.where(ChannelState.channel == channel.strip())
        suppressions = suppressions.where(Suppression.channel == channel.strip())
    if address.strip():
        suppressions = suppressions.where(
            Suppression.address.contains(address.strip(), autoescape=True)
        )
    with session_scope() as session:
        turned_off = [
            {
                "tenant": row.tenant_id,
                "channel": row.channel,
                "state": row.state,
                "reason": row.reason,
                "until": when(row.until),
                "over": row.until is not None and row.until <= now,
                "since": when(row.updated_at),
            }
            for row in session.scalars(
                states.order_by(ChannelState.tenant_id, ChannelState.channel)
            )
        ]
        rows, next_before = newest_page(session, suppressions, Suppression.id, before)
    filters = {"tenant": tenant.strip(), "channel": channel.strip(), "address": address.strip()}
    context: dict[str, Any] = {
        "turned_off": turned_off,
        "suppressions": [
            {
                "id": row.id,
                "tenant": row.tenant_id,
                "channel": row.channel,
                "address": row.address,
                "reason": row.reason,
                "created_at": when(row.created_at),
            }
            for row in rows
        ],
        "filters": filters,
        "query": {k: v for k, v in filters.items() if v},
        "next_before": next_before,
        "enabled": enabled,
        "removed": removed,
    }
    return page("channels.html.j2", operator, context)


def _back(**notice: str) -> RedirectResponse:
    return RedirectResponse(f"/console/channels?{urlencode(notice)}", status_code=303)


@router.post("/channels/enable", include_in_schema=False)
def enable_channel(checked: CheckedForm) -> RedirectResponse:
    """Turn a disabled or parked channel on again for one tenant the operator sees."""
    operator, form = checked
    tenant, channel = field(form, "tenant"), field(form, "channel")
    if not operator.may_see(tenant):
        return _back(enabled="")
    with session_scope() as session:
        if session.get(ChannelState, (tenant, channel)) is None:
            return _back(enabled="")
        enable(session, tenant, channel)
    return _back(enabled=f"{channel} for {tenant}")


@router.post("/suppressions/remove", include_in_schema=False)
def remove_suppression(checked: CheckedForm) -> RedirectResponse:
    """Remove one suppression of a tenant the operator sees: that address is sent to again."""
    operator, form = checked
    value = field(form, "id")
    if not value.isdigit() or not 1 <= int(value) <= 2**62:
        return _back(removed="")
    with session_scope() as session:
        row = session.scalar(
            scoped(select(Suppression), Suppression.tenant_id, operator).where(
                Suppression.id == int(value)
            )
        )
        if row is None:
            return _back(removed="")
        described = f"{row.channel} {row.address} ({row.tenant_id})"
        session.execute(delete(Suppression).where(Suppression.id == row.id))
    return _back(removed=described)

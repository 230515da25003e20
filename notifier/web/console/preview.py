"""Template preview: one event type, locale and channel rendered with the demo's sample data
exactly as the sending path builds it (notifier.sending.build_message: templates, tracked
links, the LINE Flex messages), then drawn the way the outbox page draws what it stored."""

from __future__ import annotations

import json
from typing import Any

from fastapi import APIRouter, Query
from fastapi.responses import HTMLResponse

from channels.outbox import OutboxChannel
from channels.registry import channel_names, declaration
from config.routing import ROUTES
from notifier import demo
from notifier.models import Delivery, Event, OutboxMessage, Tenant, User, utcnow
from notifier.operators import OperatorScope
from notifier.rendering import DEFAULT_LOCALE, TEMPLATE_DIR, TemplateProblem
from notifier.sending import ChunkContext, build_message
from notifier.web.console.access import NO_NUL, Operator, page
from notifier.web.outbox import message_view

PREVIEW_TENANT = "preview"
PREVIEW_PERSON = "u-amy"

router = APIRouter()


def locales() -> list[str]:
    return sorted(p.name for p in TEMPLATE_DIR.iterdir() if p.is_dir() and p.name[0] != "_")


def sample_event(event_type: str) -> dict[str, Any]:
    now = utcnow()
    for sample in demo.events(now, "preview"):
        if sample["eventType"] == event_type:
            return {**sample, "tenantId": PREVIEW_TENANT}
    raise LookupError(event_type)


def preview(event_type: str, locale: str, channel: str) -> dict[str, Any]:
    """The message as the outbox page would show it, plus its raw parts."""
    payload = sample_event(event_type)
    tenant = Tenant(
        id=PREVIEW_TENANT, name="Kyo Gym", timezone="Asia/Taipei", locale=locale, branding={}
    )
    user = User(
        tenant_id=PREVIEW_TENANT,
        id=PREVIEW_PERSON,
        name="Amy Chen",
        locale=locale,
        timezone=None,
        addresses={
            "email": "amy@example.com",
            "sms": "+886912345678",
            "line": "U4af4980629000000000000000000000a",
        },
    )
    event = Event(
        id=1,
        event_id=payload["eventId"],
        tenant_id=PREVIEW_TENANT,
        event_type=event_type,
        status="accepted",
        payload=payload,
    )
    delivery = Delivery(
        id=1,
        event_pk=1,
        tenant_id=PREVIEW_TENANT,
        recipient=PREVIEW_PERSON,
        channel=channel,
        priority=ROUTES[event_type].priority,
    )
    context = ChunkContext(
        events={1: event},
        tenants={PREVIEW_TENANT: tenant},
        users={(PREVIEW_TENANT, PREVIEW_PERSON): user},
        subscriptions={},
    )
    message = build_message(delivery, context)
    stored = OutboxChannel(declaration(channel)).build_payload(message)
    row = OutboxMessage(id=1, created_at=utcnow(), **stored)
    line_messages = (message.attributes or {}).get("line_messages")
    return {
        "message": message_view(row),
        "locale_used": message.attributes.get("locale", locale),
        "text": message.text,
        "line_json": json.dumps(line_messages, ensure_ascii=False, indent=2)
        if line_messages
        else "",
        "data": json.dumps(payload["data"], ensure_ascii=False, indent=2),
    }


@router.get("/preview", response_class=HTMLResponse, include_in_schema=False)
def template_preview(
    operator: Operator,
    event_type: str = Query(default="payment.failed", max_length=100, pattern=NO_NUL),
    locale: str = Query(default=DEFAULT_LOCALE, max_length=16, pattern=NO_NUL),
    channel: str = Query(default="email", max_length=16, pattern=NO_NUL),
) -> HTMLResponse:
    return page("preview.html.j2", operator, preview_context(operator, event_type, locale, channel))


def preview_context(
    operator: OperatorScope, event_type: str, locale: str, channel: str
) -> dict[str, Any]:
    choices = {
        "event_types": sorted(ROUTES),
        "locales": locales(),
        "channels": list(channel_names()),
        "event_type": event_type,
        "locale": locale,
        "channel": channel,
    }
    if event_type not in ROUTES or channel not in channel_names() or locale not in locales():
        return {**choices, "problem": "Pick an event type, a locale and a channel from the lists."}
    try:
        return {**choices, "problem": "", **preview(event_type, locale, channel)}
    except TemplateProblem as exc:
        return {**choices, "problem": str(exc)}

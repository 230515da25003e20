"""GET /outbox: what the outbox backend 'sent', drawn as each person would see it.

A development page (it shows every tenant's messages): served only when
NOTIFIER_OUTBOX_PAGE is on, which `notifier dev` does for its web app.
"""

from __future__ import annotations

import json
import re
from typing import Any

from fastapi import APIRouter, Query
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse
from sqlalchemy import select

from channels.registry import declaration
from notifier.db import session_scope
from notifier.models import OutboxMessage
from notifier.web.pages import render_page

PAGE_SIZE = 50
HEX_COLOR = re.compile(r"#[0-9a-fA-F]{6}")
NO_NUL = r"^[^\x00]*$"  # PostgreSQL refuses NUL characters in strings

router = APIRouter(tags=["dev"])


def _color(value: Any) -> str | None:
    """Only plain hex colours reach a style attribute."""
    return value if isinstance(value, str) and HEX_COLOR.fullmatch(value) else None


def _flex_parts(node: Any, parts: list[dict[str, Any]]) -> None:
    """Flatten a Flex component tree into text lines and buttons, in reading order."""
    if not isinstance(node, dict):
        return
    kind = node.get("type")
    if kind == "text" and isinstance(node.get("text"), str):
        parts.append(
            {
                "kind": "text",
                "text": node["text"],
                "bold": node.get("weight") == "bold",
                "color": _color(node.get("color")),
            }
        )
    elif kind == "button":
        action = node.get("action")
        label = action.get("label") if isinstance(action, dict) else None
        parts.append(
            {"kind": "button", "text": str(label or "Open"), "color": _color(node.get("color"))}
        )
    for child in node.get("contents") or []:
        _flex_parts(child, parts)


def _bubble(bubble: dict[str, Any]) -> dict[str, Any]:
    sections = []
    for name in ("header", "hero", "body", "footer"):
        parts: list[dict[str, Any]] = []
        _flex_parts(bubble.get(name), parts)
        if parts:
            sections.append(
                {
                    "name": name,
                    "parts": parts,
                    "background": _color((bubble.get(name) or {}).get("backgroundColor")),
                }
            )
    return {"sections": sections}


def line_view(messages: Any, fallback_text: str) -> list[dict[str, Any]]:
    """LINE message objects as chat items: text, Flex bubbles (flattened), buttons
    templates, or the JSON for anything else."""
    if isinstance(messages, dict):
        messages = [messages]
    if not isinstance(messages, list) or not messages:
        return [{"kind": "text", "text": fallback_text}]
    items: list[dict[str, Any]] = []
    for message in messages:
        kind = message.get("type") if isinstance(message, dict) else None
        if kind == "text":
            items.append({"kind": "text", "text": str(message.get("text") or "")})
        elif kind == "flex":
            contents = message.get("contents")
            carousel = isinstance(contents, dict) and contents.get("type") == "carousel"
            bubbles = contents.get("contents") if carousel else [contents]
            if not isinstance(bubbles, list):
                bubbles = []
            items.append(
                {
                    "kind": "flex",
                    "alt": str(message.get("altText") or ""),
                    "bubbles": [_bubble(b) for b in bubbles if isinstance(b, dict)],
                }
            )
        elif kind == "template" and isinstance(message.get("template"), dict):
            template = message["template"]
            actions = template.get("actions") or []
            items.append(
                {
                    "kind": "template",
                    "title": str(template.get("title") or ""),
                    "text": str(template.get("text") or ""),
                    "buttons": [str(a.get("label") or "") for a in actions if isinstance(a, dict)],
                }
            )
        else:
            items.append(
                {"kind": "json", "json": json.dumps(message, ensure_ascii=False, indent=2)}
            )
    return items


def channel_look(channel: str) -> dict[str, str]:
    """How the page draws a channel's messages, as the channel declares it; the generic
    view (subject and text, a grey badge) for a channel no module declares any more."""
    try:
        declared = declaration(channel)
    except LookupError:
        return {"view": "text", "color": "#6b7280", "label": channel}
    return {
        "view": declared.outbox_view,
        "color": _color(declared.outbox_color) or "#6b7280",
        "label": declared.display_name(),
    }


def message_view(row: OutboxMessage) -> dict[str, Any]:
    payload = row.payload if isinstance(row.payload, dict) else {}
    look = channel_look(row.channel)
    view: dict[str, Any] = {
        "id": row.id,
        "channel": row.channel,
        **look,
        "tenant": row.tenant_id,
        "event_type": row.event_type,
        "recipient": row.recipient,
        "address": row.address or "",
        "subject": row.subject or "",
        "text": row.body_text or "",
        "html": row.body_html,
        "created_at": row.created_at.strftime("%Y-%m-%d %H:%M:%S UTC"),
    }
    if look["view"] == "line":
        view["line"] = line_view(payload.get("line_messages"), row.body_text or "")
    if look["view"] == "topic":
        view["event_json"] = json.dumps(payload.get("event"), ensure_ascii=False, indent=2)
    return view


def load_page(
    tenant: str | None, event_type: str | None, before: int | None
) -> tuple[list[dict[str, Any]], int | None]:
    """The newest PAGE_SIZE messages matching the filters (older than id `before`), and
    the id to continue from when there are more."""
    query = select(OutboxMessage).order_by(OutboxMessage.id.desc()).limit(PAGE_SIZE + 1)
    if tenant:
        query = query.where(OutboxMessage.tenant_id == tenant)
    if event_type:
        query = query.where(OutboxMessage.event_type == event_type)
    if before is not None:
        query = query.where(OutboxMessage.id < before)
    with session_scope() as session:
        rows = list(session.scalars(query))
    more = len(rows) > PAGE_SIZE
    rows = rows[:PAGE_SIZE]
    return [message_view(r) for r in rows], (rows[-1].id if more else None)


@router.get("/outbox", summary="The dev outbox", response_class=HTMLResponse)
async def outbox_page(
    tenant: str | None = Query(default=None, max_length=128, pattern=NO_NUL),
    event_type: str | None = Query(default=None, max_length=100, pattern=NO_NUL),
    before: int | None = Query(default=None, ge=1, le=2**62),
) -> HTMLResponse:
    messages, next_before = await run_in_threadpool(load_page, tenant, event_type, before)
    return render_page(
        "outbox.html.j2",
        {
            "messages": messages,
            "tenant": tenant or "",
            "event_type": event_type or "",
            "next_before": next_before,
        },
    )

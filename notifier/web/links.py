"""Links in messages: tracked clicks (GET /c/<token>) and one-click unsubscribe
(GET/POST /u/<token>, RFC 8058). Both tokens are signed by notifier.signing.

A token that is not shaped like one (TOKEN_PATTERN, at most MAX_TOKEN_CHARS) answers 400; a
well-shaped one that is not a link we signed for that use (a wrong signature, a payload out
of range) answers 404: as far as anyone can tell, no such link exists. Both are the same
"this link is not valid" page."""

from __future__ import annotations

import datetime as dt
import logging
import re
from dataclasses import dataclass
from typing import Any, TypeGuard

from fastapi import APIRouter, Path
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, RedirectResponse
from sqlalchemy import select

from channels.registry import declaration, person_channels
from notifier.db import session_scope
from notifier.models import Click, Delivery, Event, Tenant, User, utcnow
from notifier.preferences import change_of
from notifier.selection import preference_keys
from notifier.signing import MAX_TOKEN_CHARS, BadSignature, is_web_url, verify
from notifier.status_hooks import StatusChange
from notifier.web.bodies import Problem
from notifier.web.pages import render_page
from notifier.web.preferences_api import announce
from notifier.web.webhooks import announce_feedback

log = logging.getLogger("notifier.web.links")

router = APIRouter(tags=["links"])

MALFORMED_LINK = 400
BAD_LINK = 404
TOKEN_PATTERN = r"^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$"  # noqa: S105 (a shape, not a secret)
"""base64url(payload) "." base64url(signature)."""
_TOKEN = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+")
TOKEN = Path(
    description="A signed token, as the link in the message carries it",
    json_schema_extra={"pattern": TOKEN_PATTERN, "maxLength": MAX_TOKEN_CHARS},
)
_PAGE = {"text/html": {"schema": {"type": "string"}}}
LINK_ANSWERS: dict[int | str, dict[str, Any]] = {
    400: {"description": "Not shaped like a token (the invalid-link page)", "content": _PAGE},
    404: {
        "description": "Not a link we made for this use (a wrong signature): the invalid-link page",
        "content": _PAGE,
    },
    503: {"model": Problem, "description": "The database is unavailable"},
}
MAX_ID = 2**63 - 1
"""Delivery ids are 64-bit: a larger number in a token is refused, not sent to the database."""
MAX_URL_CHARS = 2048


class BadLink(ValueError):
    pass


def malformed(token: str) -> bool:
    """Not shaped like a token at all (400, not 404)."""
    return len(token) > MAX_TOKEN_CHARS or not _TOKEN.fullmatch(token)


def bad_link(token: str) -> Any:
    """The invalid-link page: 400 for a malformed token, 404 for any other."""
    return render_page(
        "bad_link.html.j2", {}, status_code=MALFORMED_LINK if malformed(token) else BAD_LINK
    )


def click_target(token: str) -> dict[str, Any]:
    """The verified click token: its http(s) target and where the link was sent."""
    if malformed(token):
        raise BadLink("malformed token")
    try:
        payload = verify(token, "click")
    except BadSignature as exc:
        raise BadLink(str(exc)) from exc
    url = payload.get("u")
    if not isinstance(url, str) or len(url) > MAX_URL_CHARS or not is_web_url(url):
        raise BadLink("not an http(s) link")
    if not _short_text(payload.get("t"), 128):
        raise BadLink("no tenant")
    delivery_id = payload.get("d")
    if delivery_id is not None and not (
        type(delivery_id) is int and 0 < delivery_id <= MAX_ID  # bool is not an id
    ):
        raise BadLink("bad delivery id")
    return payload


def _short_text(value: Any, limit: int) -> TypeGuard[str]:
    return isinstance(value, str) and 0 < len(value) <= limit


CLICK_WINDOW = dt.timedelta(minutes=10)
"""Clicks of one delivery within this window are one click (a replayed link, a mail
scanner following it, a double tap): `notifier report` counts people who clicked."""


@dataclass(frozen=True)
class Clicked:
    """A click that was counted, and (for a link of a delivery of its tenant) the delivery
    as it is now, for the delivery.clicked webhook."""

    click_id: int
    change: StatusChange | None


def record_click(payload: dict[str, Any]) -> Clicked | None:
    """Store the click, unless the same delivery was clicked within CLICK_WINDOW (None).
    The delivery row is locked meanwhile, so concurrent replays of one link make one
    click."""
    delivery_id = payload.get("d")
    now = utcnow()
    change: StatusChange | None = None
    with session_scope() as session:
        if delivery_id is not None:
            delivery = session.scalars(
                select(Delivery)
                .where(Delivery.id == delivery_id, Delivery.tenant_id == payload["t"])
                .with_for_update()
            ).first()
            recent = session.scalar(
                select(Click.id)
                .where(
                    Click.delivery_id == delivery_id,
                    Click.tenant_id == payload["t"],
                    Click.created_at > now - CLICK_WINDOW,
                )
                .limit(1)
            )
            if recent is not None:
                return None
            if delivery is not None:
                event_id = session.scalar(
                    select(Event.event_id).where(Event.id == delivery.event_pk)
                )
                change = StatusChange(
                    delivery_id=delivery.id,
                    tenant_id=delivery.tenant_id,
                    event_id=event_id or "",
                    recipient=delivery.recipient,
                    channel=delivery.channel,
                    status=delivery.status,
                    reason=None,
                    provider_message_id=delivery.provider_message_id,
                )
        click = Click(
            tenant_id=payload["t"],
            delivery_id=delivery_id,
            channel=str(payload.get("c") or "")[:16],
            event_type=str(payload.get("e") or "")[:100],
            url=payload["u"],
            created_at=now,
        )
        session.add(click)
        session.flush()
        clicked = Clicked(click.id, change)
    return clicked


@router.get(
    "/c/{token}",
    summary="Follow a tracked link",
    response_class=RedirectResponse,
    status_code=302,
    responses={302: {"description": "To the link's target"}, **LINK_ANSWERS},
)
def follow_link(token: str = TOKEN) -> Any:
    try:
        payload = click_target(token)
    except BadLink:
        return bad_link(token)
    counted = record_click(payload)
    if counted is not None and counted.change is not None:
        announce_feedback("delivery.clicked", [counted.change], f"_{counted.click_id}")
    log.info(
        "click" if counted else "click again within the window (not counted)",
        extra={
            "tenant": payload["t"],
            "delivery_id": payload.get("d"),
            "channel": payload.get("c"),
        },
    )
    return RedirectResponse(payload["u"], status_code=302)


def unsubscribe_target(token: str) -> tuple[str, str, str]:
    """(tenant, user, channel) of a verified unsubscribe token."""
    if malformed(token):
        raise BadLink("malformed token")
    try:
        payload = verify(token, "unsubscribe")
    except BadSignature as exc:
        raise BadLink(str(exc)) from exc
    tenant_id, user_id, channel = payload.get("t"), payload.get("u"), payload.get("c")
    if not (_short_text(tenant_id, 128) and _short_text(user_id, 128)):
        raise BadLink("incomplete token")
    if not isinstance(channel, str) or channel not in person_channels():
        raise BadLink("incomplete token")
    return tenant_id, user_id, channel


def tenant_name(tenant_id: str) -> str:
    with session_scope() as session:
        name = session.scalar(select(Tenant.name).where(Tenant.id == tenant_id))
    return name or tenant_id


def unsubscribe(tenant_id: str, user_id: str, channel: str) -> bool:
    """Opt the user out of the channel (preferences.channels[<key>] = false), and announce
    the change (`preferences.updated`). Idempotent; False when the user no longer exists."""
    key = preference_keys()[channel]
    change = None
    with session_scope() as session:
        user = session.scalars(
            select(User).where(User.tenant_id == tenant_id, User.id == user_id).with_for_update()
        ).first()
        if user is None:
            return False
        preferences = dict(user.preferences or {})
        channels = preferences.get("channels")
        channels = dict(channels) if isinstance(channels, dict) else {}
        if channels.get(key) is not False:
            before = user.preferences
            channels[key] = False
            preferences["channels"] = channels
            user.preferences = preferences  # a new dict: JSON columns track assignment only
            change = change_of(tenant_id, user_id, before, preferences, "unsubscribe")
    log.info("unsubscribed", extra={"tenant": tenant_id, "channel": channel})
    announce([change])
    return True


@router.get(
    "/u/{token}",
    summary="Unsubscribe confirmation page",
    response_class=HTMLResponse,
    responses=LINK_ANSWERS,
)
async def unsubscribe_page(token: str = TOKEN) -> HTMLResponse:
    try:
        tenant_id, _, channel = unsubscribe_target(token)
    except BadLink:
        return bad_link(token)
    name = await run_in_threadpool(tenant_name, tenant_id)
    return render_page(
        "unsubscribe.html.j2",
        {"token": token, "tenant": name, "channel": _label(channel), "done": False},
    )


@router.post(
    "/u/{token}",
    summary="One-click unsubscribe (RFC 8058)",
    response_class=HTMLResponse,
    responses=LINK_ANSWERS,
)
async def unsubscribe_now(token: str = TOKEN) -> HTMLResponse:
    # The signed token is the authorisation; requiring POST (not the body's
    # "List-Unsubscribe=One-Click", which clients send as urlencoded or multipart) is what
    # keeps link scanners, which only GET, from unsubscribing anyone.
    try:
        tenant_id, user_id, channel = unsubscribe_target(token)
    except BadLink:
        return bad_link(token)
    await run_in_threadpool(unsubscribe, tenant_id, user_id, channel)
    name = await run_in_threadpool(tenant_name, tenant_id)
    return render_page(
        "unsubscribe.html.j2",
        {"token": token, "tenant": name, "channel": _label(channel), "done": True},
    )


def _label(channel: str) -> str:
    """The channel as people read its name ("LINE", "SMS"), as the channel declares it."""
    return declaration(channel).display_name()

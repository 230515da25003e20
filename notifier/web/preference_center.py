"""The preference center: `GET /p/<token>` shows a person which channels and which topic
categories reach them, `POST /p/<token>` saves what they change. No login: the token in the
link (notifier.signing.preference_token) is signed, names its tenant and person, and
expires after NOTIFIER_PREFERENCE_LINK_DAYS. In the person's locale (zh-TW or en, else the
tenant's), with the tenant's name, colour and logo.

The form is CSRF-safe three ways: a POST must carry the form's CSRF field, an HMAC of the
link's token and a random nonce that the GET also put into a SameSite=Strict, HttpOnly
cookie scoped to /p/ (a double submit bound to the token); a POST whose Origin is another
site's (or "null") is refused; and the page cannot be framed (CSP frame-ancestors 'none').
Pages are autoescaped and load nothing (no script; inline styles; the logo is the only
image); Referrer-Policy same-origin keeps the link's token from the logo's host.

Saving answers 303 to the page again (`?saved=1`); every change is a `preferences.updated`
webhook with source `preference_center`.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
import secrets
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlsplit

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlalchemy import select

from config.settings import get_settings, require_secret_key
from notifier import preferences
from notifier.db import session_scope
from notifier.directory import as_person
from notifier.models import Tenant, User, WebPushSubscription
from notifier.preferences import CATEGORIES
from notifier.rendering import normalize_locale
from notifier.selection import preference_keys
from notifier.signing import BadSignature, epoch_day, is_web_url, verify_preference_token
from notifier.web.bodies import Problem, read_body
from notifier.web.links import TOKEN, malformed
from notifier.web.pages import render_page
from notifier.web.preferences_api import announce

log = logging.getLogger("notifier.web.preference_center")

router = APIRouter(tags=["links"])

COOKIE = "notifier_prefs"
FORM_LIMIT = 16 * 1024
CENTER_CSP = (
    "default-src 'none'; style-src 'unsafe-inline'; img-src https: http: data:; "
    "form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
)
HEADERS = {
    "Content-Security-Policy": CENTER_CSP,
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
    # The URL holds the token: never sent to another site (the logo's host), but the
    # page's own POST keeps its Origin (with no-referrer a browser sends "Origin: null").
    "Referrer-Policy": "same-origin",
}
LOCALES = ("en", "zh-TW")
COLOR = re.compile(r"^#(?:[0-9a-fA-F]{3}){1,2}$")
DEFAULT_COLOR = "#1DBF73"

STRINGS: dict[str, dict[str, str]] = {
    "en": {
        "title": "Notification settings",
        "intro": "Choose how {tenant} keeps you posted.",
        "channels": "Channels",
        "channels_hint": "Turn a channel off and nothing is sent on it.",
        "topics": "Topics",
        "topics_hint": "Which topics reach you on each channel.",
        "topic": "Topic",
        "save": "Save",
        "saved": "Saved. The next notification follows these settings.",
        "critical": "Urgent security and service messages may still reach you on your channels.",
        "no_channels": "{tenant} has no way to reach you yet.",
        "bad_link": "This link is not valid",
        "bad_link_text": "It may have been copied incompletely or changed. Please use the "
        "link from the original message.",
        "expired": "This link has expired",
        "expired_text": "Please use the link in a more recent message.",
        "forbidden": "The form has expired",
        "forbidden_text": "Open the page again from the link and save once more.",
        "gone": "There are no settings for you here any more.",
    },
    "zh-TW": {
        "title": "通知設定",
        "intro": "選擇 {tenant} 通知您的方式。",
        "channels": "通知管道",
        "channels_hint": "關閉某個管道後，將不再透過它傳送任何通知。",
        "topics": "通知主題",
        "topics_hint": "每個管道要收到哪些主題的通知。",
        "topic": "主題",
        "save": "儲存",
        "saved": "已儲存。之後的通知將依照這些設定傳送。",
        "critical": "緊急的安全與服務通知仍可能透過您的管道送達。",
        "no_channels": "{tenant} 目前還沒有可以聯絡您的方式。",
        "bad_link": "此連結無效",
        "bad_link_text": "連結可能不完整或已被修改，請使用原始訊息中的連結。",
        "expired": "此連結已過期",
        "expired_text": "請使用較新訊息中的連結。",
        "forbidden": "表單已過期",
        "forbidden_text": "請從連結重新開啟此頁面後再儲存一次。",
        "gone": "這裡已經沒有您的通知設定。",
    },
}
CHANNEL_NAMES = {
    "en": {"line": "LINE", "email": "Email", "sms": "SMS", "webPush": "Push", "slack": "Slack"},
    "zh-TW": {
        "line": "LINE",
        "email": "電子郵件",
        "sms": "簡訊",
        "webPush": "推播",
        "slack": "Slack",
    },
}
CATEGORY_NAMES = {
    "en": {
        "FileProcessing": ("Files", "uploads, processing, virus alerts"),
        "MemberActivity": ("Membership", "registration, check-ins, membership expiry"),
        "CourseManagement": ("Classes", "bookings, reminders, cancellations"),
        "PaymentUpdates": ("Payments", "payments, failed payments, invoices"),
        "SystemAlerts": ("Service notices", "maintenance and system notices"),
    },
    "zh-TW": {
        "FileProcessing": ("檔案", "上傳、處理結果、病毒警示"),
        "MemberActivity": ("會員", "註冊、簽到、會籍到期"),
        "CourseManagement": ("課程", "預約、上課提醒、課程取消"),
        "PaymentUpdates": ("付款", "付款成功、付款失敗、帳單"),
        "SystemAlerts": ("服務公告", "系統維護與公告"),
    },
}


class BadLink(ValueError):
    def __init__(self, kind: str):
        super().__init__(kind)
        self.kind = kind


def target(token: str, today: int | None = None) -> tuple[str, str]:
    """(tenant, user) of a valid, unexpired token; BadLink("malformed" | "bad" | "expired")
    otherwise (not shaped like a token; shaped like one but not ours; ours, expired)."""
    if malformed(token):
        raise BadLink("malformed")
    try:
        tenant_id, user_id, expires = verify_preference_token(token)
    except BadSignature as exc:
        raise BadLink("bad") from exc
    if expires < (epoch_day() if today is None else today):
        raise BadLink("expired")
    return tenant_id, user_id


@dataclass(frozen=True)
class View:
    """What the page shows of one person."""

    tenant_name: str
    branding: dict[str, Any]
    locale: str
    channels: list[str]
    """The preference keys of the channels the person can be reached on."""
    preferences: dict[str, Any]
    critical_ignores_opt_outs: bool


def _locale(*candidates: str | None) -> str:
    for candidate in candidates:
        locale = normalize_locale(candidate)
        if locale in LOCALES:
            return locale
        if locale and locale.split("-")[0] == "en":
            return "en"
    return "en"


def load(tenant_id: str, user_id: str) -> View | None:
    """The person's page, or None when they are not (any more) in the tenant."""
    with session_scope() as session:
        found = session.execute(
            select(User, Tenant)
            .join(Tenant, Tenant.id == User.tenant_id)
            .where(User.tenant_id == tenant_id, User.id == user_id)
        ).first()
        if found is None:
            return None
        user, tenant = found
        has_push = session.scalar(
            select(WebPushSubscription.id)
            .where(
                WebPushSubscription.tenant_id == tenant_id,
                WebPushSubscription.user_id == user_id,
            )
            .limit(1)
        )
        reachable = as_person(user, tenant, has_push is not None).addresses
        return View(
            tenant_name=tenant.name or tenant.id,
            branding=dict(tenant.branding or {}),
            locale=_locale(user.locale, tenant.locale),
            channels=[key for c, key in preference_keys().items() if c in reachable],
            preferences=preferences.clean(user.preferences),
            critical_ignores_opt_outs=preferences.critical_ignores_opt_outs(tenant),
        )


def save(tenant_id: str, user_id: str, form: dict[str, list[str]]) -> bool:
    """Apply the submitted form to the person's preferences: every channel shown is on
    when its box is ticked, off when not; the same per category. What the page does not
    show (other channels, event types, schedule, priority lists) is kept. False when the
    person is not (any more) in the tenant."""
    view = load(tenant_id, user_id)
    if view is None:
        return False
    ticked = {name for name, values in form.items() if "on" in values}
    current = view.preferences
    channels = dict(current.get("channels") or {})
    categories = {k: dict(v) for k, v in (current.get("categories") or {}).items()}
    for key in view.channels:
        if f"all.{key}" in ticked:
            if key in channels:
                channels[key] = True
        else:
            channels[key] = False
        for category in CATEGORIES:
            switches = categories.setdefault(category, {})
            if f"cat.{category}.{key}" in ticked:
                switches.pop(key, None)
            else:
                switches[key] = False
    updated = {k: v for k, v in current.items() if k not in ("channels", "categories")}
    if channels:
        updated["channels"] = channels
    kept = {k: v for k, v in categories.items() if v}
    if kept:
        updated["categories"] = kept
    done = preferences.replace(tenant_id, user_id, updated, "preference_center")
    if done is None:
        return False
    announce([done[1]])
    return True


def csrf_value(token: str, nonce: str) -> str:
    """The form's CSRF field: bound to the link's token and the cookie's nonce."""
    key = f"{require_secret_key()}:preferences-csrf".encode()
    return hmac.new(key, f"{token}.{nonce}".encode(), hashlib.sha256).hexdigest()


def _same_origin(request: Request) -> bool:
    """A POST's Origin (when the browser sends one) is this site's, or the public base
    URL's: never another site's, nor "null"."""
    origin = request.headers.get("origin")
    if origin is None:
        return True
    allowed = {f"{request.url.scheme}://{request.headers.get('host', '')}".lower()}
    public = urlsplit(get_settings().public_base_url)
    allowed.add(f"{public.scheme}://{public.netloc}".lower())
    return origin.lower() in allowed


def _brand(view: View) -> dict[str, str]:
    color = view.branding.get("color")
    logo = view.branding.get("logo_url") or view.branding.get("logoUrl")
    return {
        "name": str(view.branding.get("name") or view.tenant_name),
        "color": color if isinstance(color, str) and COLOR.match(color) else DEFAULT_COLOR,
        "logo": logo if isinstance(logo, str) and len(logo) <= 2048 and is_web_url(logo) else "",
    }


def _message(kind: str, status: int) -> HTMLResponse:
    """A page about the link itself, in both languages (whose link it is is not known)."""
    texts = []
    for locale in LOCALES:
        words = STRINGS[locale]
        title, text = {
            "bad": (words["bad_link"], words["bad_link_text"]),
            "malformed": (words["bad_link"], words["bad_link_text"]),
            "expired": (words["expired"], words["expired_text"]),
            "forbidden": (words["forbidden"], words["forbidden_text"]),
            "gone": (words["bad_link"], words["gone"]),
        }[kind]
        texts.append({"lang": locale, "title": title, "text": text})
    return render_page(
        "preferences_message.html.j2", {"texts": texts}, status_code=status, headers=HEADERS
    )


LINK_ERRORS = {"malformed": 400, "bad": 404, "expired": 410}
"""As for /c/ and /u/ links: 400 not shaped like a token, 404 not a link we signed."""
HTML = {"text/html": {"schema": {"type": "string"}}}
PAGE_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: {"description": "Not shaped like a token (the invalid-link page)", "content": HTML},
    404: {
        "description": "Not a link we signed, or the person is no longer in the directory",
        "content": HTML,
    },
    410: {"description": "The link has expired", "content": HTML},
    503: {"model": Problem, "description": "The database is unavailable"},
}
FORM_BODY: dict[str, Any] = {
    "required": False,
    "content": {
        "application/x-www-form-urlencoded": {
            "schema": {
                "type": "object",
                "properties": {
                    "csrf": {"type": "string", "description": "The form's CSRF field"},
                },
                "additionalProperties": {
                    "type": "string",
                    "description": "`all.<channel>` and `cat.<category>.<channel>`: `on` "
                    "when ticked (a box left unticked is not sent)",
                },
            }
        }
    },
}


@router.get(
    "/p/{token}",
    summary="The preference center: a person's channels and topics",
    response_class=HTMLResponse,
    responses=PAGE_RESPONSES,
)
async def center_page(request: Request, token: str = TOKEN) -> Response:
    try:
        tenant_id, user_id = target(token)
    except BadLink as exc:
        return _message(exc.kind, LINK_ERRORS[exc.kind])
    view = await run_in_threadpool(load, tenant_id, user_id)
    if view is None:
        return _message("gone", 404)
    nonce = secrets.token_urlsafe(24)
    words = STRINGS[view.locale]
    brand = _brand(view)
    prefs = view.preferences
    channels_on = {
        key: (prefs.get("channels") or {}).get(key) is not False for key in view.channels
    }
    rows = []
    for category in CATEGORIES:
        switches = (prefs.get("categories") or {}).get(category) or {}
        name, hint = CATEGORY_NAMES[view.locale][category]
        rows.append(
            {
                "id": category,
                "name": name,
                "hint": hint,
                "on": {key: switches.get(key) is not False for key in view.channels},
            }
        )
    response = render_page(
        "preferences.html.j2",
        {
            "lang": view.locale,
            "words": words,
            "intro": words["intro"].format(tenant=brand["name"]),
            "no_channels": words["no_channels"].format(tenant=brand["name"]),
            "brand": brand,
            "token": token,
            "csrf": csrf_value(token, nonce),
            "channels": [
                {"key": k, "name": CHANNEL_NAMES[view.locale][k], "on": channels_on[k]}
                for k in view.channels
            ],
            "rows": rows,
            "saved": request.query_params.get("saved") == "1",
            "critical_note": view.critical_ignores_opt_outs,
        },
        headers=HEADERS,
    )
    response.set_cookie(
        COOKIE,
        nonce,
        max_age=3600,
        path="/p/",
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )
    return response


@router.post(
    "/p/{token}",
    summary="Save the preference center's form",
    status_code=303,
    response_class=Response,
    responses={
        303: {"description": "Saved: back to the page (`?saved=1`)"},
        **PAGE_RESPONSES,
        403: {"description": "The form's CSRF field or Origin is refused", "content": HTML},
        413: {"model": Problem, "description": "The form is too large"},
    },
    openapi_extra={"requestBody": FORM_BODY},
)
async def center_save(request: Request, token: str = TOKEN) -> Response:
    try:
        tenant_id, user_id = target(token)
    except BadLink as exc:
        return _message(exc.kind, LINK_ERRORS[exc.kind])
    raw = await read_body(request, FORM_LIMIT)
    try:
        form = parse_qs(raw.decode("utf-8"), keep_blank_values=True, max_num_fields=200)
    except (UnicodeDecodeError, ValueError):
        return _message("bad", 400)
    nonce = request.cookies.get(COOKIE, "")
    given = (form.get("csrf") or [""])[0]
    valid = bool(nonce) and hmac.compare_digest(given.encode(), csrf_value(token, nonce).encode())
    if not valid or not _same_origin(request):
        log.warning("preference form refused", extra={"tenant": tenant_id})
        return _message("forbidden", 403)
    if not await run_in_threadpool(save, tenant_id, user_id, form):
        return _message("gone", 404)
    return RedirectResponse(f"/p/{token}?saved=1", status_code=303)

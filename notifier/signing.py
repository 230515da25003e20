"""Signed tokens for links in messages (one-click unsubscribe, click tracking, the
preference center).

A token is base64url(JSON) + "." + base64url(HMAC-SHA256(secret, JSON)); tampering with
either part makes `verify` fail. The secret is NOTIFIER_SECRET_KEY: nothing is signed or
verified without a real one.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from config.settings import get_settings, require_secret_key

MAX_TOKEN_CHARS = 4096
"""Far above any token we make (a click token carries one URL of at most 2,048 characters)."""


class BadSignature(ValueError):
    pass


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _mac(body: bytes, purpose: str) -> bytes:
    key = f"{require_secret_key()}:{purpose}".encode()
    return hmac.new(key, body, hashlib.sha256).digest()


def sign(payload: dict[str, Any], purpose: str) -> str:
    body = json.dumps(payload, separators=(",", ":"), sort_keys=True).encode()
    return f"{_b64(body)}.{_b64(_mac(body, purpose))}"


def verify(token: str, purpose: str) -> dict[str, Any]:
    """The token's payload; BadSignature (and nothing else) for anything but a token we
    signed for `purpose`."""
    if len(token) > MAX_TOKEN_CHARS:
        raise BadSignature("oversized token")
    try:
        body_part, mac_part = token.split(".", 1)
        body = _unb64(body_part)
        given = _unb64(mac_part)
    except (ValueError, TypeError) as exc:  # binascii.Error is a ValueError
        raise BadSignature("malformed token") from exc
    if not hmac.compare_digest(given, _mac(body, purpose)):
        raise BadSignature("bad signature")
    try:
        payload = json.loads(body)
    except (ValueError, RecursionError) as exc:  # only reachable with the secret key
        raise BadSignature("bad payload") from exc
    if not isinstance(payload, dict):
        raise BadSignature("bad payload")
    return payload


def unsubscribe_url(tenant_id: str, user_id: str, channel: str) -> str:
    token = sign({"t": tenant_id, "u": user_id, "c": channel}, "unsubscribe")
    return f"{get_settings().public_base_url}/u/{token}"


PREFERENCES = "preferences"
SHORT_MAC_BYTES = 16
"""The preference center token's HMAC-SHA256, cut to 128 bits: the link goes into SMS and
LINE texts, where every character counts."""


def preference_token(tenant_id: str, user_id: str, expires_day: int) -> str:
    """A compact signed token: base64url(JSON [tenant, user, expiry day]) + "." +
    base64url(128-bit HMAC). `expires_day` counts days since 1970-01-01 (UTC): the token
    is valid through that day."""
    body = json.dumps([tenant_id, user_id, expires_day], separators=(",", ":")).encode()
    return f"{_b64(body)}.{_b64(_mac(body, PREFERENCES)[:SHORT_MAC_BYTES])}"


def verify_preference_token(token: str) -> tuple[str, str, int]:
    """(tenant, user, expiry day) of a preference token we signed; BadSignature otherwise
    (expiry is the caller's to check)."""
    if len(token) > 1024:
        raise BadSignature("oversized token")
    try:
        body_part, mac_part = token.split(".", 1)
        body = _unb64(body_part)
        given = _unb64(mac_part)
    except (ValueError, TypeError) as exc:
        raise BadSignature("malformed token") from exc
    expected = _mac(body, PREFERENCES)[:SHORT_MAC_BYTES]
    if len(given) != SHORT_MAC_BYTES or not hmac.compare_digest(given, expected):
        raise BadSignature("bad signature")
    try:
        values = json.loads(body)
    except (ValueError, RecursionError) as exc:  # only reachable with the secret key
        raise BadSignature("bad payload") from exc
    if not (
        isinstance(values, list)
        and len(values) == 3
        and all(isinstance(v, str) and 0 < len(v) <= 128 for v in values[:2])
        and type(values[2]) is int
    ):
        raise BadSignature("bad payload")
    return values[0], values[1], values[2]


def preference_url(tenant_id: str, user_id: str, today: int | None = None) -> str:
    """The person's signed, expiring preference center link (GET /p/<token>), valid for
    NOTIFIER_PREFERENCE_LINK_DAYS."""
    settings = get_settings()
    day = epoch_day() if today is None else today
    token = preference_token(tenant_id, user_id, day + settings.preference_link_days)
    return f"{settings.public_base_url}/p/{token}"


def epoch_day(moment: float | None = None) -> int:
    """Today (or `moment`, a Unix time) as days since 1970-01-01, UTC."""
    return int((time.time() if moment is None else moment) // 86400)


def is_web_url(url: str) -> bool:
    """An absolute http(s) URL without control characters: the only links we redirect to."""
    if any(ord(ch) < 0x21 or ord(ch) == 0x7F for ch in url):
        return False
    try:
        parts = urlsplit(url)
        return parts.scheme in ("http", "https") and bool(parts.hostname)
    except ValueError:  # e.g. a malformed IPv6 host
        return False


def tracked_url(url: str, delivery_id: int, tenant_id: str, channel: str, event_type: str) -> str:
    """A signed link to GET /c/<token>, which records the click and redirects to `url`.

    The target lives only inside the signed token, so the endpoint cannot be turned into
    an open redirect."""
    if not is_web_url(url):
        raise ValueError("only absolute http(s) links can be tracked")
    token = sign(
        {"u": url, "d": delivery_id, "t": tenant_id, "c": channel, "e": event_type}, "click"
    )
    return f"{get_settings().public_base_url}/c/{token}"


def link_tracker(
    *, delivery_id: int, tenant_id: str, channel: str, event_type: str
) -> Callable[[str], str]:
    """What the templates' track() applies to each link they print: an absolute http(s)
    link becomes a signed /c/ link; links to this deployment itself (unsubscribe, tracked
    already) and anything else are returned as they are (the same object)."""
    own = get_settings().public_base_url

    def track(url: str) -> str:
        if url.startswith(own) or not is_web_url(url):
            return url
        return tracked_url(url, delivery_id, tenant_id, channel, event_type)

    return track

"""Signed tokens for links in messages (one-click unsubscribe, click tracking).

A token is base64url(JSON) + "." + base64url(HMAC-SHA256(secret, JSON)); tampering with
either part makes `verify` fail.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from typing import Any

from config.settings import get_settings


class BadSignature(ValueError):
    pass


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _mac(body: bytes, purpose: str) -> bytes:
    key = f"{get_settings().secret_key}:{purpose}".encode()
    return hmac.new(key, body, hashlib.sha256).digest()


def sign(payload: dict[str, Any], purpose: str) -> str:
    body = json.dumps(payload, separators=(",", ":"), sort_keys=True).encode()
    return f"{_b64(body)}.{_b64(_mac(body, purpose))}"


def verify(token: str, purpose: str) -> dict[str, Any]:
    try:
        body_part, mac_part = token.split(".", 1)
        body = _unb64(body_part)
        given = _unb64(mac_part)
    except (ValueError, TypeError) as exc:
        raise BadSignature("malformed token") from exc
    if not hmac.compare_digest(given, _mac(body, purpose)):
        raise BadSignature("bad signature")
    payload = json.loads(body)
    if not isinstance(payload, dict):
        raise BadSignature("bad payload")
    return payload


def unsubscribe_url(tenant_id: str, user_id: str, channel: str) -> str:
    token = sign({"t": tenant_id, "u": user_id, "c": channel}, "unsubscribe")
    return f"{get_settings().public_base_url}/u/{token}"

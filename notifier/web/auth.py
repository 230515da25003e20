"""Tenant API keys for POST /events.

A key reads `nk.<base64url(tenant id)>.<random secret>`. The tenant part lets the app load
one tenant by primary key; sha256(key) is then compared with the stored hash in constant
time. Only the hash is stored, so a copy of the database reveals no usable key.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets

from sqlalchemy import select

from notifier.db import session_scope
from notifier.models import Tenant

KEY_PREFIX = "nk"


class UnknownTenant(LookupError):
    pass


def hash_api_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def _encode_tenant(tenant_id: str) -> str:
    return base64.urlsafe_b64encode(tenant_id.encode()).rstrip(b"=").decode()


def _decode_tenant(part: str) -> str | None:
    try:
        return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)).decode()
    except (binascii.Error, ValueError):
        return None


def issue_api_key(tenant_id: str) -> str:
    """Create a new key for the tenant (replacing any previous one) and return it; it is
    not stored and cannot be shown again."""
    key = f"{KEY_PREFIX}.{_encode_tenant(tenant_id)}.{secrets.token_urlsafe(32)}"
    with session_scope() as session:
        tenant = session.get(Tenant, tenant_id)
        if tenant is None:
            raise UnknownTenant(f"unknown tenant {tenant_id!r}")
        tenant.api_key_hash = hash_api_key(key)
    return key


def tenant_for_key(key: str) -> str | None:
    """The tenant this key belongs to, or None for a malformed, unknown or revoked key."""
    prefix, _, rest = key.partition(".")
    encoded, _, secret = rest.partition(".")
    if prefix != KEY_PREFIX or not encoded or not secret:
        return None
    tenant_id = _decode_tenant(encoded)
    if not tenant_id or "\x00" in tenant_id:  # PostgreSQL refuses NUL in a query string
        return None
    with session_scope() as session:
        stored = session.scalar(select(Tenant.api_key_hash).where(Tenant.id == tenant_id))
    if not stored or not hmac.compare_digest(stored, hash_api_key(key)):
        return None
    return tenant_id


def key_from_headers(authorization: str | None, x_api_key: str | None) -> str | None:
    """The key from `Authorization: Bearer <key>` or `X-API-Key: <key>`."""
    if authorization:
        scheme, _, credentials = authorization.partition(" ")
        if scheme.lower() == "bearer" and credentials.strip():
            return credentials.strip()
    if x_api_key and x_api_key.strip():
        return x_api_key.strip()
    return None

"""Console operators (`notifier operator add NAME`): keys, logins, sessions and lockout.

An operator's key reads `nko_<random secret>` and is shown once; only sha256(key) is stored,
so a copy of the database reveals no usable key. An operator sees every tenant, or only the
tenants listed when the key was made. A login makes a session: the cookie carries a random
token, the database its hash and the session's CSRF token. Repeated bad keys from one client
lock that client out of the login for a while (counted in Redis, shared by every web process).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import secrets
from dataclasses import dataclass

from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError

from config.settings import get_settings
from notifier import ratelimit
from notifier.db import session_scope
from notifier.models import Operator, OperatorSession, Tenant, utcnow

KEY_PREFIX = "nko_"
SESSION_LIFETIME = dt.timedelta(hours=12)
MAX_FAILED_LOGINS = 5
"""Bad keys from one client within LOCKOUT_WINDOW before its logins are refused."""
LOCKOUT_WINDOW = dt.timedelta(minutes=15)


class OperatorProblem(ValueError):
    """An operator cannot be made as asked (a taken name, an unknown tenant)."""


@dataclass(frozen=True)
class OperatorScope:
    """Who is logged in and what they may see: `tenant_ids` None means every tenant."""

    id: int
    name: str
    tenant_ids: tuple[str, ...] | None
    csrf_token: str

    def may_see(self, tenant_id: str) -> bool:
        return self.tenant_ids is None or tenant_id in self.tenant_ids


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def add_operator(name: str, tenant_ids: list[str] | None = None) -> str:
    """Create an operator for every tenant (`tenant_ids` None or empty) or for those tenants;
    returns the key, which is not stored and cannot be shown again."""
    name = name.strip()
    if not name or len(name) > 200 or "\x00" in name:
        raise OperatorProblem("an operator's name is 1 to 200 characters")
    tenants = sorted(set(tenant_ids or ())) or None
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    try:
        with session_scope() as session:
            if tenants:
                known = set(session.scalars(select(Tenant.id).where(Tenant.id.in_(tenants))))
                unknown = [t for t in tenants if t not in known]
                if unknown:
                    raise OperatorProblem(f"unknown tenant(s): {', '.join(unknown)}")
            session.add(Operator(name=name, key_hash=_hash(key), tenant_ids=tenants))
    except IntegrityError as exc:
        raise OperatorProblem(f"an operator named {name!r} exists already") from exc
    return key


def _lockout_key(client: str) -> str:
    return f"notifier:{get_settings().queue_prefix}console-login-failures:{client}"


def locked_out(client: str) -> bool:
    """Whether this client has had too many bad keys lately."""
    failures = ratelimit.redis_client().get(_lockout_key(client))
    return failures is not None and int(failures) >= MAX_FAILED_LOGINS


def _count_failure(client: str) -> None:
    redis = ratelimit.redis_client()
    key = _lockout_key(client)
    if redis.incr(key) == 1 or redis.ttl(key) < 0:
        redis.expire(key, int(LOCKOUT_WINDOW.total_seconds()))


def log_in(key: str, client: str, now: dt.datetime | None = None) -> str | None:
    """A new session's token for a good key, None for a bad one (counted against the
    client). The caller checks `locked_out` first."""
    now = now or utcnow()
    key = key.strip()
    operator_id = None
    if key.startswith(KEY_PREFIX) and "\x00" not in key and len(key) <= 200:
        with session_scope() as session:
            found = session.execute(
                select(Operator.id, Operator.key_hash).where(Operator.key_hash == _hash(key))
            ).first()
        if found is not None and hmac.compare_digest(found.key_hash, _hash(key)):
            operator_id = found.id
    if operator_id is None:
        _count_failure(client)
        return None
    ratelimit.redis_client().delete(_lockout_key(client))
    token = secrets.token_urlsafe(32)
    with session_scope() as session:
        session.execute(delete(OperatorSession).where(OperatorSession.expires_at <= now))
        session.add(
            OperatorSession(
                token_hash=_hash(token),
                operator_id=operator_id,
                csrf_token=secrets.token_urlsafe(32),
                created_at=now,
                expires_at=now + SESSION_LIFETIME,
            )
        )
    return token


def operator_for_session(token: str, now: dt.datetime | None = None) -> OperatorScope | None:
    """The logged-in operator of a session token, None when the session is unknown or over."""
    if not token or len(token) > 200:
        return None
    now = now or utcnow()
    with session_scope() as session:
        row = session.execute(
            select(Operator, OperatorSession.csrf_token)
            .join(OperatorSession, OperatorSession.operator_id == Operator.id)
            .where(OperatorSession.token_hash == _hash(token), OperatorSession.expires_at > now)
        ).first()
        if row is None:
            return None
        operator, csrf = row
        tenants = tuple(operator.tenant_ids) if operator.tenant_ids else None
        return OperatorScope(operator.id, operator.name, tenants, csrf)


def log_out(token: str) -> None:
    with session_scope() as session:
        session.execute(delete(OperatorSession).where(OperatorSession.token_hash == _hash(token)))

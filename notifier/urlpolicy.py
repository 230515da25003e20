"""The outbound URL policy for URLs a tenant or a person supplies (Slack webhooks, Web Push
endpoints, outbound webhook endpoints).

A URL must be https; a Slack webhook must be on one of `slack_webhook_hosts` and a push
endpoint on one of `push_service_hosts`; a literal IP must be public. `check_url` applies
that to the URL as written (at import and before a send). `guarded_session` then checks the
address each connection actually reaches, after DNS and just before any byte is sent, so a
name that resolves to a private address, or is rebound to one between the check and the
send, is refused too. NOTIFIER_ALLOW_PRIVATE_URLS=1 lifts it all (tests, development).

What such a host answers is the tenant's to read, not ours to store: `sanitized_reason`
keeps a short token of it.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import re
from typing import Any, Literal
from urllib.parse import urlsplit

import requests
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

from config.settings import get_settings

Purpose = Literal["slack", "web_push", "webhook"]

# urllib3 logs every request's path at DEBUG: for webhooks and push endpoints the path is
# the secret. Its INFO and above say nothing of paths.
logging.getLogger("urllib3.connectionpool").setLevel(logging.INFO)

_WHAT = {"slack": "Slack webhook", "web_push": "push endpoint", "webhook": "webhook endpoint"}


class BlockedURL(ValueError):
    """A URL the policy refuses; the message says why without echoing the URL."""


def is_public_address(address: str) -> bool:
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast


def _host_matches(host: str, patterns: tuple[str, ...]) -> bool:
    for pattern in patterns:
        if pattern.startswith("*."):
            if host.endswith(pattern[1:]) and len(host) > len(pattern) - 1:
                return True
        elif host == pattern:
            return True
    return False


def _allowed_hosts(purpose: Purpose) -> tuple[str, ...] | None:
    settings = get_settings()
    if purpose == "slack":
        return settings.slack_webhook_hosts
    if purpose == "web_push":
        return settings.push_service_hosts
    return None  # outbound webhooks: any public host


def check_url(url: str, purpose: Purpose) -> None:
    """Refuse (BlockedURL) a URL the policy does not allow, as written."""
    what = _WHAT[purpose]
    if not isinstance(url, str) or len(url) > 2048 or any(ord(c) < 0x21 for c in url):
        raise BlockedURL(f"the {what} is not a valid URL")
    try:
        parts = urlsplit(url)
        host = (parts.hostname or "").lower()
        parts.port  # noqa: B018 (raises ValueError on a bad port)
    except ValueError:
        raise BlockedURL(f"the {what} is not a valid URL") from None
    if get_settings().allow_private_urls:
        if parts.scheme not in ("http", "https") or not host:
            raise BlockedURL(f"the {what} is not an http(s) URL")
        return
    if parts.scheme != "https" or not host:
        raise BlockedURL(f"the {what} must be an https URL")
    if parts.username is not None or parts.password is not None:
        raise BlockedURL(f"the {what} must not carry credentials")
    literal = host.strip("[]")
    # Only a name of digits and dots (IPv4) or with a colon (IPv6) can be an address: the
    # others skip ip_address, whose two failed parses cost more than the rest of the check.
    if ":" in literal or literal.replace(".", "").isdigit():
        try:
            ipaddress.ip_address(literal)
        except ValueError:
            pass
        else:
            if not is_public_address(literal):
                raise BlockedURL(f"the {what} points at a non-public address")
    allowed = _allowed_hosts(purpose)
    if allowed is not None and not _host_matches(host, allowed):
        raise BlockedURL(f"the {what}'s host is not an allowed {what} host")


def _public_peer(sock: Any) -> Any:
    """The freshly connected socket, if it reached a public address; else closed and
    refused. Runs before TLS and before any request byte."""
    try:
        peer = sock.getpeername()[0]
    except OSError:
        peer = ""
    if not is_public_address(peer):
        sock.close()
        raise BlockedURL("the URL resolves to a non-public address")
    return sock


class _GuardedHTTPSConnection(HTTPSConnection):
    def _new_conn(self) -> Any:
        return _public_peer(super()._new_conn())


class _GuardedHTTPConnection(HTTPConnection):
    def _new_conn(self) -> Any:
        return _public_peer(super()._new_conn())


class _GuardedHTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _GuardedHTTPSConnection


class _GuardedHTTPPool(HTTPConnectionPool):
    ConnectionCls = _GuardedHTTPConnection


class _GuardedAdapter(HTTPAdapter):
    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = {
            "http": _GuardedHTTPPool,
            "https": _GuardedHTTPSPool,
        }


def guarded_session() -> requests.Session:
    """A requests session for tenant-supplied URLs: no proxies from the environment (they
    would hide the real peer), and every connection refused unless it reaches a public
    address (unless NOTIFIER_ALLOW_PRIVATE_URLS=1). Send with allow_redirects=False."""
    session = requests.Session()
    session.trust_env = False
    if not get_settings().allow_private_urls:
        adapter = _GuardedAdapter()
        session.mount("https://", adapter)
        session.mount("http://", adapter)
    return session


_REASON_TOKEN = re.compile(r"[A-Za-z0-9_.:-]{1,64}")


def sanitized_reason(status: int, body: str | bytes | None) -> str:
    """`HTTP <status>`, plus the answer's error code when it is one short token (Slack's
    `invalid_payload`, a JSON body's "error"/"reason"/"code"): never free text of the host."""
    text = body.decode("utf-8", "replace") if isinstance(body, bytes) else (body or "")
    text = text.strip()
    candidate: Any = text
    if text.startswith("{"):
        try:
            parsed = json.loads(text[:4096])
        except ValueError:
            parsed = None
        candidate = next(
            (
                parsed[k]
                for k in ("error", "reason", "code")
                if isinstance(parsed, dict) and k in parsed
            ),
            "",
        )
    if isinstance(candidate, str) and _REASON_TOKEN.fullmatch(candidate):
        return f"HTTP {status} {candidate}"
    return f"HTTP {status}"

"""Signed outbound webhooks: a tenant registers endpoints, and every status change of its
deliveries is POSTed there, signed per the Standard Webhooks specification (`webhook-id`,
`webhook-timestamp`, `webhook-signature: v1,<base64 HMAC-SHA256 of "id.timestamp.body">`,
keyed by the endpoint's `whsec_` secret).

The messages go out from a Celery task (`notifier.send_webhook`, in tasks/webhooks.py) after
the status is committed, so a slow or failing receiver never holds a delivery up. A message
keeps its `webhook-id` across retries: delivery is at least once, and the receiver drops a
repeated id. URLs follow the outbound URL policy at registration and at each send.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import json
import secrets
import time
from collections.abc import Sequence
from typing import Any, Literal, get_args

import requests
from sqlalchemy import delete, select

from notifier.db import session_scope
from notifier.events import InvalidEvent
from notifier.models import DeadLetter, WebhookEndpoint
from notifier.status_hooks import StatusChange
from notifier.urlpolicy import BlockedURL, check_url, guarded_session, sanitized_reason

MessageType = Literal[
    "delivery.sent",
    "delivery.failed",
    "delivery.bounced",
    "delivery.complained",
    "delivery.clicked",
    "delivery.suppressed",
    "preferences.updated",
]
MESSAGE_TYPES: tuple[str, ...] = get_args(MessageType)
STATUS_TYPES = {
    "sent": "delivery.sent",
    "failed": "delivery.failed",
    "suppressed": "delivery.suppressed",
}
"""The message type of a delivery's new status; other statuses (queued, deferred...) are
steps on the way and send nothing. delivery.bounced, delivery.complained and
delivery.clicked tell of what happened to a message after it was sent (`feedback_messages`:
the SES feedback route, the click route)."""
TIMEOUT_S = 10.0
MAX_ENDPOINTS = 20
"""Per tenant."""


class WebhookRetry(Exception):
    """The receiver did not take the message now (timeout, 429, 5xx): try again later."""

    def __init__(self, reason: str, retry_after: float | None = None):
        super().__init__(reason)
        self.reason = reason
        self.retry_after = retry_after


class WebhookRefused(Exception):
    """The receiver refused the message for good (another 4xx), or its URL is refused."""


def new_secret() -> str:
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


def _public(endpoint: WebhookEndpoint) -> dict[str, Any]:
    return {
        "id": endpoint.id,
        "url": endpoint.url,
        "eventTypes": endpoint.event_types,
        "createdAt": endpoint.created_at.isoformat(),
    }


def create_endpoint(tenant_id: str, url: str, event_types: Sequence[str] | None) -> dict[str, Any]:
    """Register an endpoint; the answer carries its secret, which is not shown again."""
    try:
        check_url(url, "webhook")
    except BlockedURL as exc:
        raise InvalidEvent([{"field": "url", "message": str(exc)}]) from None
    with session_scope() as session:
        held = session.scalars(
            select(WebhookEndpoint.id).where(WebhookEndpoint.tenant_id == tenant_id)
        ).all()
        if len(held) >= MAX_ENDPOINTS:
            message = f"a tenant has at most {MAX_ENDPOINTS} webhook endpoints"
            raise InvalidEvent([{"field": "url", "message": message}], "conflict")
        endpoint = WebhookEndpoint(
            id="we_" + secrets.token_hex(12),
            tenant_id=tenant_id,
            url=url,
            event_types=sorted(set(event_types)) if event_types is not None else None,
            secret=new_secret(),
            created_at=dt.datetime.now(dt.UTC),
        )
        session.add(endpoint)
        return {**_public(endpoint), "secret": endpoint.secret}


def list_endpoints(tenant_id: str) -> list[dict[str, Any]]:
    with session_scope() as session:
        rows = session.scalars(
            select(WebhookEndpoint)
            .where(WebhookEndpoint.tenant_id == tenant_id)
            .order_by(WebhookEndpoint.created_at, WebhookEndpoint.id)
        )
        return [_public(row) for row in rows]


def delete_endpoint(tenant_id: str, endpoint_id: str) -> bool:
    with session_scope() as session:
        result = session.execute(
            delete(WebhookEndpoint).where(
                WebhookEndpoint.tenant_id == tenant_id, WebhookEndpoint.id == endpoint_id
            )
        )
        return bool(getattr(result, "rowcount", 0))


def messages_for(changes: Sequence[StatusChange]) -> list[tuple[str, dict[str, Any]]]:
    """(endpoint id, message) for every endpoint of the changes' tenants that takes the
    change's type. The message id is the same for the same change: a receiver can drop
    a message it already had."""
    return _messages(
        [
            (STATUS_TYPES[c.status], c, f"msg_{c.delivery_id}_{c.status}")
            for c in changes
            if c.status in STATUS_TYPES
        ]
    )


def feedback_messages(
    kind: MessageType, changes: Sequence[StatusChange], key: str = ""
) -> list[tuple[str, dict[str, Any]]]:
    """The messages of what happened to delivered messages (delivery.bounced,
    delivery.complained, delivery.clicked): each change carries the delivery's status as it
    is now. `key` tells one such happening from another of the same delivery (a click's id):
    the message id is `msg_<delivery>_<bounced|complained|clicked><key>`."""
    name = kind.removeprefix("delivery.")
    return _messages([(kind, c, f"msg_{c.delivery_id}_{name}{key}") for c in changes])


def _messages(typed: list[tuple[str, StatusChange, str]]) -> list[tuple[str, dict[str, Any]]]:
    if not typed:
        return []
    with session_scope() as session:
        endpoints = list(
            session.scalars(
                select(WebhookEndpoint).where(
                    WebhookEndpoint.tenant_id.in_({c.tenant_id for _, c, _ in typed})
                )
            )
        )
    timestamp = dt.datetime.now(dt.UTC).isoformat()
    messages = []
    for kind, change, message_id in typed:
        body = {
            "type": kind,
            "timestamp": timestamp,
            "data": {
                "eventId": change.event_id,
                "deliveryId": change.delivery_id,
                "userId": change.recipient,
                "channel": change.channel,
                "status": change.status,
                "reason": change.reason,
                "providerMessageId": change.provider_message_id,
            },
        }
        message = {"id": message_id, "body": body}
        for endpoint in endpoints:
            if endpoint.tenant_id != change.tenant_id:
                continue
            if endpoint.event_types is None or kind in endpoint.event_types:
                messages.append((endpoint.id, message))
    return messages


def signature(secret: str, message_id: str, timestamp: int, body: bytes) -> str:
    """The `webhook-signature` header value (Standard Webhooks, v1 = HMAC-SHA256)."""
    key = base64.b64decode(secret.removeprefix("whsec_"))
    signed = f"{message_id}.{timestamp}.".encode() + body
    return "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()


def _retry_after(response: requests.Response) -> float | None:
    value = response.headers.get("Retry-After", "")
    return float(value) if value.isdigit() else None


def post_message(endpoint_id: str, message: dict[str, Any]) -> bool:
    """POST one message to the endpoint, signed now. False when the endpoint is gone
    (deleted since: nothing to send). Raises WebhookRetry or WebhookRefused."""
    with session_scope() as session:
        endpoint = session.get(WebhookEndpoint, endpoint_id)
        if endpoint is None:
            return False
        url, secret = endpoint.url, endpoint.secret
    try:
        check_url(url, "webhook")
    except BlockedURL as exc:
        raise WebhookRefused(str(exc)) from None
    body = json.dumps(message["body"], separators=(",", ":")).encode()
    timestamp = int(time.time())
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "notifier-webhooks",
        "webhook-id": message["id"],
        "webhook-timestamp": str(timestamp),
        "webhook-signature": signature(secret, message["id"], timestamp, body),
    }
    try:
        with guarded_session() as http:
            response = http.post(
                url, data=body, headers=headers, timeout=TIMEOUT_S, allow_redirects=False
            )
    except BlockedURL as exc:
        raise WebhookRefused(str(exc)) from None
    except requests.RequestException as exc:
        raise WebhookRetry(f"no answer ({type(exc).__name__})") from None
    if 200 <= response.status_code < 300:
        return True
    reason = sanitized_reason(response.status_code, response.content[:4096])
    if response.status_code in (408, 409, 425, 429) or response.status_code >= 500:
        raise WebhookRetry(reason, _retry_after(response))
    raise WebhookRefused(reason)


def dead_letter(endpoint_id: str, message: dict[str, Any], error: str) -> None:
    """The message could not be delivered after the last try: keep it, with why."""
    with session_scope() as session:
        endpoint = session.get(WebhookEndpoint, endpoint_id)
        session.add(
            DeadLetter(
                tenant_id=endpoint.tenant_id if endpoint else "",
                kind="webhook",
                payload={"endpointId": endpoint_id, "message": message},
                error=error,
            )
        )

"""Provider webhooks: POST /webhooks/ses (SES feedback through an SNS HTTPS subscription)
and POST /webhooks/line (the LINE channel's webhook). Both verify signatures first."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import logging
from collections.abc import Sequence
from typing import Any, cast

from fastapi import APIRouter, Header, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel

from config.settings import get_settings
from notifier.models import utcnow
from notifier.outbound_webhooks import MessageType, feedback_messages
from notifier.status_hooks import StatusChange
from notifier.web.bodies import Problem, parse_json_body, read_body
from notifier.web.feedback import apply_line_events, apply_ses_notification
from notifier.web.sns import CertificateUnavailable, SnsRejected, SnsVerifier

log = logging.getLogger("notifier.web.webhooks")

SNS_BODY_LIMIT = 512 * 1024  # an SNS message is at most 256 KB, plus the envelope
LINE_BODY_LIMIT = 1024 * 1024

router = APIRouter(tags=["webhooks"])


class WebhookResult(BaseModel):
    status: str
    """What was done: subscribed, applied, ignored, unknown-message, ..."""
    suppressed: int = 0


_ANY_JSON = {"required": True, "content": {"application/json": {"schema": {"type": "object"}}}}


@router.post(
    "/webhooks/ses",
    summary="SES bounces and complaints, delivered by an SNS HTTPS subscription",
    response_model=WebhookResult,
    responses={
        400: {"model": Problem, "description": "Not JSON"},
        403: {"model": Problem, "description": "Not a genuine SNS message of a known topic"},
        413: {"model": Problem, "description": "Body too large"},
        502: {"model": Problem, "description": "The subscription could not be confirmed"},
        503: {"model": Problem, "description": "The signing certificate could not be fetched"},
    },
    openapi_extra={"requestBody": _ANY_JSON},
)
async def ses_webhook(request: Request) -> WebhookResult:
    # SNS posts JSON as text/plain, so the body is parsed whatever its content type.
    message = parse_json_body(await read_body(request, SNS_BODY_LIMIT))
    verifier: SnsVerifier = request.app.state.sns_verifier
    header = request.headers.get("x-amz-sns-message-type")
    try:
        await run_in_threadpool(verifier.verify, header, message, utcnow())
    except SnsRejected as exc:
        log.warning("SNS message rejected", extra={"error": str(exc), "channel": "email"})
        raise HTTPException(403, f"rejected: {exc}") from exc
    except CertificateUnavailable as exc:
        raise HTTPException(503, str(exc)) from exc
    kind = message["Type"]
    if kind == "SubscriptionConfirmation":
        try:
            await run_in_threadpool(verifier.confirm_subscription, message)
        except OSError as exc:
            raise HTTPException(502, f"could not confirm the subscription: {exc}") from exc
        log.info("SNS subscription confirmed", extra={"channel": "email"})
        return WebhookResult(status="subscribed")
    if kind == "UnsubscribeConfirmation":
        log.warning("SNS subscription removed", extra={"channel": "email"})
        return WebhookResult(status="ignored")
    try:
        notification = json.loads(message["Message"])
    except (ValueError, RecursionError):
        return WebhookResult(status="ignored")
    outcome = await run_in_threadpool(apply_ses_notification, notification, utcnow())
    if outcome.kind and outcome.changes:
        await run_in_threadpool(announce_feedback, outcome.kind, outcome.changes)
    return WebhookResult(status=outcome.status, suppressed=outcome.suppressed)


def announce_feedback(kind: str, changes: Sequence[StatusChange], key: str = "") -> None:
    """Send the delivery.bounced / complained / clicked messages of committed changes (no
    broker is touched without an endpoint that takes them)."""
    messages = feedback_messages(cast(MessageType, kind), changes, key)
    if not messages:
        return
    from tasks import enqueue  # late: only a tenant with endpoints configures the Celery app

    enqueue.send_webhooks(messages)


def line_signature_ok(secret: str, body: bytes, signature: str | None) -> bool:
    """x-line-signature = Base64(HMAC-SHA256(channel secret, raw body))."""
    if not signature:
        return False
    try:
        given = base64.b64decode(signature, validate=True)
    except (binascii.Error, ValueError):
        return False
    expected = hmac.new(secret.encode(), body, hashlib.sha256).digest()
    return hmac.compare_digest(given, expected)


@router.post(
    "/webhooks/line",
    summary="LINE webhook: follow re-enables LINE for the user, unfollow suppresses it",
    response_model=WebhookResult,
    responses={
        400: {"model": Problem, "description": "Not JSON"},
        403: {"model": Problem, "description": "Missing or wrong x-line-signature"},
        413: {"model": Problem, "description": "Body too large"},
        503: {"model": Problem, "description": "LINE_CHANNEL_SECRET is not set"},
    },
    openapi_extra={"requestBody": _ANY_JSON},
)
async def line_webhook(
    request: Request,
    _signature: str | None = Header(
        None,
        alias="x-line-signature",
        description="Base64(HMAC-SHA256(LINE_CHANNEL_SECRET, body)); without it: 403",
    ),
) -> WebhookResult:
    # One channel secret per deployment (LINE_CHANNEL_SECRET): tenants with a LINE channel
    # of their own would need per-tenant webhook secrets, which this app does not keep.
    secret = get_settings().line_channel_secret
    if not secret:
        raise HTTPException(503, "the LINE webhook is not configured (LINE_CHANNEL_SECRET)")
    body = await read_body(request, LINE_BODY_LIMIT)
    if not line_signature_ok(secret, body, request.headers.get("x-line-signature")):
        log.warning("LINE webhook with a bad signature", extra={"channel": "line"})
        raise HTTPException(403, "bad or missing x-line-signature")
    payload: Any = parse_json_body(body)
    events = payload.get("events") if isinstance(payload, dict) else None
    counts = await run_in_threadpool(apply_line_events, events, utcnow())
    return WebhookResult(status="applied" if any(counts.values()) else "ignored")

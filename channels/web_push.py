"""Web Push (RFC 8030 + VAPID RFC 8292 + aes128gcm RFC 8291) through pywebpush.

One delivery goes to every subscription (browser/device) the user has. Per subscription:
201/200/202 accepted; 404/410 gone -> reported on the result or error (`gone_subscriptions`)
for the outcome recorder to remove from the directory once the outcome is committed;
413 payload too large; 429 rate limited (Retry-After); 400/401/403 VAPID configuration;
5xx, timeouts and connection errors are transient. The outcome of the delivery:

- at least one subscription accepted -> SENT (provider_message_id = the first Location);
- else any transient outcome -> TransientChannelError (retry_after = the longest asked);
- else a VAPID configuration error -> PermanentChannelError(disable_channel=True);
- else 413 -> PermanentChannelError (payload too large);
- else every subscription gone/invalid -> PermanentChannelError "all subscriptions gone".

Endpoints are capability URLs: only their host ever appears in raw_response or errors, and
of what the push service answers only the status and a short error code are kept. An
endpoint follows the outbound URL policy (notifier.urlpolicy): a known push service, https,
and a connection that reaches a public address.

Priority -> push headers (class attributes, so a deployment can change them):

    priority  Urgency  TTL
    low       low      7 days   (digests: nothing is lost by waiting for the device)
    medium    normal   1 day
    high      high     12 hours (time-sensitive: stale after half a day; other channels too)
    critical  high     1 day    (must arrive even after a night offline)

Urgency follows RFC 8030 §5.3 (very-low is for advertisements, normal for chat/calendar
messages, high for time-sensitive alerts), so a medium notification is not held back until
the device is charging. The Topic header is derived from the delivery's retry key: a retry
of the same delivery replaces a still-pending copy at the push service instead of showing
twice, while two different events never collapse into one.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from typing import TYPE_CHECKING, Any, ClassVar, cast
from urllib.parse import urlsplit

import requests

from channels.base import (
    Channel,
    DeliveryResult,
    Message,
    PermanentChannelError,
    TransientChannelError,
    parse_retry_after,
)
from config.settings import Variable
from notifier.urlpolicy import BlockedURL, check_url, guarded_session, sanitized_reason

if TYPE_CHECKING:
    from py_vapid import Vapid02

    from notifier.models import Tenant

MAX_PLAINTEXT_BYTES = 3_993
"""4,096 bytes of aes128gcm record minus the 86-byte header, the 16-byte tag and the
1-byte padding delimiter: the most a push service is required to accept (RFC 8291 §4)."""
ELLIPSIS = "…"

ACCEPTED = frozenset({200, 201, 202})
GONE = frozenset({404, 410})
VAPID_ERRORS = frozenset({400, 401, 403})


class PayloadTooLarge(ValueError):
    pass


def _encode(payload: dict[str, Any]) -> bytes:
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def _shrink(text: str, fits: Any) -> str | None:
    """The longest prefix of `text` (+ an ellipsis) for which `fits(candidate)` holds."""
    if fits(text):
        return text
    lo, hi = 0, len(text) - 1  # prefix lengths; the full text does not fit
    best: str | None = None
    while lo <= hi:
        mid = (lo + hi) // 2
        candidate = text[:mid].rstrip() + ELLIPSIS if mid else ""
        if fits(candidate):
            best = candidate
            lo = mid + 1
        else:
            hi = mid - 1
    return best


def fit_payload(
    title: str,
    body: str,
    tag: str,
    data: dict[str, Any],
    limit: int = MAX_PLAINTEXT_BYTES,
) -> bytes:
    """The JSON notification payload, at most `limit` bytes of UTF-8: the body is cut
    (ending in an ellipsis) until it fits, then the title, then the data URL is dropped.
    Raises PayloadTooLarge when even that does not fit."""

    def build(t: str, b: str, d: dict[str, Any]) -> bytes:
        return _encode({"title": t, "body": b, "tag": tag, "data": d})

    if len(raw := build(title, body, data)) <= limit:
        return raw
    new_body = _shrink(body, lambda b: len(build(title, b, data)) <= limit)
    if new_body is not None:
        return build(title, new_body, data)
    new_title = _shrink(title, lambda t: len(build(t, "", data)) <= limit)
    if new_title is not None:
        return build(new_title, "", data)
    slim = {k: v for k, v in data.items() if k != "url"}
    if len(raw := build("", "", slim)) <= limit:
        return raw
    raise PayloadTooLarge(f"the push payload does not fit in {limit} bytes")


def topic_token(seed: str) -> str:
    """A Topic header value: 32 characters of the URL-safe base64 alphabet (RFC 8030 §5.4)."""
    digest = hashlib.sha256(seed.encode("utf-8")).digest()
    return base64.urlsafe_b64encode(digest[:24]).decode("ascii")


@lru_cache(maxsize=4)
def load_vapid_key(raw: str) -> Vapid02:
    """VAPID_PRIVATE_KEY as a PEM (newlines may be written as literal \\n), a path to a
    PEM/DER file, the base64url raw 32-byte private scalar, or base64 DER."""
    # pywebpush and cryptography load when Web Push first sends (half a second of imports
    # that a process reading only the channel's facts never needs); so below.
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from py_vapid import Vapid02

    value = raw.strip().replace("\\n", "\n")
    if "-----BEGIN" in value:
        key = serialization.load_pem_private_key(value.encode("ascii"), password=None)
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise ValueError("VAPID_PRIVATE_KEY is not an EC private key")
        return Vapid02(private_key=key)
    if os.path.isfile(value):
        return cast(Vapid02, Vapid02.from_file(private_key_file=value))
    return cast(Vapid02, Vapid02.from_string(private_key=value))


def _b64url_bytes(value: Any) -> bytes | None:
    if not isinstance(value, str):
        return None
    try:
        return base64.urlsafe_b64decode(value.strip() + "=" * (-len(value.strip()) % 4))
    except (ValueError, binascii.Error):
        return None


def _valid_keys(subscription: dict[str, Any]) -> bool:
    """p256dh an uncompressed P-256 point, auth 16 bytes (RFC 8291 §3.2), both base64url."""
    keys = subscription.get("keys")
    if not isinstance(keys, dict):
        return False
    point, auth = _b64url_bytes(keys.get("p256dh")), _b64url_bytes(keys.get("auth"))
    if point is None or auth is None or len(auth) != 16:
        return False
    from cryptography.hazmat.primitives.asymmetric import ec

    try:
        ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), point)
    except ValueError:
        return False
    return len(point) == 65


def _host(endpoint: str) -> str:
    try:
        parts = urlsplit(endpoint)
        host = parts.hostname or "?"
        return f"{host}:{parts.port}" if parts.port else host
    except ValueError:
        return "?"


@dataclass
class _Outcome:
    """What happened to one subscription; `report()` is safe to store (host only)."""

    host: str
    outcome: str  # accepted | gone | invalid | too_large | vapid | transient
    status: int | None = None
    location: str | None = None
    retry_after: float | None = None
    error: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    endpoint: str = field(default="", repr=False)  # a capability URL: never in report()

    def report(self) -> dict[str, Any]:
        entry: dict[str, Any] = {"host": self.host, "status": self.status, "outcome": self.outcome}
        if self.retry_after is not None:
            entry["retry_after"] = self.retry_after
        if self.error:
            entry["error"] = self.error
        entry.update(self.extra)
        return entry


_SECTION = "Channel: Web Push"


@dataclass(frozen=True)
class WebPushSettings:
    private_key: str = field(repr=False)
    subject: str
    timeout: float
    """Seconds per push-service request (connect and read)."""

    @classmethod
    def from_env(cls) -> WebPushSettings:
        raw = os.environ.get("NOTIFIER_WEB_PUSH_TIMEOUT", "").strip()
        return cls(
            private_key=os.environ.get("VAPID_PRIVATE_KEY", "").strip(),
            subject=os.environ.get("VAPID_SUBJECT", "").strip(),
            timeout=float(raw) if raw else WebPushChannel.timeout,
        )


class WebPushChannel(Channel):
    name = "web_push"
    label = "push"
    template_parts = ("title", "txt")
    audience = "subscriptions"
    outbox_view = "push"
    outbox_color = "#ea580c"
    variables = (
        Variable(
            "VAPID_PRIVATE_KEY",
            "secret",
            "",
            "VAPID private key (PEM or base64url); switches Web Push to its real backend.",
            _SECTION,
        ),
        Variable(
            "VAPID_SUBJECT",
            "text",
            "",
            "VAPID `sub` claim, a `mailto:` or `https:` URL; required by the real backend.",
            _SECTION,
        ),
        Variable(
            "NOTIFIER_WEB_PUSH_TIMEOUT",
            "number",
            "10",
            "Seconds to wait for a push service.",
            _SECTION,
        ),
    )

    backend = "webpush"
    max_body_len = MAX_PLAINTEXT_BYTES
    rate_per_sec = 0.0

    timeout: ClassVar[float] = 10.0
    """Seconds per push-service request (connect and read); NOTIFIER_WEB_PUSH_TIMEOUT wins."""
    urgency: ClassVar[dict[str, str]] = {
        "low": "low",
        "medium": "normal",
        "high": "high",
        "critical": "high",
    }
    ttl: ClassVar[dict[str, int]] = {
        "low": 7 * 86_400,
        "medium": 86_400,
        "high": 12 * 3_600,
        "critical": 86_400,
    }

    def __init__(self, settings: WebPushSettings | None = None) -> None:
        super().__init__()
        self.settings = settings or WebPushSettings.from_env()

    @classmethod
    def uses_credentials_of(cls, environ: Mapping[str, str]) -> bool:
        return bool(environ.get("VAPID_PRIVATE_KEY", "").strip())

    def unavailable(self, tenant: Tenant, category: str) -> str | None:
        if self.settings.private_key:
            return None
        return "channel not configured: VAPID_PRIVATE_KEY unset"

    # -- steps -------------------------------------------------------------------------

    def build_payload(self, message: Message) -> bytes:
        data: dict[str, Any] = {
            "eventType": message.event_type,
            "deliveryId": message.delivery_id,
        }
        url = message.attributes.get("url")
        if isinstance(url, str) and url:
            data["url"] = url
        try:
            return fit_payload(message.subject, message.text, message.event_type, data)
        except PayloadTooLarge as exc:
            raise PermanentChannelError(str(exc), **self.error_context(message)) from exc

    def post(self, message: Message, payload: bytes) -> list[_Outcome]:
        subscriptions = self._subscriptions(message)
        vapid = self._vapid(message)
        subject = self.settings.subject
        if not subject:
            raise PermanentChannelError(
                "VAPID_SUBJECT is not set", disable_channel=True, **self.error_context(message)
            )
        priority = message.priority if message.priority in self.ttl else "medium"
        headers: dict[str, str | int | float] = {"Urgency": self.urgency[priority]}
        headers["Topic"] = topic_token(
            message.retry_key or f"{message.tenant_id}:{message.delivery_id}"
        )
        data = payload.decode("utf-8")
        outcomes: list[_Outcome] = []
        with guarded_session() as session:
            for subscription in subscriptions:
                outcome = self._push_one(
                    message, subscription, data, vapid, subject, priority, headers, session
                )
                outcome.endpoint = subscription["endpoint"]
                outcomes.append(outcome)
        return outcomes

    def parse_response(self, message: Message, response: list[_Outcome]) -> DeliveryResult:
        raw = {"subscriptions": [o.report() for o in response]}
        gone = tuple(o.endpoint for o in response if o.outcome == "gone")
        context = {**self.error_context(message), "response": raw, "gone_subscriptions": gone}
        accepted = [o for o in response if o.outcome == "accepted"]
        if accepted:
            return DeliveryResult(
                provider_message_id=accepted[0].location,
                raw_response=raw,
                gone_subscriptions=gone,
            )

        def first(kind: str) -> _Outcome | None:
            return next((o for o in response if o.outcome == kind), None)

        if transient := first("transient"):
            waits = [o.retry_after for o in response if o.retry_after is not None]
            raise TransientChannelError(
                f"push service unavailable ({transient.error or transient.status})",
                retry_after=max(waits) if waits else None,
                status_code=transient.status,
                **context,
            )
        if vapid := first("vapid"):
            raise PermanentChannelError(
                f"push service rejected the VAPID authorization (HTTP {vapid.status})",
                disable_channel=True,
                status_code=vapid.status,
                **context,
            )
        if too_large := first("too_large"):
            raise PermanentChannelError(
                "push payload too large", status_code=too_large.status, **context
            )
        first_gone = first("gone")
        all_gone = all(o.outcome == "gone" for o in response)
        raise PermanentChannelError(
            "all subscriptions gone" if all_gone else "no usable web push subscription",
            suppress=False,
            status_code=first_gone.status if first_gone else None,
            **context,
        )

    # -- helpers -----------------------------------------------------------------------

    def _subscriptions(self, message: Message) -> list[dict[str, Any]]:
        raw = cast(dict[str, Any], message.credentials).get("subscriptions") or []
        seen: set[str] = set()
        subscriptions: list[dict[str, Any]] = []
        for sub in raw:
            endpoint = sub.get("endpoint") if isinstance(sub, dict) else None
            if isinstance(endpoint, str) and endpoint and endpoint not in seen:
                seen.add(endpoint)
                subscriptions.append(sub)
        if not subscriptions:
            raise PermanentChannelError("no web push subscription", **self.error_context(message))
        return subscriptions

    def _vapid(self, message: Message) -> Vapid02:
        raw = self.settings.private_key
        if not raw:
            raise PermanentChannelError(
                "VAPID_PRIVATE_KEY is not set", disable_channel=True, **self.error_context(message)
            )
        try:
            return load_vapid_key(raw)
        except Exception as exc:  # any parse failure: never echo the key
            raise PermanentChannelError(
                f"VAPID_PRIVATE_KEY is not a usable key ({type(exc).__name__})",
                disable_channel=True,
                **self.error_context(message),
            ) from None

    def _push_one(
        self,
        message: Message,
        subscription: dict[str, Any],
        data: str,
        vapid: Vapid02,
        subject: str,
        priority: str,
        headers: dict[str, str | int | float],
        session: requests.Session,
    ) -> _Outcome:
        from http_ece import ECEException
        from py_vapid import VapidException
        from pywebpush import WebPushException, webpush

        host = _host(subscription["endpoint"])
        if not _valid_keys(subscription):
            return _Outcome(host, "invalid", error="malformed subscription keys")
        try:
            check_url(subscription["endpoint"], "web_push")
            response = webpush(
                subscription,
                data=data,
                vapid_private_key=vapid,
                vapid_claims={"sub": subject},  # a fresh dict: pywebpush adds aud/exp to it
                content_encoding="aes128gcm",
                timeout=self.settings.timeout,
                ttl=self.ttl[priority],
                headers=dict(headers),
                requests_session=session,
            )
        except BlockedURL as exc:
            return _Outcome(host, "invalid", error=str(exc))
        except WebPushException as exc:
            if exc.response is None:  # raised before any request: a malformed subscription
                return _Outcome(host, "invalid", error="malformed subscription")
            return self._classify(host, exc.response)
        except VapidException:
            raise PermanentChannelError(
                "VAPID claims rejected (VAPID_SUBJECT must be a mailto: or https: URL)",
                disable_channel=True,
                **self.error_context(message),
            ) from None
        except requests.Timeout:
            return _Outcome(host, "transient", error="timeout")
        except requests.ConnectionError:
            return _Outcome(host, "transient", error="connection error")
        except requests.RequestException as exc:
            return _Outcome(host, "transient", error=type(exc).__name__)
        except (ValueError, TypeError, KeyError, IndexError, ECEException):
            return _Outcome(host, "invalid", error="malformed subscription")
        return self._classify(host, response)

    @staticmethod
    def _classify(host: str, response: Any) -> _Outcome:
        status = int(response.status_code)
        if status in ACCEPTED:
            return _Outcome(host, "accepted", status, location=response.headers.get("Location"))
        extra: dict[str, Any] = {"reason": sanitized_reason(status, (response.text or "")[:4096])}
        if status in GONE:
            return _Outcome(host, "gone", status, extra=extra)
        if status == 413:
            return _Outcome(host, "too_large", status, extra=extra)
        if status == 429:
            wait = parse_retry_after(response.headers.get("Retry-After"))
            return _Outcome(host, "transient", status, retry_after=wait, extra=extra)
        if status in VAPID_ERRORS:
            return _Outcome(host, "vapid", status, extra=extra)
        if status >= 500 or status == 408:
            return _Outcome(host, "transient", status, extra=extra)
        return _Outcome(host, "invalid", status, extra=extra)

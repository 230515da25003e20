"""Slack through the tenant's incoming webhook, a tenant-supplied URL: it follows the
outbound URL policy (notifier.urlpolicy) when imported and again at each send, where the
connection itself must reach a public address.

The message is Block Kit (a header with the subject, a mrkdwn section with the text, a
context line with the event type and priority) plus `text` as the notification fallback.
The templates render Slack mrkdwn and escape user data themselves, so the text is sent as is.

The answer is read by its status: 2xx sent;
429 transient honouring Retry-After; 5xx (`rollup_error`) and 408 transient; 401/403/404/410
(`invalid_token`, `action_prohibited`, `channel_not_found`, `channel_is_archived`,
`no_service`) disable the webhook for the tenant; 400 (`invalid_payload`...) and other 4xx
permanent. Timeouts and connection errors are transient; the pipeline owns retries. The
webhook URL is a secret: it never appears in errors, raw_response or logs, and of what the
host answers only the status and a short error code are kept.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

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
    from notifier.models import Tenant, User

log = logging.getLogger("notifier.channels.slack")

HEADER_MAX = 150
SECTION_MAX = 3000
FALLBACK_MAX = 3000
ELLIPSIS = "…"

DISABLE = frozenset({401, 403, 404, 410})


def clip(text: str, limit: int) -> str:
    """At most `limit` characters, ending in an ellipsis when cut; never cuts inside a
    mrkdwn `<link|label>` / mention or an `&amp;`-style entity."""
    if len(text) <= limit:
        return text
    cut = text[: limit - len(ELLIPSIS)]
    opened = cut.rfind("<")
    if opened > cut.rfind(">"):
        cut = cut[:opened]
    amp = cut.rfind("&")
    if amp != -1 and ";" not in cut[amp:] and len(cut) - amp < 6:
        cut = cut[:amp]
    return cut.rstrip() + ELLIPSIS


@dataclass(frozen=True)
class SlackSettings:
    timeout: float
    """Seconds per webhook request (connect and read)."""

    @classmethod
    def from_env(cls) -> SlackSettings:
        raw = os.environ.get("NOTIFIER_SLACK_TIMEOUT", "").strip()
        return cls(timeout=float(raw) if raw else SlackChannel.timeout)


class SlackChannel(Channel):
    name = "slack"
    label = "Slack"
    template_parts = ("title", "txt")
    tracks_links = True
    audience = "staff"
    outbox_view = "slack"
    outbox_color = "#4a154b"
    variables = (
        Variable(
            "NOTIFIER_SLACK_TIMEOUT",
            "number",
            "10",
            "Seconds to wait for a Slack webhook.",
            "Channel: Slack",
        ),
    )

    # The credential is each tenant's own webhook URL: the backend is switched on explicitly.
    backend = "slack"
    max_body_len = SECTION_MAX
    rate_per_sec = 1.0  # Slack allows about one message per second per webhook
    rate_scope = "tenant"

    timeout: ClassVar[float] = 10.0
    """Seconds per webhook request (connect and read); NOTIFIER_SLACK_TIMEOUT wins."""

    def __init__(self, settings: SlackSettings | None = None) -> None:
        super().__init__()
        self.settings = settings or SlackSettings.from_env()

    @classmethod
    def address_of(cls, user: User | None, tenant: Tenant, category: str) -> str | None:
        return tenant.slack_webhook_url  # the tenant's incoming webhook, for its staff

    @classmethod
    def address_column(cls) -> Any:
        from notifier.models import Tenant

        return Tenant.slack_webhook_url

    def build_payload(self, message: Message) -> dict[str, Any]:
        subject = message.subject.strip()
        text = message.text.strip()
        blocks: list[dict[str, Any]] = []
        if subject:
            blocks.append(
                {
                    "type": "header",
                    "text": {
                        "type": "plain_text",
                        "text": clip(subject, HEADER_MAX),
                        "emoji": True,
                    },
                }
            )
        if text:
            blocks.append(
                {"type": "section", "text": {"type": "mrkdwn", "text": clip(text, SECTION_MAX)}}
            )
        blocks.append(
            {
                "type": "context",
                "elements": [
                    {
                        "type": "plain_text",
                        "text": f"{message.event_type} · priority {message.priority}",
                        "emoji": False,
                    }
                ],
            }
        )
        fallback = "\n".join(part for part in (subject, text) if part) or message.event_type
        return {"text": clip(fallback, FALLBACK_MAX), "blocks": blocks}

    def post(self, message: Message, payload: dict[str, Any]) -> requests.Response:
        url = (message.address or "").strip()
        if not url:
            raise PermanentChannelError(
                "the tenant has no Slack webhook URL", **self.error_context(message)
            )
        try:
            check_url(url, "slack")
            with guarded_session() as session:
                return session.post(
                    url, json=payload, timeout=self.settings.timeout, allow_redirects=False
                )
        except BlockedURL as exc:
            raise PermanentChannelError(
                f"the tenant's Slack webhook URL is refused: {exc}",
                disable_channel=True,
                **self.error_context(message),
            ) from None
        except requests.Timeout:
            raise TransientChannelError(
                "Slack webhook timed out", **self.error_context(message)
            ) from None
        except requests.RequestException as exc:
            raise TransientChannelError(
                f"Slack webhook connection error ({type(exc).__name__})",
                **self.error_context(message),
            ) from None

    def parse_response(self, message: Message, response: requests.Response) -> DeliveryResult:
        status = int(response.status_code)
        reason = sanitized_reason(status, response.text[:4096])
        raw: dict[str, Any] = {"status": status, "reason": reason}
        context = {**self.error_context(message), "status_code": status, "response": raw}
        if 200 <= status < 300:
            return DeliveryResult(provider_message_id=None, raw_response=raw)
        if status == 429:
            retry_after = parse_retry_after(response.headers.get("Retry-After"))
            if retry_after is not None:
                raw["retry_after"] = retry_after
            raise TransientChannelError(
                f"Slack rate limited ({reason})", retry_after=retry_after, **context
            )
        if status >= 500 or status == 408:
            raise TransientChannelError(f"Slack unavailable ({reason})", **context)
        if status in DISABLE:
            raise PermanentChannelError(
                f"Slack webhook is gone or forbidden ({reason})", disable_channel=True, **context
            )
        raise PermanentChannelError(f"Slack rejected the message ({reason})", **context)

"""Slack through the tenant's incoming webhook (`slack_sdk.webhook.WebhookClient`).

The message is Block Kit (a header with the subject, a mrkdwn section with the text, a
context line with the event type and priority) plus `text` as the notification fallback.
The templates render Slack mrkdwn and escape user data themselves, so the text is sent as is.

WebhookClient never raises on HTTP errors; the answer is read per PROVIDERS.md: 2xx sent;
429 transient honouring Retry-After; 5xx (`rollup_error`) and 408 transient; 401/403/404/410
(`invalid_token`, `action_prohibited`, `channel_not_found`, `channel_is_archived`,
`no_service`) disable the webhook for the tenant; 400 (`invalid_payload`...) and other 4xx
permanent. Timeouts and connection errors are transient. The SDK's own retry handlers are
off: the pipeline owns retries. The webhook URL is a secret: it never appears in errors,
raw_response or logs (the SDK gets a logger that never writes its DEBUG lines with the URL).
"""

from __future__ import annotations

import http.client
import logging
import os
from typing import Any, ClassVar, cast
from urllib.error import URLError
from urllib.parse import urlsplit

from slack_sdk.errors import SlackRequestError
from slack_sdk.webhook import WebhookClient, WebhookResponse

from channels.base import (
    Channel,
    DeliveryResult,
    Message,
    PermanentChannelError,
    Status,
    TransientChannelError,
    parse_retry_after,
)

log = logging.getLogger("notifier.channels.slack")

# The SDK logs the full request URL and body at DEBUG: give it a logger that never does.
_SDK_LOG = logging.getLogger("notifier.channels.slack.sdk")
_SDK_LOG.setLevel(logging.WARNING)

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


def _header(headers: Any, name: str) -> str | None:
    for key, value in dict(headers or {}).items():
        if key.lower() == name.lower():
            return str(value[0] if isinstance(value, list) and value else value)
    return None


class SlackChannel(Channel):
    name = "slack"
    backend = "slack"
    max_body_len = SECTION_MAX
    rate_per_sec = 1.0  # Slack allows about one message per second per webhook
    rate_scope = "tenant"

    timeout: ClassVar[float] = 10.0
    """Seconds per webhook request (connect and read); NOTIFIER_SLACK_TIMEOUT wins."""

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

    def post(self, message: Message, payload: dict[str, Any]) -> WebhookResponse:
        url = (message.address or "").strip()
        if not url:
            raise PermanentChannelError(
                "the tenant has no Slack webhook URL", **self.error_context(message)
            )
        if urlsplit(url).scheme.lower() not in ("https", "http") or not urlsplit(url).hostname:
            raise PermanentChannelError(
                "the tenant's Slack webhook URL is not an http(s) URL",
                disable_channel=True,
                **self.error_context(message),
            )
        client = WebhookClient(
            url=url,
            timeout=cast(int, self._timeout()),  # urllib takes float seconds
            logger=_SDK_LOG,
            retry_handlers=[],  # the pipeline retries, honouring Retry-After
        )
        try:
            return client.send(text=payload["text"], blocks=payload["blocks"])
        except SlackRequestError:
            raise PermanentChannelError(
                "the tenant's Slack webhook URL is invalid",
                disable_channel=True,
                **self.error_context(message),
            ) from None
        except TimeoutError:
            raise TransientChannelError(
                "Slack webhook timed out", **self.error_context(message)
            ) from None
        except URLError as exc:
            kind = "timed out" if isinstance(exc.reason, TimeoutError) else "connection error"
            raise TransientChannelError(
                f"Slack webhook {kind}", **self.error_context(message)
            ) from None
        except (OSError, http.client.HTTPException) as exc:
            raise TransientChannelError(
                f"Slack webhook connection error ({type(exc).__name__})",
                **self.error_context(message),
            ) from None

    def parse_response(self, message: Message, response: WebhookResponse) -> DeliveryResult:
        status = int(response.status_code)
        body = self._scrub(str(response.body or ""), message.address or "")[:500]
        raw: dict[str, Any] = {"status": status, "body": body}
        context = {**self.error_context(message), "status_code": status, "response": raw}
        if 200 <= status < 300:
            return DeliveryResult(status=Status.SENT, provider_message_id=None, raw_response=raw)
        reason = body.splitlines()[0][:100] if body else f"HTTP {status}"
        if status == 429:
            retry_after = parse_retry_after(_header(response.headers, "Retry-After"))
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

    def _timeout(self) -> float:
        raw = os.environ.get("NOTIFIER_SLACK_TIMEOUT", "").strip()
        return float(raw) if raw else self.timeout

    @staticmethod
    def _scrub(text: str, url: str) -> str:
        if not url:
            return text
        text = text.replace(url, "<webhook>")
        path = urlsplit(url).path
        return text.replace(path, "<webhook>") if len(path) > 1 else text

"""Machine-readable events to an SNS topic per category (NOTIFIER_TOPIC_ARN_<CATEGORY>).

The message is JSON for machine subscribers (queues, Lambdas); `eventType`, `tenantId` and
`priority` also travel as message attributes so subscription filter policies can select on
them. FIFO topics (ARN ending in ".fifo") get a message group per tenant and a
deduplication id that is stable across the retries of one delivery.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from channels.aws import AwsSettings
from channels.base import Channel, DeliveryResult, Message, PermanentChannelError
from channels.sms import response_summary, sns_client, sns_error
from config.settings import TOPIC_CATEGORIES, Variable

if TYPE_CHECKING:
    from notifier.models import Tenant

log = logging.getLogger(__name__)

SUBJECT_MAX = 99  # AWS: "less than 100 characters"; ASCII printable, no line breaks
MESSAGE_MAX_BYTES = 256 * 1024
_GROUP_ID = re.compile(r"[\x21-\x7e]{1,128}")  # alphanumerics and punctuation


def topic_arn_variable(category: str) -> str:
    return f"NOTIFIER_TOPIC_ARN_{category.upper()}"


def sanitize_subject(subject: str) -> str:
    """An SNS-acceptable subject: ASCII printable, one line, at most SUBJECT_MAX chars."""
    folded = unicodedata.normalize("NFKD", subject)
    ascii_only = "".join(ch for ch in folded if " " <= ch <= "~" or ch in "\t\r\n")
    one_line = " ".join(ascii_only.split())
    if len(one_line) > SUBJECT_MAX:
        one_line = one_line[: SUBJECT_MAX - 3].rstrip() + "..."
    return one_line


@dataclass(frozen=True)
class TopicSettings:
    arns: dict[str, str]
    """Category -> its topic's ARN (categories without one are left out)."""
    aws: AwsSettings

    @classmethod
    def from_env(cls) -> TopicSettings:
        arns = {
            category: os.environ.get(topic_arn_variable(category), "").strip()
            for category in TOPIC_CATEGORIES
        }
        return cls(arns={c: arn for c, arn in arns.items() if arn}, aws=AwsSettings.from_env())


class TopicChannel(Channel):
    name = "topic"
    template_parts = ("title", "txt")
    audience = "topic"
    outbox_view = "topic"
    outbox_color = "#0891b2"
    variables = tuple(
        Variable(
            topic_arn_variable(category),
            "text",
            "",
            f"SNS topic of the {category} category; the `topic` channel switches to SNS "
            "when AWS credentials and at least one topic ARN are set.",
            "Channel: SNS topics",
        )
        for category in TOPIC_CATEGORIES
    )


class SnsTopicChannel(TopicChannel):
    backend = "sns"
    max_body_len = MESSAGE_MAX_BYTES
    rate_per_sec = 0.0

    connect_timeout: ClassVar[float] = 5.0
    read_timeout: ClassVar[float] = 10.0

    def __init__(self, settings: TopicSettings | None = None) -> None:
        super().__init__()
        self.settings = settings or TopicSettings.from_env()

    @classmethod
    def uses_credentials_of(cls, environ: Mapping[str, str]) -> bool:
        has_aws = bool(environ.get("AWS_ACCESS_KEY_ID") or environ.get("AWS_PROFILE"))
        return has_aws and any(environ.get(topic_arn_variable(c)) for c in TOPIC_CATEGORIES)

    def unavailable(self, tenant: Tenant, category: str) -> str | None:
        if category in self.settings.arns:
            return None
        return f"channel not configured: {topic_arn_variable(category)} unset"

    def _category(self, message: Message) -> str:
        raw = str(message.attributes.get("category") or message.address or "").strip()
        for category in TOPIC_CATEGORIES:
            if raw.lower() == category.lower():
                return category
        raise PermanentChannelError(
            f"unknown topic category {raw!r} (expected one of {', '.join(TOPIC_CATEGORIES)})",
            **self.error_context(message),
        )

    def build_payload(self, message: Message) -> dict[str, Any]:
        context = self.error_context(message)
        category = self._category(message)
        arn = self.settings.arns.get(category)
        if not arn:
            raise PermanentChannelError(f"{topic_arn_variable(category)} is not set", **context)

        event = message.attributes.get("event")
        event = event if isinstance(event, dict) else {}
        event_id = str(event.get("eventId") or "")
        event_type = message.event_type or str(event.get("eventType") or "")
        tenant_id = message.tenant_id or str(event.get("tenantId") or "")
        body = {
            "eventId": event_id or None,
            "eventType": event_type,
            "tenantId": tenant_id,
            "priority": message.priority,
            "summary": message.text,
            "event": event or None,
        }
        text = json.dumps(body, ensure_ascii=False, separators=(",", ":"), default=str)
        if len(text.encode("utf-8")) > MESSAGE_MAX_BYTES:
            raise PermanentChannelError(
                f"topic message is {len(text.encode('utf-8'))} bytes, over SNS's 256 KiB",
                **context,
            )

        attributes = {
            name: {"DataType": "String", "StringValue": value}
            for name, value in (
                ("eventType", event_type),
                ("tenantId", tenant_id),
                ("priority", message.priority),
            )
            if value  # SNS rejects empty attribute values
        }
        payload: dict[str, Any] = {
            "TopicArn": arn,
            "Message": text,
            "MessageAttributes": attributes,
        }
        subject = sanitize_subject(message.subject or "")
        if subject:
            payload["Subject"] = subject
        if arn.endswith(".fifo"):
            group = tenant_id if _GROUP_ID.fullmatch(tenant_id or "") else None
            payload["MessageGroupId"] = group or _digest(tenant_id or "default")
            dedup_source = f"{event_id or message.event_type}:{message.retry_key or ''}"
            if not message.retry_key:
                dedup_source += f":{message.delivery_id}"
            payload["MessageDeduplicationId"] = _digest(dedup_source)
        return payload

    def post(self, message: Message, payload: dict[str, Any]) -> dict[str, Any]:
        client = sns_client(self.settings.aws, self.connect_timeout, self.read_timeout)
        try:
            response: dict[str, Any] = client.publish(**payload)
        except Exception as exc:
            error = sns_error(exc, context=self.error_context(message), operation="Publish")
            log.info("topic delivery %s: %s", message.delivery_id, error.describe())
            raise error from exc
        return response

    def parse_response(self, message: Message, response: dict[str, Any]) -> DeliveryResult:
        return DeliveryResult(
            provider_message_id=response.get("MessageId"),
            raw_response=response_summary(response),
        )


def _digest(value: str) -> str:
    """64 hex characters: within SNS's 128-character id limit and its character set."""
    return hashlib.sha256(value.encode("utf-8")).hexdigest()

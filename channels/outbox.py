"""The dev backend of every channel: stores the rendered message instead of sending it.

Idempotent per delivery (a unique row per delivery id), so a redelivered task stores once.
"""

from __future__ import annotations

from typing import Any

from channels.base import Channel, DeliveryResult, Message
from notifier.db import session_scope
from notifier.dbutil import insert_ignore
from notifier.models import OutboxMessage


class OutboxChannel(Channel):
    """Stands in for any channel's backend: `channel` is the class that declares it."""

    backend = "outbox"

    def __init__(self, channel: type[Channel]):
        self.name = channel.name  # type: ignore[misc]
        super().__init__()

    def build_payload(self, message: Message) -> dict[str, Any]:
        return {
            "delivery_id": message.delivery_id,
            "tenant_id": message.tenant_id,
            "event_type": message.event_type,
            "channel": message.channel,
            "recipient": message.recipient,
            "address": message.address,
            "subject": message.subject,
            "body_text": message.text[: self.max_body_len],
            "body_html": message.html,
            "payload": message.attributes or None,
        }

    def post(self, message: Message, payload: dict[str, Any]) -> int:
        with session_scope() as session:
            return insert_ignore(session, OutboxMessage, [payload], ("delivery_id",))

    def parse_response(self, message: Message, response: int) -> DeliveryResult:
        return DeliveryResult(
            provider_message_id=f"outbox-{message.delivery_id}",
            raw_response={"stored": bool(response)},
        )

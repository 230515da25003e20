"""The channel contract: a fixed step order, one status enum, one error tree.

Every channel module subclasses `Channel` and implements the three steps; `send` runs them
in order and returns a `DeliveryResult` that keeps the provider's raw response.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any, ClassVar


class Status(enum.StrEnum):
    """The normalized outcome of a provider call, the same for every channel."""

    SENT = "sent"
    QUEUED = "queued"
    DEFERRED = "deferred"
    SUPPRESSED = "suppressed"
    FAILED = "failed"
    BOUNCED = "bounced"
    REJECTED = "rejected"


class NotifierError(Exception):
    """Root of every channel error; carries where it happened and what the provider said."""

    def __init__(
        self,
        message: str,
        *,
        channel: str = "",
        delivery_id: int | None = None,
        status_code: int | None = None,
        response: Any = None,
    ):
        super().__init__(message)
        self.channel = channel
        self.delivery_id = delivery_id
        self.status_code = status_code
        self.response = response

    def describe(self) -> str:
        code = f" (HTTP {self.status_code})" if self.status_code else ""
        return f"{type(self).__name__}{code}: {self}"


class TransientChannelError(NotifierError):
    """Worth retrying: 429, 5xx, timeouts, throttling. `retry_after` in seconds if known."""

    def __init__(self, message: str, *, retry_after: float | None = None, **context: Any):
        super().__init__(message, **context)
        self.retry_after = retry_after


class PermanentChannelError(NotifierError):
    """Not worth retrying: bad address, 4xx configuration errors, gone endpoints.

    `suppress` asks the pipeline to suppress the address (hard bounce, 410, opt-out).
    """

    def __init__(self, message: str, *, suppress: bool = False, **context: Any):
        super().__init__(message, **context)
        self.suppress = suppress


@dataclass(frozen=True)
class Message:
    """Everything a channel needs to send one rendered message to one address."""

    delivery_id: int
    tenant_id: str
    event_type: str
    channel: str
    recipient: str
    address: str | None
    subject: str
    text: str
    html: str | None = None
    priority: str = "medium"
    retry_key: str | None = None
    attributes: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class DeliveryResult:
    status: Status
    provider_message_id: str | None = None
    raw_response: Any = None


class Channel:
    """Base class: subclasses set the class attributes and implement the three steps."""

    name: ClassVar[str] = ""
    backend: ClassVar[str] = ""
    max_body_len: ClassVar[int] = 100_000
    rate_per_sec: ClassVar[float] = 0.0  # 0 = no limit

    def send(self, message: Message) -> DeliveryResult:
        payload = self.build_payload(message)
        response = self.post(message, payload)
        return self.parse_response(message, response)

    def build_payload(self, message: Message) -> Any:
        raise NotImplementedError

    def post(self, message: Message, payload: Any) -> Any:
        raise NotImplementedError

    def parse_response(self, message: Message, response: Any) -> DeliveryResult:
        raise NotImplementedError

    def error_context(self, message: Message) -> dict[str, Any]:
        return {"channel": self.name, "delivery_id": message.delivery_id}

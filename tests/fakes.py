"""A channel scripted by the test: the boundary fake for retry and failure tests (the real
providers are tested against real local peers in their own tests)."""

from __future__ import annotations

import threading
from collections import deque
from typing import Any

from channels.base import (
    Channel,
    DeliveryResult,
    Message,
    PermanentChannelError,
    TransientChannelError,
)


class ScriptedChannel(Channel):
    """Plays a queue of outcomes ('ok', 'transient', 'permanent', 'suppress', 'disable',
    'park'); 'ok' when
    the script runs out. Records every call."""

    backend = "scripted"
    script: deque[str] = deque()
    calls: list[Message] = []
    lock = threading.Lock()

    def __init__(self) -> None:
        self.name = "scripted"  # type: ignore[misc]
        super().__init__()

    @classmethod
    def reset(cls, *outcomes: str) -> None:
        with cls.lock:
            cls.script = deque(outcomes)
            cls.calls = []

    def build_payload(self, message: Message) -> Message:
        return message

    def post(self, message: Message, payload: Any) -> str:
        with self.lock:
            self.calls.append(message)
            return self.script.popleft() if self.script else "ok"

    def parse_response(self, message: Message, response: str) -> DeliveryResult:
        context = self.error_context(message)
        if response == "transient":
            raise TransientChannelError("scripted 503", status_code=503, **context)
        if response == "permanent":
            raise PermanentChannelError("scripted 400", status_code=400, **context)
        if response == "disable":
            raise PermanentChannelError(
                "scripted 401", status_code=401, disable_channel=True, **context
            )
        if response == "park":
            raise PermanentChannelError(
                "scripted 429 monthly limit", status_code=429, park_seconds=3600, **context
            )
        if response == "suppress":
            raise PermanentChannelError(
                "scripted 410 gone", status_code=410, suppress=True, **context
            )
        return DeliveryResult(f"scripted-{message.delivery_id}", {"ok": True})

"""A real SMTP server for tests: aiosmtpd's Controller on 127.0.0.1 and an ephemeral port.

The handler records every accepted message and every connection (EHLO/HELO), and can be
scripted: queue replies for MAIL, RCPT or DATA (e.g. "550 5.1.1 No such user", "451 4.3.0
Try again later"), make DATA sleep before answering (timeouts), or require AUTH.
"""

from __future__ import annotations

import asyncio
import email
import email.policy
import threading
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from email.message import EmailMessage
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword


@dataclass(frozen=True)
class ReceivedMail:
    peer: tuple[str, int]
    """The client's (host, port): one value per SMTP connection."""
    mail_from: str
    rcpt_tos: list[str]
    content: bytes

    @property
    def message(self) -> EmailMessage:
        parsed: EmailMessage = email.message_from_bytes(self.content, policy=email.policy.default)
        return parsed


class RecordingHandler:
    """aiosmtpd handler: records envelopes and connections, answers from scripted queues."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        with self._lock:
            self.messages: list[ReceivedMail] = []
            self.hellos: list[tuple[str, int]] = []
            self.mail_replies: deque[str] = deque()
            self.rcpt_replies: deque[str] = deque()
            self.data_replies: deque[str] = deque()
            self.data_delay = 0.0

    @property
    def connections(self) -> int:
        """How many SMTP sessions said EHLO/HELO (the controller's start-up probe does not)."""
        with self._lock:
            return len(set(self.hellos))

    def _next(self, queue: deque[str]) -> str | None:
        with self._lock:
            return queue.popleft() if queue else None

    async def handle_EHLO(
        self, server: Any, session: Any, envelope: Any, hostname: str, responses: list[str]
    ) -> list[str]:
        session.host_name = hostname
        with self._lock:
            self.hellos.append(tuple(session.peer))
        return responses  # already ends with "250 HELP"

    async def handle_HELO(self, server: Any, session: Any, envelope: Any, hostname: str) -> str:
        session.host_name = hostname
        with self._lock:
            self.hellos.append(tuple(session.peer))
        return f"250 {server.hostname}"

    async def handle_MAIL(
        self, server: Any, session: Any, envelope: Any, address: str, options: list[str]
    ) -> str:
        scripted = self._next(self.mail_replies)
        if scripted:
            return scripted
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        return "250 OK"

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, options: list[str]
    ) -> str:
        scripted = self._next(self.rcpt_replies)
        if scripted:
            return scripted
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        if self.data_delay:
            await asyncio.sleep(self.data_delay)
        scripted = self._next(self.data_replies)
        if scripted:
            return scripted
        mail = ReceivedMail(
            peer=tuple(session.peer),
            mail_from=envelope.mail_from,
            rcpt_tos=list(envelope.rcpt_tos),
            content=bytes(envelope.original_content or envelope.content),
        )
        with self._lock:
            self.messages.append(mail)
            number = len(self.messages)
        return f"250 2.0.0 Ok: queued as TEST{number:04d}"


class _Authenticator:
    def __init__(self, username: str, password: str):
        self.expected = (username.encode(), password.encode())

    def __call__(
        self, server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any
    ) -> AuthResult:
        ok = isinstance(auth_data, LoginPassword) and (
            (auth_data.login, auth_data.password) == self.expected
        )
        return AuthResult(success=ok, handled=False)


class _EphemeralPortController(Controller):
    """Controller bound to port 0: learn the real port before the start-up probe connects."""

    def _trigger_server(self) -> None:
        server: Any = self.server
        self.port = server.sockets[0].getsockname()[1]
        super()._trigger_server()


class SmtpPeer:
    """A running aiosmtpd server: `host`, `port`, the `handler` (records + scripts)."""

    def __init__(self, *, credentials: tuple[str, str] | None = None) -> None:
        self.handler = RecordingHandler()
        kwargs: dict[str, Any] = {"server_hostname": "smtp.peer.test", "ready_timeout": 10.0}
        if credentials:
            kwargs.update(authenticator=_Authenticator(*credentials), auth_require_tls=False)
        self._controller = _EphemeralPortController(
            self.handler, hostname="127.0.0.1", port=0, **kwargs
        )
        self.host = "127.0.0.1"
        self.port = 0

    def start(self) -> SmtpPeer:
        self._controller.start()
        self.port = self._controller.port
        return self

    def stop(self) -> None:
        self._controller.stop()

    def env(self) -> dict[str, str]:
        return {"SMTP_HOST": self.host, "SMTP_PORT": str(self.port)}

    # Shortcuts to the handler.
    @property
    def messages(self) -> list[ReceivedMail]:
        return list(self.handler.messages)

    @property
    def connections(self) -> int:
        return self.handler.connections

    def reset(self) -> None:
        self.handler.reset()


@contextmanager
def smtp_server(*, credentials: tuple[str, str] | None = None) -> Iterator[SmtpPeer]:
    peer = SmtpPeer(credentials=credentials).start()
    try:
        yield peer
    finally:
        peer.stop()

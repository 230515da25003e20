"""The local peers the benchmark sends to: the test suite's LINE stand-in and SMTP server,
with an arrival clock added, so a delivery counts when the peer has the request in hand.

The same peer objects serve the pipeline and the tight client loops that measure their
physical limit (bench.clients), so both figures are taken against one and the same server.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable
from typing import Any

from tests.peers.line import LinePeer, Received, Scripted
from tests.peers.smtp import RecordingHandler, SmtpPeer


class Arrivals:
    """Thread-safe log of (address, perf_counter time) as the peer accepts requests."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._times: dict[str, float] = {}
        self.accepted = 0
        """Everything accepted since start, tight-loop traffic included."""

    def add(self, addresses: Iterable[str], when: float) -> None:
        with self._lock:
            for address in addresses:
                self._times.setdefault(address, when)
                self.accepted += 1

    def times(self, addresses: Iterable[str]) -> dict[str, float]:
        with self._lock:
            return {a: self._times[a] for a in addresses if a in self._times}

    def distinct(self) -> int:
        """How many different addresses have arrived since the last clear()."""
        with self._lock:
            return len(self._times)

    def clear(self) -> None:
        with self._lock:
            self._times.clear()


class TimedLinePeer(LinePeer):
    """LinePeer that stamps every accepted push/multicast recipient; it keeps no request log
    (a broadcast of 20,000 would otherwise hold every parsed request in memory)."""

    def __init__(self, tokens: set[str]) -> None:
        super().__init__(tokens=tokens)
        self.arrivals = Arrivals()
        self.requests_accepted = 0

    def start(self) -> TimedLinePeer:
        super().start()
        # http.server writes the headers and the body of a reply in two sends; with Nagle's
        # algorithm on, the body then waits for the client's delayed ACK (~40 ms a request).
        # LINE's servers do not make their clients wait like that.
        assert self._server is not None
        self._server.httpd.RequestHandlerClass.disable_nagle_algorithm = True  # type: ignore[attr-defined]
        return self

    def _answer(
        self,
        handler: Any,
        record: Received,
        reply: Scripted,
        request_id: str | None = None,
    ) -> None:
        if 200 <= reply.status < 300:
            self.arrivals.add(record.recipients, time.perf_counter())
            with self._lock:
                self.requests_accepted += 1
        with self._lock:  # drop the log the tests read; the bench counts arrivals instead
            self.requests.clear()
        super()._answer(handler, record, reply, request_id)


class _TimedHandler(RecordingHandler):
    """Stamps each accepted message's recipients; keeps no message bodies."""

    def __init__(self, arrivals: Arrivals) -> None:
        super().__init__()
        self.arrivals = arrivals
        self.sample: bytes | None = None
        """The last accepted message, as it came over the wire (for the client loops)."""
        self.capture: dict[str, bytes] | None = None
        """When a dict: recipient -> message, kept for replaying the same mail elsewhere."""

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        reply = await super().handle_DATA(server, session, envelope)
        if reply.startswith("250"):
            self.arrivals.add(envelope.rcpt_tos, time.perf_counter())
            with self._lock:
                mail = self.messages.pop()
                self.hellos.clear()
            self.sample = mail.content
            if self.capture is not None:
                self.capture[envelope.rcpt_tos[0]] = mail.content
        return reply


class TimedSmtpPeer(SmtpPeer):
    """SmtpPeer (aiosmtpd) whose handler stamps arrivals instead of keeping messages."""

    handler: _TimedHandler

    def __init__(self) -> None:
        super().__init__()
        self.arrivals = Arrivals()
        self.handler = _TimedHandler(self.arrivals)
        self._controller.handler = self.handler

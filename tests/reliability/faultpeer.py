"""A Web Push service that misbehaves on purpose, one behaviour per endpoint path:

    /push/error500/<id>      500 until `window` seconds after the first request, then 201
    /push/retry_after/<id>   429 with `Retry-After: <retry_after>` the first time, then 201
    /push/hang/<id>          the first request gets no answer for `hang` seconds, then 201
    /push/close/<id>         the first request's connection is closed unanswered, then 201

Every request is recorded (path, arrival time, what it got), so a test can count them per
subscription. It does not check VAPID or decrypt: tests/peers/push.py does that; this one
is only about failure modes.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections import defaultdict
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec

from tests.peers.http import LocalServer
from tests.peers.push import FakeSubscription

MODES = ("error500", "retry_after", "hang", "close")


@dataclass(frozen=True)
class Hit:
    subscription: str
    at: float
    """time.monotonic() when the request arrived."""
    answer: str
    """"201", "500", "429", "hang", "close"."""


class FaultPeer:
    def __init__(self, *, window: float, retry_after: int, hang: float) -> None:
        self.window = window
        self.retry_after = retry_after
        self.hang = hang
        self.hits: list[Hit] = []
        self._first: dict[str, float] = {}
        self._seen: dict[str, int] = defaultdict(int)
        self._lock = threading.Lock()
        self._server = LocalServer(self._handler())

    @property
    def origin(self) -> str:
        return self._server.origin

    def start(self) -> FaultPeer:
        self._server.start()
        return self

    def stop(self) -> None:
        self._server.stop()

    def subscription(self, mode: str, sub_id: str) -> dict[str, Any]:
        """A browser subscription whose endpoint behaves as `mode`."""
        assert mode in MODES
        return FakeSubscription(
            id=sub_id,
            endpoint=f"{self.origin}/push/{mode}/{sub_id}",
            private_key=ec.generate_private_key(ec.SECP256R1()),
            auth_secret=os.urandom(16),
        ).info

    def hits_for(self, mode: str) -> dict[str, list[Hit]]:
        by_sub: dict[str, list[Hit]] = defaultdict(list)
        with self._lock:
            for hit in self.hits:
                if hit.subscription.startswith(mode + "/"):
                    by_sub[hit.subscription].append(hit)
        return dict(by_sub)

    # -- behaviour ------------------------------------------------------------------------

    def _answer(self, path: str) -> str:
        parts = path.strip("/").split("/")
        mode = parts[1] if len(parts) == 3 and parts[0] == "push" else ""
        key = "/".join(parts[1:])
        now = time.monotonic()
        with self._lock:
            first = self._first.setdefault(mode, now)
            self._seen[key] += 1
            count = self._seen[key]
        if mode == "error500":
            answer = "500" if now - first < self.window else "201"
        elif mode == "retry_after":
            answer = "429" if count == 1 else "201"
        elif mode == "hang":
            answer = "hang" if count == 1 else "201"
        elif mode == "close":
            answer = "close" if count == 1 else "201"
        else:
            answer = "404"
        with self._lock:
            self.hits.append(Hit(key, now, answer))
        return answer

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        peer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                if length:
                    self.rfile.read(length)
                answer = peer._answer(self.path)
                if answer == "close":
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                headers: dict[str, str] = {}
                if answer == "hang":
                    time.sleep(peer.hang)
                    answer = "201"
                if answer == "429":
                    headers["Retry-After"] = str(peer.retry_after)
                if answer == "201":
                    headers["Location"] = f"{peer.origin}/message/{time.monotonic_ns()}"
                try:
                    self.send_response(int(answer))
                    for name, value in headers.items():
                        self.send_header(name, value)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                except OSError:
                    pass  # the client gave up waiting (the hang mode)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        return Handler

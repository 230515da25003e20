"""Local SNS peers for the SMS and topic channel tests.

- `MotoSnsServer`: moto's server in a thread on 127.0.0.1 and an ephemeral port (SNS, SQS
  and the rest of moto); `url` is its endpoint, `data()` reads GET /moto-api/data.json
  (sent SMS under `sns.SMS`), `reset()` POSTs /moto-api/reset.
- `ScriptedSnsServer`: a tiny HTTP server speaking the SNS Query API (POST / with an
  `Action=...` form body) for the answers moto cannot give (Throttling, InternalError,
  AuthorizationError, slow replies). Tests queue responses per action and read back every
  request it received.
"""

from __future__ import annotations

import threading
import time
import urllib.parse
import urllib.request
import uuid
from collections import defaultdict, deque
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any

from tests.peers.http import LocalServer
from tests.peers.moto import MotoPeer

SNS_XMLNS = "http://sns.amazonaws.com/doc/2010-03-31/"


class MotoSnsServer(MotoPeer):
    """A running moto server with a shortcut to the SMS it recorded."""

    def sms(self) -> list[dict[str, Any]]:
        """Sent SMS as moto records them: {"phone_number", "message", "message_id"}."""
        return list(self.data().get("sns", {}).get("SMS", []))


# ---------------------------------------------------------------------------------------


@dataclass
class Reply:
    status: int
    body: str
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0


@dataclass
class Received:
    method: str
    path: str
    headers: dict[str, str]
    params: dict[str, str]

    @property
    def action(self) -> str:
        return self.params.get("Action", "")


def query_error(code: str, message: str = "", sender: bool = True) -> str:
    """An AWS Query-protocol error document, as SNS returns it."""
    kind = "Sender" if sender else "Receiver"
    return (
        f'<ErrorResponse xmlns="{SNS_XMLNS}"><Error><Type>{kind}</Type><Code>{code}</Code>'
        f"<Message>{message or code}</Message></Error>"
        f"<RequestId>{uuid.uuid4()}</RequestId></ErrorResponse>"
    )


def query_result(action: str, result_xml: str) -> str:
    return (
        f'<{action}Response xmlns="{SNS_XMLNS}"><{action}Result>{result_xml}</{action}Result>'
        f"<ResponseMetadata><RequestId>{uuid.uuid4()}</RequestId></ResponseMetadata>"
        f"</{action}Response>"
    )


def _default_reply(action: str) -> Reply:
    if action == "Publish":
        return Reply(200, query_result(action, f"<MessageId>{uuid.uuid4()}</MessageId>"))
    if action == "CheckIfPhoneNumberIsOptedOut":
        return Reply(200, query_result(action, "<isOptedOut>false</isOptedOut>"))
    return Reply(400, query_error("InvalidAction", f"{action} is not scripted"))


class ScriptedSnsServer:
    """SNS Query API on 127.0.0.1:<ephemeral>: scripted replies per action, else success."""

    def __init__(self) -> None:
        self.requests: list[Received] = []
        self._replies: dict[str, deque[Reply]] = defaultdict(deque)
        self._lock = threading.Lock()
        peer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length).decode("utf-8")
                params = {k: v[-1] for k, v in urllib.parse.parse_qs(raw).items()}
                received = Received("POST", self.path, dict(self.headers.items()), params)
                reply = peer._next_reply(received)
                if reply.delay:
                    time.sleep(reply.delay)
                body = reply.body.encode("utf-8")
                try:
                    self.send_response(reply.status)
                    self.send_header("Content-Type", "text/xml")
                    self.send_header("Content-Length", str(len(body)))
                    for name, value in reply.headers.items():
                        self.send_header(name, value)
                    self.end_headers()
                    self.wfile.write(body)
                except OSError:  # the client gave up (timeout test)
                    pass

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = LocalServer(Handler)
        self.url = self._server.origin

    def _next_reply(self, received: Received) -> Reply:
        with self._lock:
            self.requests.append(received)
            queue = self._replies.get(received.action)
            if queue:
                return queue.popleft()
        return _default_reply(received.action)

    def script(
        self,
        action: str,
        status: int,
        body: str,
        headers: dict[str, str] | None = None,
        delay: float = 0.0,
    ) -> None:
        """Queue one reply for the next request with `Action=action`."""
        with self._lock:
            self._replies[action].append(Reply(status, body, headers or {}, delay))

    def script_error(self, action: str, status: int, code: str, message: str = "") -> None:
        self.script(action, status, query_error(code, message, sender=status < 500))

    def received(self, action: str | None = None) -> list[Received]:
        with self._lock:
            return [r for r in self.requests if action is None or r.action == action]

    def clear(self) -> None:
        with self._lock:
            self.requests.clear()
            self._replies.clear()

    def start(self) -> ScriptedSnsServer:
        self._server.start()
        return self

    def stop(self) -> None:
        self._server.stop()


@contextmanager
def moto_sns_server() -> Iterator[MotoSnsServer]:
    with MotoSnsServer() as server:
        yield server


@contextmanager
def scripted_sns_server() -> Iterator[ScriptedSnsServer]:
    server = ScriptedSnsServer().start()
    try:
        yield server
    finally:
        server.stop()

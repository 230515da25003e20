"""A local stand-in for api.line.me: push and multicast, parsed with the SDK's own models.

    peer = LinePeer(tokens={"token-a"}); peer.start()   # peer.url -> LINE_API_BASE_URL
    peer.script(429, body={"message": "You have reached your monthly limit."})
    ... peer.requests[-1].retry_key ...
    peer.stop()

Like LINE it answers 401 to a wrong bearer token, 400 to a body the SDK models reject, and
409 (with x-line-accepted-request-id) when a retry key it already accepted comes again;
otherwise the next scripted reply, or 200 with sentMessages and an x-line-request-id.
A key counts as accepted once the peer decides on a 2xx, before any scripted delay, so a
client that times out and retries gets the 409.
"""

from __future__ import annotations

import itertools
import json
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any

from linebot.v3.messaging import MulticastRequest, PushMessageRequest

from tests.peers.http import LocalServer

PATHS = {"/v2/bot/message/push": PushMessageRequest, "/v2/bot/message/multicast": MulticastRequest}


@dataclass
class Scripted:
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: Any = None
    """dict/list -> JSON; str/bytes as is; None -> the default body for the status."""
    delay: float = 0.0
    """Seconds to wait before answering (to make the client time out)."""


@dataclass
class Received:
    method: str
    path: str
    headers: dict[str, str]
    body: Any
    retry_key: str | None
    recipients: list[str]
    request: Any = None
    """The parsed SDK request (PushMessageRequest / MulticastRequest), None if it failed."""
    status: int = 0
    """What the peer answered."""
    response_headers: dict[str, str] = field(default_factory=dict)

    @property
    def token(self) -> str | None:
        auth = self.headers.get("authorization", "")
        return auth.removeprefix("Bearer ") if auth.startswith("Bearer ") else None

    @property
    def messages(self) -> list[dict[str, Any]]:
        return list(self.body.get("messages", [])) if isinstance(self.body, dict) else []


class LinePeer:
    def __init__(self, tokens: set[str] | None = None) -> None:
        self.tokens: set[str] = set(tokens or {"test-line-token"})
        self.requests: list[Received] = []
        self.accepted: dict[str, str] = {}  # retry key -> request id
        self._queue: deque[Scripted] = deque()
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self._server: LocalServer | None = None

    # -- control ------------------------------------------------------------------------

    @property
    def url(self) -> str:
        assert self._server is not None, "peer not started"
        return self._server.origin

    def start(self) -> LinePeer:
        peer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                peer._handle(self)

            def do_GET(self) -> None:
                peer._reply(self, 404, {}, {"message": "Not found"})

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = LocalServer(Handler)
        self._server.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None

    def reset(self, tokens: set[str] | None = None) -> None:
        with self._lock:
            self.requests.clear()
            self.accepted.clear()
            self._queue.clear()
            if tokens is not None:
                self.tokens = set(tokens)

    def script(
        self,
        status: int = 200,
        body: Any = None,
        headers: dict[str, str] | None = None,
        delay: float = 0.0,
        times: int = 1,
    ) -> None:
        """Queue the next reply(ies) for requests that pass the token/body/retry-key checks."""
        with self._lock:
            for _ in range(times):
                self._queue.append(Scripted(status, dict(headers or {}), body, delay))

    # -- serving --------------------------------------------------------------------------

    def _handle(self, handler: BaseHTTPRequestHandler) -> None:
        length = int(handler.headers.get("Content-Length") or 0)
        raw = handler.rfile.read(length) if length else b""
        headers = {k.lower(): v for k, v in handler.headers.items()}
        path = handler.path.split("?", 1)[0]
        try:
            body: Any = json.loads(raw) if raw else None
        except ValueError:
            body = raw.decode("utf-8", "replace")
        retry_key = headers.get("x-line-retry-key")
        record = Received("POST", path, headers, body, retry_key, [])
        with self._lock:
            self.requests.append(record)

        model = PATHS.get(path)
        if model is None:
            return self._answer(handler, record, Scripted(404, {}, {"message": "Not found"}))
        if headers.get("authorization") not in {f"Bearer {t}" for t in self.tokens}:
            return self._answer(
                handler,
                record,
                Scripted(401, {}, {"message": "Authentication failed due to the expired token"}),
            )
        try:
            record.request = model.from_json(raw.decode("utf-8"))
        except Exception as exc:
            problem = {"message": "The request body has 1 error(s)", "details": [str(exc)[:500]]}
            return self._answer(handler, record, Scripted(400, {}, problem))
        to = record.request.to
        record.recipients = list(to) if isinstance(to, list) else [to]
        if retry_key is not None:
            try:
                uuid.UUID(retry_key)
            except ValueError:
                return self._answer(
                    handler, record, Scripted(400, {}, {"message": "Invalid retry key"})
                )

        with self._lock:
            accepted = self.accepted.get(retry_key) if retry_key else None
            reply = None if accepted else (self._queue.popleft() if self._queue else Scripted())
            request_id = str(uuid.uuid4())
            if reply is not None and 200 <= reply.status < 300 and retry_key:
                self.accepted[retry_key] = request_id
        if accepted:
            conflict = {"message": "The retry key is already accepted"}
            if model is PushMessageRequest:
                conflict["sentMessages"] = self._sent(record)  # type: ignore[assignment]
            return self._answer(
                handler,
                record,
                Scripted(409, {"x-line-accepted-request-id": accepted}, conflict),
                request_id,
            )
        assert reply is not None
        if reply.body is None and 200 <= reply.status < 300:
            reply.body = {"sentMessages": self._sent(record)} if model is PushMessageRequest else {}
        return self._answer(handler, record, reply, request_id)

    def _sent(self, record: Received) -> list[dict[str, str]]:
        return [
            {"id": str(500000000000 + next(self._ids)), "quoteToken": f"q{uuid.uuid4().hex[:16]}"}
            for _ in record.messages
        ]

    def _answer(
        self,
        handler: BaseHTTPRequestHandler,
        record: Received,
        reply: Scripted,
        request_id: str | None = None,
    ) -> None:
        record.status = reply.status
        if reply.delay:
            time.sleep(reply.delay)
        headers = {"x-line-request-id": request_id or str(uuid.uuid4()), **reply.headers}
        record.response_headers = headers
        body = reply.body if reply.body is not None else {}
        self._reply(handler, reply.status, headers, body)

    @staticmethod
    def _reply(
        handler: BaseHTTPRequestHandler, status: int, headers: dict[str, str], body: Any
    ) -> None:
        if isinstance(body, bytes):
            data = body
        elif isinstance(body, str):
            data = body.encode()
        else:
            data = json.dumps(body).encode()
        try:
            handler.send_response(status)
            handler.send_header("Content-Type", "application/json")
            handler.send_header("Content-Length", str(len(data)))
            for name, value in headers.items():
                handler.send_header(name, value)
            handler.end_headers()
            handler.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (timeout test)

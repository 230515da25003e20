"""A local Slack incoming-webhook endpoint: validates Block Kit bodies, scripted answers.

    with SlackWebhook() as slack:
        url = slack.url("T000/B000/XXXX")       # what a tenant stores as its webhook URL
        slack.script(429, {"Retry-After": "3"}, "rate_limited")
        ... send ...
        slack.received[0].body["blocks"]

Like Slack it answers 400 `invalid_payload` to a body that is not a JSON object, 400
`no_text` without a text, 400 `invalid_blocks` to blocks Slack would refuse; otherwise the
next scripted answer, else 200 `ok`.
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any

from tests.peers.http import LocalServer

KNOWN_BLOCKS = frozenset(
    {
        "actions",
        "context",
        "divider",
        "file",
        "header",
        "image",
        "input",
        "markdown",
        "rich_text",
        "section",
        "video",
    }
)
TEXT_TYPES = frozenset({"plain_text", "mrkdwn"})


def block_errors(blocks: Any) -> list[str]:
    """Why Slack would refuse these blocks (the checks that matter here), [] when fine."""
    if not isinstance(blocks, list) or not blocks:
        return ["blocks must be a non-empty list"]
    errors: list[str] = []
    if len(blocks) > 50:
        errors.append("more than 50 blocks")
    for i, block in enumerate(blocks):
        kind = block.get("type") if isinstance(block, dict) else None
        if kind not in KNOWN_BLOCKS:
            errors.append(f"block {i}: unknown type {kind!r}")
            continue
        text = block.get("text")
        if kind == "header":
            if not _text(text, {"plain_text"}, 150):
                errors.append(f"block {i}: header needs plain_text of 1-150 characters")
        elif kind == "section":
            if text is None and not block.get("fields"):
                errors.append(f"block {i}: section needs text or fields")
            elif text is not None and not _text(text, TEXT_TYPES, 3000):
                errors.append(f"block {i}: section text must be 1-3000 characters")
        elif kind == "context":
            elements = block.get("elements")
            if not isinstance(elements, list) or not 1 <= len(elements) <= 10:
                errors.append(f"block {i}: context needs 1-10 elements")
            else:
                for j, element in enumerate(elements):
                    if isinstance(element, dict) and element.get("type") == "image":
                        continue
                    if not _text(element, TEXT_TYPES, 3000):
                        errors.append(f"block {i}: context element {j} is not a text object")
    return errors


def _text(obj: Any, types: set[str] | frozenset[str], limit: int) -> bool:
    return (
        isinstance(obj, dict)
        and obj.get("type") in types
        and isinstance(obj.get("text"), str)
        and 1 <= len(obj["text"]) <= limit
    )


@dataclass
class Reply:
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: str = "ok"
    delay: float = 0.0


@dataclass
class WebhookRequest:
    path: str
    headers: dict[str, str]
    """Header names lower-cased."""
    raw: bytes
    body: Any = None
    error: str | None = None
    """Why the peer refused the body itself, None when valid."""
    status: int | None = None


class SlackWebhook:
    def __init__(self) -> None:
        self.received: list[WebhookRequest] = []
        self._scripts: deque[Reply] = deque()
        self._lock = threading.Lock()
        self._server = LocalServer(self._handler())

    @property
    def origin(self) -> str:
        return self._server.origin

    def url(self, path: str = "T0000/B0000/secretsecretsecret") -> str:
        return f"{self.origin}/services/{path}"

    def start(self) -> SlackWebhook:
        self._server.start()
        return self

    def stop(self) -> None:
        self._server.stop()

    def __enter__(self) -> SlackWebhook:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def reset(self) -> None:
        with self._lock:
            self.received.clear()
            self._scripts.clear()

    def script(
        self,
        status: int,
        headers: dict[str, str] | None = None,
        body: str = "",
        delay: float = 0.0,
    ) -> None:
        """Queue the next answer (for any webhook path)."""
        with self._lock:
            self._scripts.append(Reply(status, headers or {}, body, delay))

    def _handle(self, path: str, headers: dict[str, str], raw: bytes) -> Reply:
        record = WebhookRequest(path=path, headers=headers, raw=raw)
        with self._lock:
            self.received.append(record)
        reply = self._check(record)
        if reply is None:
            with self._lock:
                reply = self._scripts.popleft() if self._scripts else Reply()
        record.status = reply.status
        return reply

    def _check(self, record: WebhookRequest) -> Reply | None:
        def refuse(status: int, code: str, error: str) -> Reply:
            record.error = error
            return Reply(status, {"Content-Type": "text/plain"}, code)

        if not record.path.startswith("/services/"):
            return refuse(404, "no_service", f"unknown path {record.path}")
        if not record.headers.get("content-type", "").startswith("application/json"):
            return refuse(400, "invalid_payload", "content-type is not application/json")
        try:
            record.body = json.loads(record.raw)
        except ValueError:
            return refuse(400, "invalid_payload", "body is not JSON")
        if not isinstance(record.body, dict):
            return refuse(400, "invalid_payload", "body is not a JSON object")
        text = record.body.get("text")
        if not isinstance(text, str) or not text.strip():
            return refuse(400, "no_text", "no fallback text")
        if "blocks" in record.body and (errors := block_errors(record.body["blocks"])):
            return refuse(400, "invalid_blocks", "; ".join(errors))
        return None

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        peer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                headers = {k.lower(): v for k, v in self.headers.items()}
                reply = peer._handle(self.path, headers, raw)
                if reply.delay:
                    time.sleep(reply.delay)
                body = reply.body.encode()
                try:
                    self.send_response(reply.status)
                    for name, value in {"Content-Type": "text/html", **reply.headers}.items():
                        self.send_header(name, value)
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (timeout tests)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        return Handler

"""What the web app checks before any route runs: the size of a request body, the Host of
a dev page, the token of /metrics."""

from __future__ import annotations

import hmac
from urllib.parse import urlsplit

from fastapi import HTTPException, Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from config.settings import get_settings

LOCAL_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})


class BodyLimit:
    """413 for any request whose body passes `limit` bytes, declared or streamed, before a
    route reads (and parses) more than that."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", []):
            if name == b"content-length" and (not value.isdigit() or int(value) > self.limit):
                await _too_large(send, self.limit)
                return
        seen = 0

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    raise HTTPException(413, f"request body is over the {self.limit}-byte limit")
            return message

        await self.app(scope, counted, send)


async def _too_large(send: Send, limit: int) -> None:
    body = b'{"detail":"request body is over the %d-byte limit"}' % limit
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [(b"content-type", b"application/json"), (b"connection", b"close")],
        }
    )
    await send({"type": "http.response.body", "body": body})


def dev_host_only(request: Request) -> None:
    """Dev pages answer only to this machine's names and the public base URL's host: a
    page reached through another name (DNS rebinding) gets 400."""
    try:
        host = (urlsplit("//" + (request.headers.get("host") or "")).hostname or "").lower()
    except ValueError:
        host = ""
    own = (urlsplit(get_settings().public_base_url).hostname or "").lower()
    if host not in LOCAL_HOSTS and host != own:
        raise HTTPException(400, "this page answers on localhost only")


def metrics_token(request: Request) -> None:
    """Bearer NOTIFIER_METRICS_TOKEN when it is set."""
    token = get_settings().metrics_token
    if not token:
        return
    scheme, _, given = (request.headers.get("authorization") or "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip(), token):
        raise HTTPException(
            401, "a metrics token is required", headers={"WWW-Authenticate": "Bearer"}
        )

"""Small request helpers shared by the routes."""

from __future__ import annotations

import json
from typing import Any, cast

from fastapi import HTTPException, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.responses import JSONResponse, Response
from fastapi.routing import iter_route_contexts
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import compile_path


class Problem(BaseModel):
    """The body of every error response."""

    detail: str


async def read_body(request: Request, limit: int) -> bytes:
    """The raw body, refused with 413 as soon as it passes `limit` bytes (before it is all
    read into memory)."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise HTTPException(413, f"request body is over the {limit}-byte limit")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise HTTPException(413, f"request body is over the {limit}-byte limit")
        chunks.append(chunk)
    return b"".join(chunks)


def parse_json_body(raw: bytes) -> Any:
    """JSON from a request body; 400 with the parser's message when it is not JSON."""
    if not raw.strip():
        raise HTTPException(400, "empty request body: expected JSON")
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise HTTPException(400, f"malformed JSON: {exc}") from exc
    except RecursionError as exc:
        raise HTTPException(400, "malformed JSON: nested too deeply") from exc


async def http_error(request: Request, exc: Exception) -> Response:
    """FastAPI's answer to an HTTPException, except that a 405 lists in `Allow` every
    method of every route on that path (Starlette names only the first route's), included
    routers' routes too."""
    if not isinstance(exc, StarletteHTTPException) or exc.status_code != 405:
        return await http_exception_handler(request, cast(StarletteHTTPException, exc))
    allowed: set[str] = set()
    path = request.url.path
    for context in iter_route_contexts(request.app.router.routes):
        methods = getattr(context.original_route, "methods", None)
        if methods and context.path and compile_path(context.path)[0].match(path):
            allowed |= methods
    return JSONResponse(
        {"detail": exc.detail}, status_code=405, headers={"Allow": ", ".join(sorted(allowed))}
    )

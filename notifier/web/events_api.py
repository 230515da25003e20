"""POST /events: the backend's HTTP way in, the same validation and enqueueing as
`notifier.publish`, authenticated per tenant.

Status codes: 200 when every event was queued; 422 when any was rejected (the body lists
each event's outcome, and the valid ones ARE queued: resending the whole batch is safe,
events are idempotent by eventId); 400 malformed JSON or an empty batch; 401 no or bad API
key; 413 more than MAX_BATCH events or an oversized body; 503 the database is down. (With
the broker down an event is still accepted: publish stores it, and it is planned once the
broker is back.)
"""

from __future__ import annotations

import logging
from typing import Any, Literal

from fastapi import APIRouter, Depends, Header, HTTPException, Request, Response
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from config.settings import get_settings
from notifier import publish
from notifier.events import InvalidEvent
from notifier.web.auth import key_from_headers, tenant_for_key
from notifier.web.bodies import Problem, parse_json_body, read_body

log = logging.getLogger("notifier.web.events")

MAX_BATCH = 100
"""Events per request; the body limit is MAX_BATCH times NOTIFIER_MAX_PAYLOAD_BYTES."""
MAX_DEPTH = 32
"""How deeply an event's JSON may nest: far more than any event needs, and far below where
validation and serialisation run out of stack."""

router = APIRouter(tags=["events"])


class _Camel(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True)


class FieldError(_Camel):
    field: str
    message: str


class EventResult(_Camel):
    event_id: str | None = Field(
        description="The event's id (given, or the hash of the event); null when unknown."
    )
    status: Literal["queued", "rejected"]
    errors: list[FieldError] = Field(default_factory=list)


class EventsResponse(_Camel):
    queued: int
    rejected: int
    results: list[EventResult] = Field(description="One per event, in the order sent.")


def api_tenant(
    authorization: str | None = Header(default=None),
    x_api_key: str | None = Header(default=None),
) -> str:
    """The tenant of the request's API key; 401 without one or with a wrong one."""
    key = key_from_headers(authorization, x_api_key)
    tenant_id = tenant_for_key(key) if key else None
    if tenant_id is None:
        raise HTTPException(
            401,
            "a valid API key is required (Authorization: Bearer <key> or X-API-Key)",
            headers={"WWW-Authenticate": "Bearer"},
        )
    return tenant_id


def _claimed_event_id(raw: Any) -> str | None:
    event_id = raw.get("eventId") if isinstance(raw, dict) else None
    if not isinstance(event_id, str):
        return None
    try:
        event_id.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate: not echoed, the answer could not hold it
        return None
    return event_id


def shape_problem(value: Any) -> str | None:
    """What makes parsed JSON unstorable whatever its schema, walked without recursion:
    nesting over MAX_DEPTH, or a NUL character (PostgreSQL text and JSONB refuse it)."""
    depth, level = 0, [value]
    while level:
        depth += 1
        if depth > MAX_DEPTH:
            return f"nested over {MAX_DEPTH} levels deep"
        children: list[Any] = []
        for item in level:
            if isinstance(item, dict):
                if any("\x00" in key for key in item):
                    return "a key contains a NUL character"
                children.extend(item.values())
            elif isinstance(item, list):
                children.extend(item)
            elif isinstance(item, str) and "\x00" in item:
                return "a value contains a NUL character"
        level = children
    return None


def submit_events(items: list[Any], tenant_id: str) -> list[EventResult]:
    """Publish each event of the key's tenant; an event naming another tenant is rejected
    without looking that tenant up (its existence is none of the caller's business)."""
    results: list[EventResult] = []
    for raw in items:
        claimed = raw.get("tenantId") if isinstance(raw, dict) else None
        if isinstance(claimed, str) and claimed != tenant_id:
            errors = [
                FieldError(
                    field="tenantId",
                    message=f"this API key sends events of tenant {tenant_id!r} only",
                )
            ]
            results.append(
                EventResult(event_id=_claimed_event_id(raw), status="rejected", errors=errors)
            )
            continue
        problem = shape_problem(raw)
        if problem:
            errors = [FieldError(field="event", message=problem)]
            results.append(
                EventResult(event_id=_claimed_event_id(raw), status="rejected", errors=errors)
            )
            continue
        try:
            event_id = publish(raw)
        except InvalidEvent as exc:
            errors = [FieldError(**error) for error in exc.errors]
            results.append(
                EventResult(event_id=_claimed_event_id(raw), status="rejected", errors=errors)
            )
        else:
            results.append(EventResult(event_id=event_id, status="queued"))
    return results


_EVENT = {"$ref": "#/components/schemas/Event"}
REQUEST_BODY = {
    "required": True,
    "content": {
        "application/json": {
            "schema": {
                "oneOf": [
                    _EVENT,
                    {"type": "array", "items": _EVENT, "minItems": 1, "maxItems": MAX_BATCH},
                ]
            }
        }
    },
}


@router.post(
    "/events",
    summary="Publish one event or a batch of up to 100",
    response_model=EventsResponse,
    responses={
        400: {"model": Problem, "description": "Malformed JSON or an empty batch"},
        401: {"model": Problem, "description": "No API key, or a wrong one"},
        413: {"model": Problem, "description": "Over 100 events, or the body is too large"},
        422: {"model": EventsResponse, "description": "At least one event was rejected"},
        503: {"model": Problem, "description": "The database is unavailable"},
    },
    openapi_extra={"requestBody": REQUEST_BODY},
)
async def post_events(
    request: Request, response: Response, tenant_id: str = Depends(api_tenant)
) -> EventsResponse:
    raw = await read_body(request, get_settings().max_payload_bytes * MAX_BATCH)
    payload = parse_json_body(raw)
    items = payload if isinstance(payload, list) else [payload]
    if not items:
        raise HTTPException(400, f"an empty batch: send 1 to {MAX_BATCH} events")
    if len(items) > MAX_BATCH:
        raise HTTPException(413, f"a batch holds at most {MAX_BATCH} events; got {len(items)}")
    results = await run_in_threadpool(submit_events, items, tenant_id)
    queued = sum(1 for r in results if r.status == "queued")
    response.status_code = 200 if queued == len(results) else 422
    log.info(
        "events received",
        extra={"tenant": tenant_id, "count": len(results), "status": f"{queued} queued"},
    )
    return EventsResponse(queued=queued, rejected=len(results) - queued, results=results)

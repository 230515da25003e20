"""POST /events: the backend's HTTP way in, the same validation and enqueueing as
`notifier.publish`, authenticated per tenant.

The API key's tenant is the only tenant: an event is validated first, and one whose
validated `tenantId` is another tenant's is rejected before anything about that tenant is
looked up.

Status codes: 200 when every event was queued or is an exact duplicate of one already
taken; otherwise, the first that applies: 422 an event is invalid (its schema says no), 403
an event names another tenant than the key's, 409 an event reuses an eventId with other
content (answered `duplicate`, and dropped) or is sent to a person the directory does not
have. Those three bodies list each event's outcome, and the valid events ARE queued:
resending the whole batch is safe, events are idempotent by eventId. 400 malformed JSON or
an empty batch; 401 no or bad API key; 422 more than MAX_BATCH events; 413 an oversized body;
503 the database is down. (With the broker down an event is still accepted: publish stores
it, and it is planned once the broker is back.)
"""

from __future__ import annotations

import logging
from typing import Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Request, Response, Security
from fastapi.concurrency import run_in_threadpool
from fastapi.security import APIKeyHeader, HTTPBearer
from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from config.settings import get_settings
from notifier import publish_outcome
from notifier.events import InvalidEvent, Refusal
from notifier.web.auth import key_from_headers, tenant_for_key
from notifier.web.bodies import Problem, parse_json_body, read_body

log = logging.getLogger("notifier.web.events")

MAX_BATCH = 100
"""Events per request; the body is at most NOTIFIER_MAX_REQUEST_BYTES (and MAX_BATCH times
NOTIFIER_MAX_PAYLOAD_BYTES)."""
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
    status: Literal["queued", "duplicate", "rejected"] = Field(
        description="duplicate: the eventId was taken already (the event is not sent again)"
    )
    errors: list[FieldError] = Field(default_factory=list)
    # Why it was rejected (the response's status code), not part of the answer.
    refusal: Refusal | None = Field(default=None, exclude=True)


class EventsResponse(_Camel):
    queued: int
    duplicate: int
    rejected: int
    results: list[EventResult] = Field(description="One per event, in the order sent.")


BEARER = HTTPBearer(auto_error=False, description="Authorization: Bearer <the tenant's API key>")
API_KEY = APIKeyHeader(
    name="X-API-Key", auto_error=False, description="X-API-Key: <the tenant's API key>"
)


_BEARER_PARAM = Security(BEARER)
_API_KEY_PARAM = Security(API_KEY)


def api_tenant(request: Request, _bearer: Any = _BEARER_PARAM, _key: Any = _API_KEY_PARAM) -> str:
    """The tenant of the request's API key (either header: the document's two security
    schemes); 401 without one or with a wrong one."""
    key = key_from_headers(request.headers.get("authorization"), request.headers.get("x-api-key"))
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
    if not isinstance(event_id, str) or "\x00" in event_id:  # NUL: not echoed either
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
    """Publish each event as the key's tenant (see the module's docstring)."""
    results: list[EventResult] = []
    for raw in items:
        problem = shape_problem(raw)
        if problem:
            errors = [FieldError(field="event", message=problem)]
            results.append(
                EventResult(event_id=_claimed_event_id(raw), status="rejected", errors=errors)
            )
            continue
        try:
            taken = publish_outcome(raw, tenant_id=tenant_id)
        except InvalidEvent as exc:
            errors = [FieldError(**error) for error in exc.errors]
            results.append(
                EventResult(
                    event_id=_claimed_event_id(raw),
                    status="rejected",
                    errors=errors,
                    refusal=exc.refusal,
                )
            )
        else:
            status: Literal["queued", "duplicate"] = (
                "queued" if taken.event_pk is not None else "duplicate"
            )
            errors = [FieldError(**error) for error in taken.errors]
            results.append(EventResult(event_id=taken.event_id, status=status, errors=errors))
    return results


def _status_code(results: list[EventResult]) -> int:
    refusals = {r.refusal or "invalid" for r in results if r.status == "rejected"}
    if "invalid" in refusals:
        return 422
    if "forbidden" in refusals:
        return 403
    if "conflict" in refusals or any(r.status == "duplicate" and r.errors for r in results):
        return 409
    return 200


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
        403: {
            "model": EventsResponse,
            "description": "An event names another tenant than the API key's (the others"
            " are taken as with 200)",
        },
        409: {
            "model": EventsResponse,
            "description": "An event reuses an eventId with other content (it is dropped), or"
            " is sent to a person the directory does not have",
        },
        413: {"model": Problem, "description": "The body is too large"},
        422: {
            "model": EventsResponse | Problem,
            "description": "At least one event is invalid (the others are taken as with 200);"
            " or over 100 events (Problem, nothing taken)",
        },
        503: {"model": Problem, "description": "The database is unavailable"},
    },
    openapi_extra={"requestBody": REQUEST_BODY},
)
async def post_events(
    request: Request, response: Response, tenant_id: str = Depends(api_tenant)
) -> EventsResponse:
    settings = get_settings()
    raw = await read_body(
        request, min(settings.max_request_bytes, settings.max_payload_bytes * MAX_BATCH)
    )
    payload = await run_in_threadpool(parse_json_body, raw)  # a large body parses off the loop
    items = payload if isinstance(payload, list) else [payload]
    if not items:
        raise HTTPException(400, f"an empty batch: send 1 to {MAX_BATCH} events")
    if len(items) > MAX_BATCH:
        raise HTTPException(422, f"a batch holds at most {MAX_BATCH} events; got {len(items)}")
    results = await run_in_threadpool(submit_events, items, tenant_id)
    counts = {s: sum(1 for r in results if r.status == s) for s in ("queued", "duplicate")}
    response.status_code = _status_code(results)
    log.info(
        "events received",
        extra={"tenant": tenant_id, "count": len(results), "status": f"{counts['queued']} queued"},
    )
    return EventsResponse(
        queued=counts["queued"],
        duplicate=counts["duplicate"],
        rejected=len(results) - sum(counts.values()),
        results=results,
    )

"""Delivery status over HTTP, with the tenant's API key: `GET /events/{eventId}` (the event
and every delivery of it) and `GET /users/{userId}/deliveries` (a person's activity log, a
page at a time). Another tenant's event or person answers 404, like one that does not exist.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Path, Query
from fastapi.concurrency import run_in_threadpool
from pydantic import AwareDatetime, BaseModel, BeforeValidator, ConfigDict, Field
from pydantic.alias_generators import to_camel

from notifier import directory
from notifier.events import DATE_TIME_PATTERN, rfc3339
from notifier.status import event_report, user_deliveries
from notifier.web.directory_api import NOT_FOUND, READ, ValidationProblem
from notifier.web.events_api import FieldError, api_tenant

router = APIRouter(tags=["status"])

MAX_PAGE = 500


class _Camel(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, serialize_by_alias=True)


class DeliveryReport(_Camel):
    delivery_id: int
    recipient: str = Field(description="The person's id")
    channel: str
    priority: str
    status: str = Field(
        description="queued, sending, deferred, batched, sent, failed, suppressed or skipped"
    )
    attempts: int
    reason: str | None = Field(description="Why it is not sent (yet), or what went wrong")
    provider_message_id: str | None
    not_before: str | None = Field(description="Held until then (quiet hours)")
    sent_at: str | None
    created_at: str | None
    updated_at: str | None
    clicks: int = Field(description="Clicks on tracked links of this message")


class EventReport(_Camel):
    event_id: str
    event_type: str
    status: str = Field(description="accepted, duplicate or rejected")
    priority: str | None
    errors: list[FieldError]
    created_at: str | None
    planned_at: str | None = Field(description="When its deliveries were created")
    deliveries: list[DeliveryReport]


class ActivityItem(DeliveryReport):
    event_id: str
    event_type: str


class ActivityPage(_Camel):
    deliveries: list[ActivityItem]
    next: int | None = Field(description="Pass as `after` for the next page; null at the end")


@router.get(
    "/events/{eventId}",
    summary="An event of this tenant and every delivery of it",
    response_model=EventReport,
    responses=READ,
)
async def get_event(
    event_id: str = Path(alias="eventId", min_length=1, max_length=200),
    tenant_id: str = Depends(api_tenant),
) -> Any:
    report = await run_in_threadpool(event_report, tenant_id, event_id)
    if report is None:
        raise HTTPException(404, NOT_FOUND)
    return report


@router.get(
    "/users/{userId}/deliveries",
    summary="A person's deliveries, oldest first, a page at a time",
    response_model=ActivityPage,
    responses={**READ, 422: {"model": ValidationProblem, "description": "A bad parameter"}},
)
async def get_user_deliveries(
    user_id: str = Path(alias="userId", min_length=1, max_length=128),
    since: Annotated[
        AwareDatetime | None,
        Query(
            description="Only deliveries created since (RFC 3339)",
            json_schema_extra={"pattern": DATE_TIME_PATTERN},
        ),
        BeforeValidator(rfc3339),
    ] = None,
    after: Annotated[
        int | None, Query(ge=0, le=2**63 - 1, description="The `next` of the previous page")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 50,
    tenant_id: str = Depends(api_tenant),
) -> Any:
    if await run_in_threadpool(directory.get_user, tenant_id, user_id) is None:
        raise HTTPException(404, NOT_FOUND)
    return await run_in_threadpool(
        lambda: user_deliveries(tenant_id, user_id, since=since, after=after, limit=limit)
    )

"""Outbound webhook endpoints of the API key's tenant: `POST /webhook-endpoints` (answers
the endpoint with its `whsec_` secret, shown only then), `GET /webhook-endpoints`,
`DELETE /webhook-endpoints/{id}`. Messages are signed per Standard Webhooks."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, HTTPException, Path, Response
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from notifier import outbound_webhooks
from notifier.web.directory_api import AUTH, NOT_FOUND, READ, WRITE, ValidationProblem
from notifier.web.events_api import api_tenant

router = APIRouter(tags=["webhook-endpoints"])

MessageType = outbound_webhooks.MessageType
PORT = r"(?:[1-9][0-9]{0,3}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5])"
ENDPOINT_URL = (
    rf"^https?://[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?(?::{PORT})?"
    r"(?:[/?#][!#-;=?-\[\]_a-z~]*)?$"
)
"""An endpoint's URL syntax (whether its host is allowed is the outbound URL policy's say)."""


class _Camel(BaseModel):
    model_config = ConfigDict(
        extra="forbid", alias_generator=to_camel, validate_by_name=False, serialize_by_alias=True
    )


class NewEndpoint(_Camel):
    url: str = Field(
        min_length=1,
        max_length=2048,
        pattern=ENDPOINT_URL,
        description="https, on a public address (http and private addresses only where "
        "NOTIFIER_ALLOW_PRIVATE_URLS=1)",
    )
    event_types: list[MessageType] | None = Field(
        None, max_length=len(outbound_webhooks.MESSAGE_TYPES), description="null: every type"
    )


class Endpoint(_Camel):
    id: str
    url: str
    event_types: list[MessageType] | None
    created_at: str


class CreatedEndpoint(Endpoint):
    secret: str = Field(description="whsec_...: verify each message's signature with it")


@router.post(
    "/webhook-endpoints",
    summary="Register a webhook endpoint",
    status_code=201,
    response_model=CreatedEndpoint,
    responses={
        **WRITE,
        409: {
            "model": ValidationProblem,
            "description": f"The tenant has {outbound_webhooks.MAX_ENDPOINTS} endpoints already",
        },
    },
)
async def create(body: Annotated[NewEndpoint, Body()], tenant_id: str = Depends(api_tenant)) -> Any:
    return await run_in_threadpool(
        outbound_webhooks.create_endpoint, tenant_id, body.url, body.event_types
    )


@router.get(
    "/webhook-endpoints",
    summary="This tenant's webhook endpoints (without their secrets)",
    response_model=list[Endpoint],
    responses=AUTH,
)
async def list_all(tenant_id: str = Depends(api_tenant)) -> Any:
    return await run_in_threadpool(outbound_webhooks.list_endpoints, tenant_id)


@router.delete(
    "/webhook-endpoints/{id}",
    summary="Remove a webhook endpoint",
    status_code=204,
    response_class=Response,
    responses={**READ, 204: {"description": "Removed"}},
)
async def remove(
    endpoint_id: str = Path(alias="id"), tenant_id: str = Depends(api_tenant)
) -> Response:
    if not await run_in_threadpool(outbound_webhooks.delete_endpoint, tenant_id, endpoint_id):
        raise HTTPException(404, NOT_FOUND)
    return Response(status_code=204)

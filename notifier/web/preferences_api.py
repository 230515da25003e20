"""A person's preferences over HTTP, with the tenant's API key: `GET /users/{userId}/preferences`
and `PUT /users/{userId}/preferences` (replaces them all). Another tenant's person answers
404, like one that does not exist. Every change (here, on `PUT`/`PATCH /users/{userId}`, on
the preference center or by a one-click unsubscribe) is announced to the tenant's webhook
endpoints as a `preferences.updated` message.

Status codes: 200 read or replaced, 401 no or bad API key, 404 no such person in the key's
tenant, 422 invalid body (every field error listed), 400 a body that is not JSON, 413 an
oversized body, 503 the database is down.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, HTTPException, Path
from fastapi.concurrency import run_in_threadpool

from notifier import preferences
from notifier.preferences import Change, Preferences
from notifier.web.directory_api import NOT_FOUND, READ, WRITE
from notifier.web.events_api import api_tenant

log = logging.getLogger("notifier.web.preferences")

router = APIRouter(tags=["directory"])


def announce(changes: Sequence[Change | None]) -> None:
    """Send the `preferences.updated` messages of committed changes (none without an
    endpoint that takes them: no broker is touched then)."""
    messages = preferences.webhook_messages([c for c in changes if c is not None])
    if not messages:
        return
    from tasks import enqueue  # late: only a change with endpoints configures the Celery app

    enqueue.send_webhooks(messages)


@router.get(
    "/users/{userId}/preferences",
    summary="A person's notification preferences",
    response_model=Preferences,
    response_model_exclude_none=True,
    responses=READ,
    operation_id="get_user_preferences",
)
async def get_preferences(
    user_id: str = Path(alias="userId", description="The user's id"),
    tenant_id: str = Depends(api_tenant),
) -> Any:
    found = await run_in_threadpool(preferences.read, tenant_id, user_id)
    if found is None:
        raise HTTPException(404, NOT_FOUND)
    return found


@router.put(
    "/users/{userId}/preferences",
    summary="Replace a person's notification preferences",
    response_model=Preferences,
    response_model_exclude_none=True,
    responses={**READ, **WRITE},
    operation_id="put_user_preferences",
)
async def put_preferences(
    body: Annotated[Preferences, Body()],
    user_id: str = Path(alias="userId", description="The user's id"),
    tenant_id: str = Depends(api_tenant),
) -> Any:
    done = await run_in_threadpool(preferences.replace, tenant_id, user_id, body, "api")
    if done is None:
        raise HTTPException(404, NOT_FOUND)
    stored, change = done
    await run_in_threadpool(announce, [change])
    return stored

"""The directory over HTTP, with the tenant's API key: one person, membership, course or
booking at a time (`/users/{userId}`, `/memberships/{id}`, `/courses/{id}`,
`/bookings/{id}`), or a whole document (`POST /directory`). The tenant is always the key's:
nothing in a path or body names one, and another tenant's records answer 404 like records
that do not exist.

Status codes: 200 read or replaced, 201 created, 204 deleted, 401 no or bad API key, 404 no
such record in the key's tenant, 422 invalid body (every field error listed), 409 a valid
record that refers to a user or course the tenant does not have, 400 a body that is not
JSON, 413 a body over NOTIFIER_MAX_REQUEST_BYTES, 503 the database is down.

(No `from __future__ import annotations` here: the routes' body types are resolved when the
routes are made, from the kind they serve.)
"""

from collections.abc import Callable
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, HTTPException, Path, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, StrictBool
from pydantic.alias_generators import to_camel

from notifier import directory, preferences
from notifier.directory import (
    ADDRESSES_DESCRIPTION,
    EMAIL_SCHEMA,
    Address,
    BookingFields,
    BookingRecord,
    CourseFields,
    CourseRecord,
    MembershipFields,
    MembershipRecord,
    PushSubscriptionDoc,
    TenantDirectory,
    UserFields,
    UserRecord,
    address_schema,
)
from notifier.web.bodies import Problem
from notifier.web.events_api import FieldError, api_tenant

router = APIRouter(tags=["directory"])


class ValidationProblem(Problem):
    """A request whose body (or parameters) did not validate: every error listed."""

    errors: list[FieldError] = Field(default_factory=list)


def _preferences_patch(schema: dict[str, Any]) -> None:
    """A patch's preferences are merged into the stored ones and the result validated as
    Preferences: the document says a patch holds Preferences (or null), where an entry of
    `categories` or `eventTypes` may also be null (merged, a null removes it)."""
    patch = preferences.Preferences.model_json_schema(ref_template="#/components/schemas/{model}")
    patch.pop("$defs", None)
    for section in patch["properties"].values():
        for option in section.get("anyOf", [section]):
            entry = option.get("additionalProperties")
            if isinstance(entry, dict):
                option["additionalProperties"] = {"anyOf": [entry, {"type": "null"}]}
    schema.clear()
    schema["anyOf"] = [patch, {"type": "null"}]


class UserPatch(BaseModel):
    """A JSON Merge Patch (RFC 7386) of a person: the fields given replace the stored ones
    (`preferences` merges key by key), a null removes a field (back to its default)."""

    model_config = ConfigDict(extra="forbid", alias_generator=to_camel, validate_by_name=False)

    name: str | None = Field(None, max_length=200)
    role: str | None = Field(None, max_length=32)
    email: str | None = Field(None, max_length=320, json_schema_extra=EMAIL_SCHEMA)
    phone: str | None = Field(None, max_length=32)
    line_user_id: str | None = Field(None, max_length=64)
    addresses: dict[str, Address | None] | None = Field(
        None, description=ADDRESSES_DESCRIPTION, json_schema_extra=address_schema
    )
    locale: str | None = Field(None, max_length=16)
    timezone: str | None = Field(None, max_length=64)
    active: StrictBool | None = None
    web_push_subscriptions: list[PushSubscriptionDoc] | None = None
    preferences: dict[str, Any] | None = Field(None, json_schema_extra=_preferences_patch)


class DirectoryResult(BaseModel):
    changed: dict[str, int] = Field(description="Rows created or changed, per kind.")


AUTH: dict[int | str, dict[str, Any]] = {
    401: {"model": Problem, "description": "No API key, or a wrong one"},
    503: {"model": Problem, "description": "The database is unavailable"},
}
READ = {**AUTH, 404: {"model": Problem, "description": "No such record in this tenant"}}
WRITE = {
    **AUTH,
    400: {"model": Problem, "description": "The body is not JSON"},
    413: {"model": Problem, "description": "The body is over NOTIFIER_MAX_REQUEST_BYTES"},
    422: {"model": ValidationProblem, "description": "The body is invalid"},
}
REFERS: dict[int | str, dict[str, Any]] = {
    409: {
        "model": ValidationProblem,
        "description": "Refers to a user or course this tenant does not have",
    }
}
NOT_FOUND = "not found"


async def request_invalid(request: Request, exc: Exception) -> JSONResponse:
    """422 with every error as {field, message}, for a body or parameter that did not
    validate (FastAPI's RequestValidationError) or a record the directory refused."""
    if isinstance(exc, RequestValidationError):
        errors = [
            {"field": ".".join(map(str, e["loc"])), "message": e["msg"]} for e in exc.errors()
        ]
    else:
        errors = list(getattr(exc, "errors", []))
    refusal = getattr(exc, "refusal", "invalid")
    detail = {"conflict": "refers to records that do not exist", "forbidden": "refused"}
    problem = ValidationProblem(
        detail=detail.get(refusal, "invalid request"), errors=[FieldError(**e) for e in errors]
    )
    return JSONResponse(problem.model_dump(), status_code=REFUSAL_STATUS[refusal])


REFUSAL_STATUS = {"invalid": 422, "forbidden": 403, "conflict": 409}


def _found(value: dict[str, Any] | None) -> dict[str, Any]:
    if value is None:
        raise HTTPException(404, NOT_FOUND)
    return value


def _record_routes(
    path: str,
    param: str,
    name: str,
    fields: type[BaseModel],
    record: type[BaseModel],
    get: Callable[[str, str], dict[str, Any] | None],
    put: Callable[[str, str, Any], bool],
    remove: Callable[[str, str], bool],
    refers: bool = False,
) -> None:
    """GET, PUT and DELETE of one kind of directory record, always in the key's tenant."""
    record_id_param = Path(
        alias=param, min_length=1, max_length=128, description=f"The {name}'s id"
    )

    async def read(record_id: str = record_id_param, tenant_id: str = Depends(api_tenant)) -> Any:
        return _found(await run_in_threadpool(get, tenant_id, record_id))

    async def write(
        response: Response,
        body: Annotated[fields, Body()],  # type: ignore[valid-type]
        record_id: str = record_id_param,
        tenant_id: str = Depends(api_tenant),
    ) -> Any:
        created = await run_in_threadpool(put, tenant_id, record_id, body)
        response.status_code = 201 if created else 200
        return _found(await run_in_threadpool(get, tenant_id, record_id))

    async def erase(
        record_id: str = record_id_param, tenant_id: str = Depends(api_tenant)
    ) -> Response:
        if not await run_in_threadpool(remove, tenant_id, record_id):
            raise HTTPException(404, NOT_FOUND)
        return Response(status_code=204)

    router.add_api_route(
        path,
        read,
        methods=["GET"],
        summary=f"Read one {name}",
        response_model=record,
        responses=READ,
        operation_id=f"get_{name}",
    )
    router.add_api_route(
        path,
        write,
        methods=["PUT"],
        summary=f"Create or replace one {name}",
        response_model=record,
        status_code=200,
        responses={
            **WRITE,
            **(REFERS if refers else {}),
            201: {"model": record, "description": "Created"},
        },
        operation_id=f"put_{name}",
    )
    router.add_api_route(
        path,
        erase,
        methods=["DELETE"],
        summary=f"Delete one {name}",
        status_code=204,
        response_class=Response,
        responses={**READ, 204: {"description": "Deleted"}},
        operation_id=f"delete_{name}",
    )


def _put_user(tenant_id: str, user_id: str, fields: UserFields) -> bool:
    """`directory.put_user`, announcing a change of an existing person's preferences."""
    from notifier.web.preferences_api import announce

    before = preferences.read(tenant_id, user_id)
    created = directory.put_user(tenant_id, user_id, fields)
    if before is not None:
        after = fields.preferences.stored()
        announce([preferences.change_of(tenant_id, user_id, before, after, "directory")])
    return created


def _patch_user(tenant_id: str, user_id: str, changes: dict[str, Any]) -> dict[str, Any] | None:
    """`directory.patch_user`, announcing a change of the person's preferences."""
    from notifier.web.preferences_api import announce

    before = preferences.read(tenant_id, user_id)
    after = directory.patch_user(tenant_id, user_id, changes)
    if before is not None and after is not None:
        announce(
            [preferences.change_of(tenant_id, user_id, before, after["preferences"], "directory")]
        )
    return after


_record_routes(
    "/users/{userId}",
    "userId",
    "user",
    UserFields,
    UserRecord,
    directory.get_user,
    _put_user,
    directory.delete_user,
)
_record_routes(
    "/memberships/{id}",
    "id",
    "membership",
    MembershipFields,
    MembershipRecord,
    directory.get_membership,
    directory.put_membership,
    directory.delete_membership,
    refers=True,
)
_record_routes(
    "/courses/{id}",
    "id",
    "course",
    CourseFields,
    CourseRecord,
    directory.get_course,
    directory.put_course,
    directory.delete_course,
)
_record_routes(
    "/bookings/{id}",
    "id",
    "booking",
    BookingFields,
    BookingRecord,
    directory.get_booking,
    directory.put_booking,
    directory.delete_booking,
    refers=True,
)

MERGE_PATCH: dict[str, Any] = {
    "required": True,
    "content": {
        media: {"schema": {"$ref": "#/components/schemas/UserPatch"}}
        for media in ("application/merge-patch+json", "application/json")
    },
}


@router.patch(
    "/users/{userId}",
    summary="Change some fields of one user (JSON Merge Patch)",
    response_model=UserRecord,
    responses={**READ, **WRITE},
    operation_id="patch_user",
    openapi_extra={"requestBody": MERGE_PATCH},
)
async def patch_user(
    patch: Annotated[UserPatch, Body(media_type="application/merge-patch+json")],
    record_id: str = Path(
        alias="userId", min_length=1, max_length=128, description="The user's id"
    ),
    tenant_id: str = Depends(api_tenant),
) -> Any:
    changes = patch.model_dump(by_alias=True, exclude_unset=True)
    return _found(await run_in_threadpool(_patch_user, tenant_id, record_id, changes))


@router.post(
    "/directory",
    summary="Upsert a directory document of this tenant (the same document twice changes nothing)",
    response_model=DirectoryResult,
    responses={**WRITE, **REFERS},
)
async def post_directory(
    document: TenantDirectory, tenant_id: str = Depends(api_tenant)
) -> DirectoryResult:
    changed = await run_in_threadpool(
        directory.import_document, document.model_dump(by_alias=True), tenant_id=tenant_id
    )
    return DirectoryResult(changed=changed)

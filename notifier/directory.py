"""Who can be reached and how: the directory import (bulk, idempotent upserts), one record
at a time for the HTTP API, and the lookups the pipeline makes. Every query is scoped by
tenant."""

from __future__ import annotations

import datetime as dt
import io
import queue
import re
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import IO, Annotated, Any, Literal, cast

import psycopg
from email_validator import EmailNotValidError, validate_email
from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    Field,
    StrictBool,
    ValidationError,
    field_serializer,
    field_validator,
    model_validator,
)
from pydantic.alias_generators import to_camel
from sqlalchemy import (
    Select,
    Table,
    and_,
    delete,
    func,
    select,
    text,
    update,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from channels.registry import person_declarations
from config.routing import ADMIN_ROLES, STAFF_ROLES
from notifier.db import session_scope
from notifier.events import (
    DATE_PATTERN,
    DATE_TIME_PATTERN,
    InvalidEvent,
    integral,
    iso_date,
    rfc3339,
)
from notifier.jsonstream import MalformedDocument, document_items, json_lines_items, section_items
from notifier.models import (
    Booking,
    Course,
    Delivery,
    Membership,
    OutboxMessage,
    Tenant,
    User,
    WebPushSubscription,
    utcnow,
)
from notifier.preferences import WIRE_CONFIG, Preferences, clean
from notifier.selection import Person
from notifier.upsert import upsert_rows
from notifier.urlpolicy import BlockedURL, Purpose, check_url

MAX_ERRORS = 50
"""An import stops collecting errors after this many (and writes nothing)."""
BATCH_SIZE = 5000
"""Rows per upsert statement."""


def _storable(value: Any) -> Any:
    """Refuse what PostgreSQL cannot store whatever the column: a NUL character, in a
    value or a key, at any depth (walked without recursion)."""
    level = [value]
    while level:
        children: list[Any] = []
        for item in level:
            if isinstance(item, str):
                if "\x00" in item:
                    raise ValueError("contains a NUL character")
            elif isinstance(item, dict):
                children.extend(item.keys())
                children.extend(item.values())
            elif isinstance(item, list):
                children.extend(item)
        level = children
    return value


class _Doc(BaseModel):
    """camelCase on the wire only; an unknown field is an error."""

    model_config = WIRE_CONFIG


class _Stored(_Doc):
    """A record stored as a row: nothing in it, at any depth, may hold a NUL (one walk of
    the raw input, before the fields are validated)."""

    @model_validator(mode="before")
    @classmethod
    def _no_nul(cls, value: Any) -> Any:
        return _storable(value)


Id = Annotated[str, Field(min_length=1, max_length=128)]


def _allowed_url(purpose: Purpose) -> AfterValidator:
    """A URL field that follows the outbound URL policy (checked again at each send)."""

    def check(url: str) -> str:
        try:
            check_url(url, purpose)
        except BlockedURL as exc:
            raise ValueError(str(exc)) from None
        return url

    return AfterValidator(check)


URL_SYNTAX = r"^https?://[A-Za-z0-9.-]+(:[1-9][0-9]{0,3})?(/[!-~]*)?$"
"""What the policy can take, as the OpenAPI document says it (whether the host is allowed
is the policy's to say)."""
SlackWebhookURL = Annotated[
    str, Field(max_length=2048, json_schema_extra={"pattern": URL_SYNTAX}), _allowed_url("slack")
]
PushEndpoint = Annotated[
    str,
    Field(min_length=1, max_length=1024, json_schema_extra={"pattern": URL_SYNTAX}),
    _allowed_url("web_push"),
]


def _utc(value: dt.datetime) -> dt.datetime:
    try:
        return value.astimezone(dt.UTC)
    except OverflowError as exc:
        raise ValueError("out of range once converted to UTC") from exc


def _iso_text(value: Any) -> Any:
    """Dates and times come as RFC 3339 text (pydantic would also take a number); a date or
    datetime given in Python is taken as it is."""
    return value if isinstance(value, dt.date) else rfc3339(value)


def _iso_date(value: Any) -> Any:
    return value if isinstance(value, dt.date) else iso_date(value)


AwareTime = Annotated[
    AwareDatetime,
    Field(json_schema_extra={"pattern": DATE_TIME_PATTERN}),
    BeforeValidator(_iso_text),
    AfterValidator(_utc),
]
IsoDate = Annotated[
    dt.date, Field(json_schema_extra={"pattern": DATE_PATTERN}), BeforeValidator(_iso_date)
]
Integer = Annotated[int, BeforeValidator(integral)]
"""A JSON integer (7 or 7.0, as JSON Schema counts them), never true or "7"."""


class TenantDoc(_Stored):
    id: Id
    name: str = Field(max_length=200)
    timezone: str = Field("UTC", max_length=64)
    locale: str = Field("en", max_length=16)
    slack_webhook_url: SlackWebhookURL | None = None
    line_channel_access_token: str | None = None
    branding: dict[str, Any] = Field(default_factory=dict)
    quiet_hours_policy: str | None = Field(default=None, pattern="^(defer|drop)$")
    critical_ignores_opt_outs: StrictBool | None = Field(
        default=None,
        description="Critical events skip people's category and event-type opt-outs "
        "(null: true); false: they follow them too",
    )
    preference_link_channels: list[Literal["line", "sms"]] | None = Field(
        default=None,
        max_length=2,
        description="Text channels whose messages end with a preference center link "
        "(email always has one in its footer)",
    )


EMAIL_PATTERN = (
    r"^(?!.*\.(?:[Aa][Rr][Pp][Aa]|[Ii][Nn][Vv][Aa][Ll][Ii][Dd]|[Ll][Oo][Cc][Aa][Ll]"
    r"|[Ll][Oo][Cc][Aa][Ll][Hh][Oo][Ss][Tt]|[Oo][Nn][Ii][Oo][Nn]|[Tt][Ee][Ss][Tt])$)"
    r"[^\s@]{1,64}@[^\s@]+\.[^\s@]+$"
)
"""What the address parser takes, as far as a pattern says it beside `format: email`: one
@, a dot in the domain, and no special-use top-level domain (.test, .local, .invalid...)."""
_EMAIL = re.compile(EMAIL_PATTERN.removesuffix("$"))
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
PLAIN_EMAIL = re.compile(
    r"(?=[^@]{1,64}@)[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*"
    rf"@(?:{_LABEL}\.)+[A-Za-z]{{2,63}}"
)
"""A plain ASCII address (dot-atom @ host names, an alphabetic top-level domain), the shape
nearly every address has: the address parser takes every one of them (short enough, no
IDNA label, no special-use domain), so it is not asked (it costs a quarter of an import)."""
SPECIAL_USE = frozenset({"arpa", "invalid", "local", "localhost", "onion", "test"})


def plain_email(value: str) -> bool:
    if len(value) > 254 or not PLAIN_EMAIL.fullmatch(value):
        return False
    domain = value.rpartition("@")[2].lower()
    labels = domain.split(".")
    return (
        len(domain) <= 253
        and labels[-1] not in SPECIAL_USE
        and not any(label[2:4] == "--" for label in labels)  # xn-- and other ACE-like labels
    )


EMAIL_SCHEMA: dict[str, Any] = {
    "anyOf": [
        {"type": "string", "format": "email", "maxLength": 320, "pattern": EMAIL_PATTERN},
        {"const": "", "description": "no email address"},
        {"type": "null"},
    ]
}


class PushKeys(_Doc):
    p256dh: str = Field(max_length=255, alias="p256dh")
    auth: str = Field(max_length=255)


class PushSubscriptionDoc(_Doc):
    endpoint: PushEndpoint
    keys: PushKeys


ADDRESS_FIELDS = {"email": "email", "phone": "sms", "line_user_id": "line"}
"""The document's own fields for the addresses of the first channels, and their channel:
stored, like every channel's address, in the person's `addresses` under the channel."""
Address = Annotated[str, Field(min_length=1, max_length=1024)]


def _address_channels() -> list[str]:
    """The channels that reach a person at an address of their own, but those with a field
    of the document (which checks its address: one email address, not a list)."""

    fields = set(ADDRESS_FIELDS.values())
    return [c for c, cls in person_declarations() if cls.audience == "person" and c not in fields]


def _known_channels(value: dict[str, Any]) -> dict[str, Any]:
    for channel in value:
        if channel not in _address_channels():
            raise ValueError(f"{channel!r} is not a channel with a person's address")
    return value


def address_schema(schema: dict[str, Any]) -> None:
    """The channels as the schema's property names (asked of the registry when the schema
    is generated, not when this module is imported)."""
    channels = _address_channels()
    if channels:
        schema["propertyNames"] = {"enum": channels}
    else:  # every channel with a person's address has a field of its own
        schema["maxProperties"] = 0


ADDRESSES_DESCRIPTION = (
    "The person's address on each other channel, by channel name (email, phone and "
    "lineUserId are fields of their own)."
)


class UserFields(_Stored):
    """A person, as `PUT /users/{userId}` takes it: the id comes from the path, the tenant
    from the API key."""

    name: str = Field("", max_length=200)
    role: str = Field("member", max_length=32)
    email: str | None = Field(None, max_length=320, json_schema_extra=EMAIL_SCHEMA)
    phone: str | None = Field(None, max_length=32)
    line_user_id: str | None = Field(None, max_length=64)
    addresses: Annotated[dict[str, Address], AfterValidator(_known_channels)] = Field(
        default_factory=dict, description=ADDRESSES_DESCRIPTION, json_schema_extra=address_schema
    )
    locale: str | None = Field(None, max_length=16)
    timezone: str | None = Field(None, max_length=64)
    active: StrictBool = True
    web_push_subscriptions: list[PushSubscriptionDoc] = Field(default_factory=list)
    preferences: Preferences = Field(default_factory=lambda: Preferences.model_validate({}))

    @field_serializer("preferences")
    def _stored_preferences(self, preferences: Preferences) -> dict[str, Any]:
        return preferences.stored()

    @field_validator("email")
    @classmethod
    def _one_address(cls, value: str | None) -> str | None:
        """Exactly one addr-spec, checked by an RFC 5322/6531 parser: "a@b.com, evil@x.com"
        or a display name would otherwise reach a mail server as more than one recipient."""
        if not value:
            return None  # no email address
        if plain_email(value):
            return value
        try:
            validate_email(value, check_deliverability=False)
        except EmailNotValidError as exc:
            raise ValueError(f"must be one email address ({exc})") from None
        if not _EMAIL.fullmatch(value):
            raise ValueError("must be one email address (name@domain.tld)")
        return value


class UserRecord(UserFields):
    """A person in a directory document sent with an API key (`POST /directory`)."""

    id: Id


class UserDoc(UserRecord):
    """A person in a directory document (`notifier import`)."""

    tenant_id: Id


class MembershipFields(_Stored):
    user_id: Id
    membership_type: str = Field(max_length=100)
    expires_at: IsoDate


class MembershipRecord(MembershipFields):
    id: Id


class MembershipDoc(MembershipRecord):
    tenant_id: Id


class CourseFields(_Stored):
    course_name: str = Field(max_length=200)
    instructor_name: str = Field("", max_length=200)
    start_time: AwareTime
    location: str = Field("", max_length=200)
    capacity: Integer = Field(0, ge=0, le=2**31 - 1)
    status: str = Field("scheduled", max_length=16)


class CourseRecord(CourseFields):
    id: Id


class CourseDoc(CourseRecord):
    tenant_id: Id


class BookingFields(_Stored):
    course_id: Id
    user_id: Id
    status: str = Field("confirmed", max_length=16)


class BookingRecord(BookingFields):
    id: Id


class BookingDoc(BookingRecord):
    tenant_id: Id


class DirectoryDoc(_Doc):
    """The whole directory document of `notifier import`."""

    tenants: list[TenantDoc] = Field(default_factory=list)
    users: list[UserDoc] = Field(default_factory=list)
    memberships: list[MembershipDoc] = Field(default_factory=list)
    courses: list[CourseDoc] = Field(default_factory=list)
    bookings: list[BookingDoc] = Field(default_factory=list)


class TenantDirectory(_Doc):
    """A directory document for one tenant (`POST /directory`): no tenants section and no
    tenantId fields, the API key says whose directory it is. Up to 1,000 items a section
    per request (`notifier import` takes any size)."""

    users: list[UserRecord] = Field(default_factory=list, max_length=1_000)
    memberships: list[MembershipRecord] = Field(default_factory=list, max_length=1_000)
    courses: list[CourseRecord] = Field(default_factory=list, max_length=1_000)
    bookings: list[BookingRecord] = Field(default_factory=list, max_length=1_000)


SECTIONS: dict[str, type[_Doc]] = {
    "tenants": TenantDoc,
    "users": UserDoc,
    "memberships": MembershipDoc,
    "courses": CourseDoc,
    "bookings": BookingDoc,
}
TENANT_SECTIONS: dict[str, type[_Doc]] = {
    "users": UserRecord,
    "memberships": MembershipRecord,
    "courses": CourseRecord,
    "bookings": BookingRecord,
}
KINDS = ("tenants", "users", "webPushSubscriptions", "courses", "memberships", "bookings")
"""Written in this order: a row after the rows it refers to."""
PARENTS = frozenset({"tenants", "users", "courses"})
_TABLES: dict[str, tuple[Table, tuple[str, ...]]] = {
    "tenants": (cast(Table, Tenant.__table__), ("id",)),
    "users": (cast(Table, User.__table__), ("tenant_id", "id")),
    "webPushSubscriptions": (cast(Table, WebPushSubscription.__table__), ("tenant_id", "endpoint")),
    "courses": (cast(Table, Course.__table__), ("tenant_id", "id")),
    "memberships": (cast(Table, Membership.__table__), ("tenant_id", "id")),
    "bookings": (cast(Table, Booking.__table__), ("tenant_id", "id")),
}


def _field_errors(exc: ValidationError, prefix: str = "") -> list[dict[str, str]]:
    return [
        {"field": prefix + ".".join(map(str, e["loc"])), "message": e["msg"]} for e in exc.errors()
    ]


def _rows(kind: str, tenant_id: str, record: _Doc, now: dt.datetime) -> list[tuple[str, dict]]:
    """The (kind, row) pairs one validated record is stored as."""
    values = record.model_dump(exclude={"tenant_id", "web_push_subscriptions"}, by_alias=False)
    if kind == "tenants":
        return [("tenants", {**values, "created_at": now, "updated_at": now})]
    values["tenant_id"] = tenant_id
    if kind != "users":
        return [(kind, values)]
    addresses = dict(values["addresses"])
    for name, channel in ADDRESS_FIELDS.items():
        if address := values.pop(name):
            addresses[channel] = address
    values["addresses"] = addresses
    rows = [("users", {**values, "created_at": now, "updated_at": now})]
    for sub in cast(UserFields, record).web_push_subscriptions:
        row = {
            "tenant_id": tenant_id,
            "user_id": values["id"],
            "endpoint": sub.endpoint,
            "p256dh": sub.keys.p256dh,
            "auth": sub.keys.auth,
            "created_at": now,
        }
        rows.append(("webPushSubscriptions", row))
    return rows


@dataclass
class ImportSummary:
    read: dict[str, int] = field(default_factory=lambda: dict.fromkeys(KINDS, 0))
    changed: dict[str, int] = field(default_factory=lambda: dict.fromkeys(KINDS, 0))
    seconds: float = 0.0


class _Batches:
    """Rows waiting to be upserted, per kind. Before a kind's batch is written, the pending
    rows of the kinds it may refer to are written. The writes run on one writer thread
    while the caller parses and validates the next items (the database's time and the
    parser's overlap); at most two batches wait for it, so memory stays bounded."""

    def __init__(self, session: Session, summary: ImportSummary, batch_size: int):
        self.session = session
        self.summary = summary
        self.batch_size = batch_size
        self.pending: dict[str, dict[tuple[Any, ...], dict[str, Any]]] = {k: {} for k in KINDS}
        self.analyzed: set[str] = set()
        self.jobs: queue.Queue[tuple[str, list[dict[str, Any]]] | None] = queue.Queue(maxsize=2)
        self.failure: BaseException | None = None
        self.writer = threading.Thread(target=self._write_jobs, name="directory-writer")
        self.writer.start()

    def _write_jobs(self) -> None:
        while (job := self.jobs.get()) is not None:
            if self.failure is None:
                try:
                    self._write(*job)
                except BaseException as exc:  # handed to the caller's thread
                    self.failure = exc

    def _write(self, kind: str, rows: list[dict[str, Any]]) -> None:
        table, conflict = _TABLES[kind]
        try:
            changed = upsert_rows(self.session, table, conflict, rows)
        except (IntegrityError, psycopg.IntegrityError) as exc:
            raise InvalidEvent(
                [
                    {
                        "field": kind,
                        "message": "refers to a tenant, user or course that is not in the "
                        "directory (list it earlier in the document, or import it first)",
                    }
                ],
                "conflict",
            ) from exc
        self.summary.changed[kind] += changed
        if kind in PARENTS:
            self._analyze(kind)

    def _analyze(self, kind: str) -> None:
        """PostgreSQL checks each child row's foreign key with a plan made from the parent
        table's statistics: for a table that had none (new, or filled since) that plan is a
        sequential scan, and every batch gets slower than the one before. Fresh statistics
        after the first batch of a parent keep the checks on the index."""
        if kind in self.analyzed or self.session.get_bind().dialect.name != "postgresql":
            return
        self.analyzed.add(kind)
        self.session.execute(text(f"ANALYZE {_TABLES[kind][0].name}"))

    def add(self, kind: str, row: dict[str, Any]) -> None:
        conflict = _TABLES[kind][1]
        bucket = self.pending[kind]
        bucket[tuple(row[c] for c in conflict)] = row  # the same key twice: the last one wins
        if len(bucket) >= self.batch_size:
            self.flush(kind)

    def flush(self, upto: str = KINDS[-1]) -> None:
        self.raise_failure()
        for kind in KINDS[: KINDS.index(upto) + 1]:
            if self.pending[kind]:
                self.jobs.put((kind, list(self.pending[kind].values())))
                self.pending[kind] = {}

    def stop(self) -> None:
        """Wait until every batch handed over is written (or the first write failed)."""
        self.jobs.put(None)
        self.writer.join()

    def raise_failure(self) -> None:
        if self.failure is not None:
            raise self.failure


def import_items(
    items: Iterable[tuple[str, Any]],
    *,
    tenant_id: str | None = None,
    batch_size: int = BATCH_SIZE,
    progress: Callable[[ImportSummary], None] | None = None,
) -> ImportSummary:
    """Upsert directory items, (section, raw item) pairs as `notifier.jsonstream` reads
    them, in batches, in one transaction: any invalid item and nothing is written (the
    errors of up to MAX_ERRORS items are listed). With `tenant_id` (an API key's tenant)
    the items are that tenant's and carry no tenantId; without it each names its own.
    Items are validated and written one batch at a time: memory stays bounded."""
    started = time.monotonic()
    summary = ImportSummary()
    sections = SECTIONS if tenant_id is None else TENANT_SECTIONS
    errors: list[dict[str, str]] = []
    seen = dict.fromkeys(sections, 0)
    now = utcnow()
    with session_scope() as session:
        batches = _Batches(session, summary, batch_size)
        try:
            try:
                for section, raw in items:
                    model = sections.get(section)
                    if model is None:
                        errors.append({"field": section, "message": "unknown section"})
                        break
                    index = seen[section]
                    seen[section] += 1
                    try:
                        record = model.model_validate(raw)
                    except ValidationError as exc:
                        errors.extend(_field_errors(exc, f"{section}.{index}."))
                        if len(errors) >= MAX_ERRORS:
                            break
                        continue
                    named = cast(Any, record)
                    owner = tenant_id or (named.id if section == "tenants" else named.tenant_id)
                    for kind, row in _rows(section, owner, record, now):
                        summary.read[kind] += 1
                        if not errors:
                            batches.add(kind, row)
                    if progress and summary.read[section] % batch_size == 0:
                        progress(summary)
            except MalformedDocument as exc:
                errors.append({"field": "document", "message": str(exc)})
            if not errors:
                batches.flush()
        finally:
            batches.stop()
        if errors:
            session.rollback()
            raise InvalidEvent(errors[:MAX_ERRORS])
        batches.raise_failure()
    summary.seconds = time.monotonic() - started
    if progress:
        progress(summary)
    return summary


def import_document(doc: Any, *, tenant_id: str | None = None) -> dict[str, int]:
    """Upsert a directory document; the same document twice changes nothing.

    Returns how many rows of each kind were created or changed.
    """
    if not isinstance(doc, dict):
        raise InvalidEvent([{"field": "document", "message": "expected an object of sections"}])
    return import_items(section_items(doc), tenant_id=tenant_id).changed


def import_stream(
    stream: IO[bytes],
    *,
    json_lines: bool = False,
    progress: Callable[[ImportSummary], None] | None = None,
) -> ImportSummary:
    """`notifier import`: a directory document of any size from a binary stream, one JSON
    document read incrementally, or JSON Lines of smaller documents."""
    items = (
        json_lines_items(io.TextIOWrapper(stream, encoding="utf-8"))
        if json_lines
        else document_items(stream)
    )
    return import_items(items, progress=progress)


# -- one record at a time, for the HTTP API (always inside the API key's tenant) ----------


@dataclass(frozen=True)
class _Kind:
    section: str
    model: type[Any]
    fields: type[_Doc]
    record: type[_Doc]
    references: tuple[tuple[str, type[Any]], ...] = ()


USERS = _Kind("users", User, UserFields, UserRecord)
_NOT_COLUMNS = frozenset({*ADDRESS_FIELDS, "addresses"})
"""A person's fields read from their `addresses`, not from columns of their own."""
MEMBERSHIPS = _Kind(
    "memberships", Membership, MembershipFields, MembershipRecord, (("user_id", User),)
)
COURSES = _Kind("courses", Course, CourseFields, CourseRecord)
BOOKINGS = _Kind(
    "bookings", Booking, BookingFields, BookingRecord, (("course_id", Course), ("user_id", User))
)


def _get(kind: _Kind, tenant_id: str, record_id: str) -> dict[str, Any] | None:
    with session_scope() as session:
        row = session.get(kind.model, (tenant_id, record_id))
        if row is None:
            return None
        fields = kind.record.model_fields
        values = {
            field.alias or name: getattr(row, name)
            for name, field in fields.items()
            if name != "web_push_subscriptions" and (kind is not USERS or name not in _NOT_COLUMNS)
        }
        if kind is USERS:
            values["preferences"] = clean(values.get("preferences"))
            stored = dict(row.addresses or {})
            for name, channel in ADDRESS_FIELDS.items():
                values[to_camel(name)] = stored.pop(channel, None)
            values["addresses"] = stored
            values["webPushSubscriptions"] = push_subscriptions(
                session, tenant_id, [record_id]
            ).get(record_id, [])
        return kind.record.model_validate(values).model_dump(mode="json")


def _put(kind: _Kind, tenant_id: str, record_id: str, fields: _Doc) -> bool:
    """Create or replace one record; True when it was created."""
    record = kind.record.model_validate({**fields.model_dump(), "id": record_id})
    with session_scope() as session:
        missing = [
            {"field": to_camel(name), "message": f"no such {model.__tablename__[:-1]}"}
            for name, model in kind.references
            if session.get(model, (tenant_id, getattr(record, name))) is None
        ]
        if missing:
            raise InvalidEvent(missing, "conflict")
        created = session.get(kind.model, (tenant_id, record_id)) is None
        rows = _rows(kind.section, tenant_id, record, utcnow())
        for row_kind in KINDS:
            table, conflict = _TABLES[row_kind]
            unique = {tuple(row[c] for c in conflict): row for k, row in rows if k == row_kind}
            upsert_rows(session, table, conflict, list(unique.values()))  # one row per key
        if kind is USERS:  # a replaced person keeps only the subscriptions listed now
            endpoints = [row["endpoint"] for k, row in rows if k == "webPushSubscriptions"]
            session.execute(
                delete(WebPushSubscription).where(
                    WebPushSubscription.tenant_id == tenant_id,
                    WebPushSubscription.user_id == record_id,
                    WebPushSubscription.endpoint.not_in(endpoints),
                )
            )
    return created


def _delete(kind: _Kind, tenant_id: str, record_id: str) -> bool:
    with session_scope() as session:
        result = session.execute(
            delete(kind.model).where(kind.model.tenant_id == tenant_id, kind.model.id == record_id)
        )
        return bool(cast(Any, result).rowcount)


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON Merge Patch: objects merge, null removes, anything else replaces."""
    if not isinstance(patch, dict):
        return patch
    merged = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = merge_patch(merged.get(key), value)
    return merged


def get_user(tenant_id: str, user_id: str) -> dict[str, Any] | None:
    """The person as the directory holds them (camelCase), or None."""
    return _get(USERS, tenant_id, user_id)


def put_user(tenant_id: str, user_id: str, fields: UserFields) -> bool:
    """Create or replace a person; True when created."""
    return _put(USERS, tenant_id, user_id, fields)


def patch_user(tenant_id: str, user_id: str, patch: dict[str, Any]) -> dict[str, Any] | None:
    """Apply a JSON Merge Patch (camelCase fields) to a person; the person after it, or
    None when there is no such person. Raises InvalidEvent when the result is invalid."""
    current = get_user(tenant_id, user_id)
    if current is None:
        return None
    current.pop("id")
    try:
        fields = UserFields.model_validate(merge_patch(current, patch))
    except ValidationError as exc:
        raise InvalidEvent(_field_errors(exc)) from exc
    put_user(tenant_id, user_id, fields)
    return get_user(tenant_id, user_id)


def delete_user(tenant_id: str, user_id: str) -> bool:
    """Erase a person: their contact points, push subscriptions, preferences, memberships
    and bookings go; their deliveries stay (for the tenant's reports) with no address or
    provider response left on them. False when there was no such person."""
    with session_scope() as session:
        mine = {"tenant_id": tenant_id, "user_id": user_id}
        for model in (WebPushSubscription, Booking, Membership):
            session.execute(delete(model).filter_by(**mine))
        gone = session.execute(delete(User).where(User.tenant_id == tenant_id, User.id == user_id))
        session.execute(
            update(OutboxMessage)
            .where(OutboxMessage.tenant_id == tenant_id, OutboxMessage.recipient == user_id)
            .values(address=None)
        )
        session.execute(
            update(Delivery)
            .where(Delivery.tenant_id == tenant_id, Delivery.recipient == user_id)
            .values(raw_response=None)
        )
        return bool(cast(Any, gone).rowcount)


def get_membership(tenant_id: str, membership_id: str) -> dict[str, Any] | None:
    return _get(MEMBERSHIPS, tenant_id, membership_id)


def put_membership(tenant_id: str, membership_id: str, fields: MembershipFields) -> bool:
    return _put(MEMBERSHIPS, tenant_id, membership_id, fields)


def delete_membership(tenant_id: str, membership_id: str) -> bool:
    return _delete(MEMBERSHIPS, tenant_id, membership_id)


def get_course(tenant_id: str, course_id: str) -> dict[str, Any] | None:
    return _get(COURSES, tenant_id, course_id)


def put_course(tenant_id: str, course_id: str, fields: CourseFields) -> bool:
    return _put(COURSES, tenant_id, course_id, fields)


def delete_course(tenant_id: str, course_id: str) -> bool:
    """Delete a course and its bookings."""
    with session_scope() as session:
        session.execute(
            delete(Booking).where(Booking.tenant_id == tenant_id, Booking.course_id == course_id)
        )
    return _delete(COURSES, tenant_id, course_id)


def get_booking(tenant_id: str, booking_id: str) -> dict[str, Any] | None:
    return _get(BOOKINGS, tenant_id, booking_id)


def put_booking(tenant_id: str, booking_id: str, fields: BookingFields) -> bool:
    return _put(BOOKINGS, tenant_id, booking_id, fields)


def delete_booking(tenant_id: str, booking_id: str) -> bool:
    return _delete(BOOKINGS, tenant_id, booking_id)


def recipients_query(
    tenant_id: str, rule: str, user_id: str | None, data: dict[str, Any]
) -> Select[Any]:
    """The users a routing rule reaches, always inside the event's tenant."""
    query = select(User).where(User.tenant_id == tenant_id)
    if rule == "event_user":
        return query.where(User.id == (user_id or ""))
    if rule == "uploader_and_admins":
        return query.where(
            (User.id == str(data.get("uploadedBy", "")))
            | (and_(User.role.in_(ADMIN_ROLES), User.active.is_(True)))
        )
    if rule == "course_bookings":
        booked = select(Booking.user_id).where(
            Booking.tenant_id == tenant_id,
            Booking.course_id == str(data.get("courseId", "")),
            Booking.status == "confirmed",
        )
        return query.where(User.id.in_(booked))
    if rule == "tenant_admins":
        return query.where(User.role.in_(ADMIN_ROLES), User.active.is_(True))
    if rule == "all_active":
        return query.where(User.active.is_(True))
    raise ValueError(f"unknown recipient rule {rule!r}")


def audience_keys(rule: str, data: dict[str, Any]) -> dict[str, str]:
    """The fields of an event's data that `recipients_query` reads for `rule`."""
    wanted = {"uploader_and_admins": "uploadedBy", "course_bookings": "courseId"}.get(rule)
    return {wanted: str(data.get(wanted, ""))} if wanted else {}


def page_starts(session: Session, query: Select[Any], page_size: int) -> list[str]:
    """The first user id of every page of `page_size` users of `query`, in id order: one
    statement over the index of ids, whatever the audience's size (keyset pages)."""
    numbered = query.with_only_columns(
        User.id.label("id"), func.row_number().over(order_by=User.id).label("n")
    ).subquery()
    return list(
        session.scalars(
            select(numbered.c.id).where((numbered.c.n - 1) % page_size == 0).order_by(numbered.c.id)
        )
    )


def as_person(user: User, tenant: Tenant, has_web_push: bool) -> Person:
    """A user as channel selection sees them: where each channel reaches them, as the
    channel declares it (a tenant's own address only for its staff, Web Push with a
    subscription)."""
    staff = user.role in STAFF_ROLES
    addresses: dict[str, str] = {}
    for channel, declared in person_declarations():
        if declared.audience == "subscriptions":
            address = "subscriptions" if has_web_push else None
        elif declared.audience == "staff" and not staff:
            address = None
        else:
            address = declared.address_of(user, tenant, "")
        if address:
            addresses[channel] = address
    return Person(
        id=user.id,
        role=user.role,
        addresses=addresses,
        timezone=user.timezone or tenant.timezone or "UTC",
        preferences=user.preferences or {},
        is_staff=staff,
    )


def people_for(
    session: Session, tenant: Tenant, users: Iterable[User], *, web_push: bool = True
) -> list[Person]:
    """The users as selection sees them. web_push=False when Web Push cannot be chosen
    anyway (the event is narrowed to other channels, or it is turned off): no lookup of
    the subscriptions then."""
    users = list(users)
    ids = [u.id for u in users]
    with_push = (
        set(
            session.scalars(
                select(WebPushSubscription.user_id)
                .where(
                    WebPushSubscription.tenant_id == tenant.id,
                    WebPushSubscription.user_id.in_(ids),
                )
                .distinct()
            )
        )
        if web_push
        else set()
    )
    return [as_person(u, tenant, u.id in with_push) for u in users]


def delete_push_subscriptions(tenant_id: str, endpoints: Sequence[str]) -> None:
    """A push service said these subscriptions are gone (404/410): forget them."""
    with session_scope() as session:
        session.execute(
            delete(WebPushSubscription).where(
                WebPushSubscription.tenant_id == tenant_id,
                WebPushSubscription.endpoint.in_(endpoints),
            )
        )


def push_subscriptions(
    session: Session, tenant_id: str, user_ids: Iterable[str]
) -> dict[str, list[dict[str, Any]]]:
    """user id -> the Web Push subscriptions of that user, in the shape pywebpush takes."""
    result: dict[str, list[dict[str, Any]]] = {}
    rows = session.scalars(
        select(WebPushSubscription)
        .where(
            WebPushSubscription.tenant_id == tenant_id,
            WebPushSubscription.user_id.in_(list(user_ids)),
        )
        .order_by(WebPushSubscription.id)
    )
    for row in rows:
        result.setdefault(row.user_id, []).append(
            {"endpoint": row.endpoint, "keys": {"p256dh": row.p256dh, "auth": row.auth}}
        )
    return result

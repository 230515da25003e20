"""The event wire shape and the typed `data` of every event type (docs/events.md
is generated from them).

Validation collects every error at once so a caller can fix a bad event in one go.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING, Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
)
from pydantic.alias_generators import to_camel

from config.settings import CHANNELS

Priority = Literal["low", "medium", "high", "critical"]
if TYPE_CHECKING:
    Channel = str
else:  # the registry's channels, as the schema's enum
    Channel = Literal[CHANNELS]
PRIORITIES: tuple[str, ...] = ("low", "medium", "high", "critical")


Refusal = Literal["invalid", "forbidden", "conflict"]
"""Why input is refused: invalid (its schema says no: HTTP 422), forbidden (not the API key's
tenant, or a URL the outbound policy refuses: 403), conflict (valid, but it names a record
that is not stored: 409)."""


class InvalidEvent(ValueError):
    """An event (or record) that cannot be accepted; `errors` lists every problem found,
    `refusal` says why."""

    def __init__(self, errors: list[dict[str, str]], refusal: Refusal = "invalid"):
        self.errors = errors
        self.refusal: Refusal = refusal
        lines = "; ".join(f"{e['field']}: {e['message']}" for e in errors)
        super().__init__(f"invalid event: {lines}")


# Bounds of the typed data fields: what a template inserts into a message is never larger
# than a channel can carry, and no number is too big to format.
INT64_MAX = 2**63 - 1
AMOUNT_MAX_DIGITS = 18
AMOUNT_MAX_DECIMALS = 4
ID_MAX = 128
NAME_MAX = 200
TEXT_MAX = 2000
URL_MAX = 2048
LINE_BREAKS = frozenset("\n\r\u0085\u2028\u2029")
# Characters RFC 3986 never allows unencoded in a URL: in a message's markup they would end
# the link (Slack's `<url|label>`, an HTML attribute) and start something else.
URL_FORBIDDEN = frozenset('<>"\\^`{|} ')


ONE_LINE = "one line: no line breaks or other control characters"
# The same rules as JSON Schema patterns (ECMA 262), for the OpenAPI document: what a field
# takes is exactly what its pattern matches.
ONE_LINE_PATTERN = r"^[^\u0000-\u001f\u007f-\u009f\u2028\u2029]*$"
TEXT_PATTERN = r"^[^\u0000-\u0008\u000b\u000c\u000e-\u001f\u007f-\u009f\u2028\u2029]*$"
URL_PATTERN = (
    r"^[Hh][Tt][Tt][Pp][Ss]?://[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?(?::[0-9]{1,5})?"
    r"(?:[/?#][!#-;=?-\[\]_a-z~]*)?$"
)
"""An http(s) URL with a host name (letters, digits, dots, hyphens), an optional port, and a
path, query or fragment of URL characters: no spaces, controls or `<>"\\^`{|}`."""
DATE_TIME_PATTERN = (
    r"^[1-8][0-9]{3}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-5][0-9](?:\.[0-9]{1,6})?"
    r"(?:Z|[+-][0-9]{2}:[0-9]{2})$"
)
"""RFC 3339 with an upper-case T, years 1000 to 8999 (far from where a time converted to UTC
leaves the calendar), no leap second, up to microseconds."""
DATE_PATTERN = r"^[1-8][0-9]{3}-[0-9]{2}-[0-9]{2}$"
AMOUNT_PATTERN = r"^-?(?:0|[1-9][0-9]{0,13})(?:\.[0-9]{1,4})?$"
AMOUNT_LIMIT = 10**14
"""An amount's magnitude is below 10^14: 14 digits before the point, 4 after."""
_URL = re.compile(URL_PATTERN.removesuffix("$"))
_DATE_TIME = re.compile(DATE_TIME_PATTERN.removesuffix("$"))
_DATE = re.compile(DATE_PATTERN.removesuffix("$"))
_AMOUNT = re.compile(AMOUNT_PATTERN.removesuffix("$"))


def _controls(value: str, allowed: frozenset[str] = frozenset()) -> str:
    """Refuse control characters (C0, DEL, C1) and line separators not in `allowed`."""
    for char in value:
        if char in allowed:
            continue
        if ord(char) < 0x20 or 0x7F <= ord(char) < 0xA0 or char in LINE_BREAKS:
            raise ValueError(f"must not contain the control character {char!r}")
    return value


def _one_line(value: str) -> str:
    return _controls(value)


def _multi_line(value: str) -> str:
    return _controls(value, frozenset("\n\r\t"))


def _web_url(value: str) -> str:
    """An absolute http(s) URL with a host, written with URL characters only."""
    _controls(value)
    bad = sorted({char for char in value if char in URL_FORBIDDEN})
    if bad:
        raise ValueError(
            f"must be a URL without {', '.join(repr(c) for c in bad)} (percent-encode them)"
        )
    try:
        parts = urlsplit(value)
        host = parts.hostname
    except ValueError as exc:
        raise ValueError(f"is not a valid URL ({exc})") from None
    if parts.scheme.lower() not in ("http", "https"):
        scheme = f"{parts.scheme}:" if parts.scheme else "no scheme"
        raise ValueError(f"must be an http or https URL, not {scheme}")
    if not host:
        raise ValueError("must be a URL with a host name")
    if not _URL.fullmatch(value):
        raise ValueError(
            "must be an http(s) URL with a host name of letters, digits, dots and hyphens"
        )
    return value


def rfc3339(value: Any) -> Any:
    """A date-time as RFC 3339 text of DATE_TIME_PATTERN (pydantic alone would also take a
    number, a lower-case t, a leap second...)."""
    if not isinstance(value, str) or not _DATE_TIME.fullmatch(value):
        raise ValueError("expected an RFC 3339 date-time such as 2026-11-22T09:00:00+08:00")
    return value


def iso_date(value: Any) -> Any:
    if not isinstance(value, str) or not _DATE.fullmatch(value):
        raise ValueError("expected a date such as 2026-11-29")
    return value


def integral(value: Any) -> Any:
    """A JSON integer: 7 or 7.0 (JSON Schema's integers), never true, "7" or 7.5."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if type(value) is not int:
        raise ValueError("expected an integer")
    return value


def decimal_amount(value: Any) -> Decimal:
    """A decimal string of AMOUNT_PATTERN (exact), or a JSON number below AMOUNT_LIMIT in
    magnitude, rounded to 4 places after the point."""
    if isinstance(value, str):
        if not _AMOUNT.fullmatch(value):
            raise ValueError(
                "expected a decimal such as 1200.50: at most 14 digits before the point, 4 after"
            )
        return Decimal(value)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError("expected a decimal string or a number")
    if not -AMOUNT_LIMIT < value < AMOUNT_LIMIT:
        raise ValueError("expected at most 14 digits before the point (below 10^14 in magnitude)")
    number = Decimal(repr(value)) if isinstance(value, float) else Decimal(value)
    exponent = number.as_tuple().exponent
    if isinstance(exponent, int) and exponent < -AMOUNT_MAX_DECIMALS:
        number = number.quantize(Decimal(1).scaleb(-AMOUNT_MAX_DECIMALS))
    return number


Ident = Annotated[
    str,
    Field(
        min_length=1,
        max_length=ID_MAX,
        description=ONE_LINE,
        json_schema_extra={"pattern": ONE_LINE_PATTERN},
    ),
    AfterValidator(_one_line),
]
"""An id or code (payment id, invoice number, category): one line, at most 128 characters."""
Name = Annotated[
    str,
    Field(
        min_length=1,
        max_length=NAME_MAX,
        description=ONE_LINE,
        json_schema_extra={"pattern": ONE_LINE_PATTERN},
    ),
    AfterValidator(_one_line),
]
"""A name shown in a message (person, file, course, place): one line, at most 200."""
Text = Annotated[
    str,
    Field(
        max_length=TEXT_MAX,
        description="line breaks and tabs allowed, no other control characters",
        json_schema_extra={"pattern": TEXT_PATTERN},
    ),
    AfterValidator(_multi_line),
]
"""Free text (a reason, a message): line breaks allowed, at most 2,000 characters."""
WebUrl = Annotated[
    str,
    Field(
        max_length=URL_MAX,
        description="an absolute http or https URL with a host, without spaces or any of"
        ' < > " \\ ^ ` { | } (percent-encode them); javascript:, data: and other schemes'
        " are refused",
        json_schema_extra={"pattern": URL_PATTERN},
    ),
    AfterValidator(_web_url),
]
"""An http(s) link: never javascript:, data: or anything a message's markup would run."""
Count = Annotated[int, Field(ge=0, le=INT64_MAX), BeforeValidator(integral)]
"""A non-negative integer within 64 bits."""
Instant = Annotated[
    AwareDatetime, BeforeValidator(rfc3339), Field(json_schema_extra={"pattern": DATE_TIME_PATTERN})
]
"""A date-time with its offset, as RFC 3339 text."""
Day = Annotated[
    dt.date, BeforeValidator(iso_date), Field(json_schema_extra={"pattern": DATE_PATTERN})
]
AMOUNT_SCHEMA: dict[str, Any] = {
    "anyOf": [
        {"type": "string", "pattern": AMOUNT_PATTERN},
        {"type": "number", "exclusiveMinimum": -AMOUNT_LIMIT, "exclusiveMaximum": AMOUNT_LIMIT},
    ],
    "description": "a decimal string (at most 14 digits before the point and 4 after), or a"
    " number below 10^14 in magnitude (rounded to 4 places after the point)",
}


class _Data(BaseModel):
    """Event data: camelCase on the wire, unknown fields kept."""

    model_config = ConfigDict(extra="allow", alias_generator=to_camel)


class _MoneyMixin(_Data):
    # Digits bounded in total and after the point: "1e100000" (8 characters, 100,001
    # digits once formatted) is refused here, before any template formats it.
    amount: Annotated[Decimal, BeforeValidator(decimal_amount)] = Field(
        max_digits=AMOUNT_MAX_DIGITS,
        decimal_places=AMOUNT_MAX_DECIMALS,
        allow_inf_nan=False,
        json_schema_extra=AMOUNT_SCHEMA,
    )
    currency: str = Field(pattern=r"^[A-Z]{3}$", description="ISO 4217 code")


class FileUploaded(_Data):
    file_name: Name
    category: Ident
    uploaded_by: Name
    size_bytes: Count


class FileProcessed(_Data):
    file_name: Name
    category: Ident
    status: Literal["completed", "failed"]
    download_url: WebUrl | None = None


class FileVirusDetected(_Data):
    file_name: Name
    uploaded_by: Name
    threat_name: Name


class MemberRegistered(_Data):
    member_name: Name


class MemberCheckedIn(_Data):
    member_name: Name
    checked_in_at: Instant
    location: Name | None = None


class MembershipExpiring(_Data):
    member_name: Name
    membership_type: Name
    expiry_date: Day
    days_left: Count


class CourseBookingConfirmed(_Data):
    course_id: Ident
    course_name: Name
    instructor_name: Name
    start_time: Instant
    location: Name


class CourseCancelled(_Data):
    course_id: Ident
    course_name: Name
    start_time: Instant
    reason: Text | None = None


class CourseReminder(_Data):
    course_id: Ident
    course_name: Name
    instructor_name: Name
    start_time: Instant
    location: Name
    remaining_slots: Count


class PaymentSuccess(_MoneyMixin):
    payment_id: Ident
    description: Text | None = None


class PaymentFailed(_MoneyMixin):
    payment_id: Ident
    reason: Text
    retry_url: WebUrl | None = None


class InvoiceGenerated(_MoneyMixin):
    invoice_number: Ident
    download_url: WebUrl


class SystemBackupCompleted(_Data):
    backup_id: Ident
    size_bytes: Count
    completed_at: Instant


class SystemMaintenance(_Data):
    starts_at: Instant
    ends_at: Instant
    message: Text


DATA_SCHEMAS: dict[str, type[_Data]] = {
    "file.uploaded": FileUploaded,
    "file.processed": FileProcessed,
    "file.virus_detected": FileVirusDetected,
    "member.registered": MemberRegistered,
    "member.checked_in": MemberCheckedIn,
    "member.membership_expiring": MembershipExpiring,
    "course.booking_confirmed": CourseBookingConfirmed,
    "course.cancelled": CourseCancelled,
    "course.reminder": CourseReminder,
    "payment.success": PaymentSuccess,
    "payment.failed": PaymentFailed,
    "invoice.generated": InvoiceGenerated,
    "system.backup_completed": SystemBackupCompleted,
    "system.maintenance": SystemMaintenance,
}
EVENT_TYPES: tuple[str, ...] = tuple(DATA_SCHEMAS)


class Metadata(BaseModel):
    model_config = ConfigDict(extra="allow", alias_generator=to_camel)

    user_id: str | None = Field(default=None, min_length=1, max_length=128)
    priority: Priority | None = None
    channels: list[Channel] | None = Field(default=None, min_length=1)


class Envelope(BaseModel):
    # Wire names only: `tenant_id` is an unknown field here, not another spelling of
    # `tenantId`, so a check of the tenant can never read a different field than this model.
    model_config = ConfigDict(extra="forbid", alias_generator=to_camel)

    event_id: str | None = Field(default=None, min_length=1, max_length=200)
    event_type: str = Field(min_length=1, max_length=100)
    tenant_id: str = Field(min_length=1, max_length=128)
    timestamp: Instant | None = None
    source: str | None = Field(default=None, max_length=200)
    data: dict[str, Any]
    metadata: Metadata = Field(default_factory=Metadata)


@dataclass(frozen=True)
class ValidEvent:
    """A validated event, with its data normalised to JSON-able camelCase."""

    event_id: str
    event_type: str
    tenant_id: str
    timestamp: str
    source: str | None
    data: dict[str, Any]
    user_id: str | None
    priority: str | None
    channels: tuple[str, ...] | None
    metadata: dict[str, Any]

    def to_wire(self) -> dict[str, Any]:
        return {
            "eventId": self.event_id,
            "eventType": self.event_type,
            "tenantId": self.tenant_id,
            "timestamp": self.timestamp,
            "source": self.source,
            "data": self.data,
            "metadata": self.metadata,
        }


def _loc(prefix: str, loc: tuple[int | str, ...]) -> str:
    path = ".".join(str(part) for part in loc)
    return f"{prefix}.{path}" if prefix and path else (path or prefix or "event")


def _errors(exc: ValidationError, prefix: str = "") -> list[dict[str, str]]:
    return [{"field": _loc(prefix, err["loc"]), "message": err["msg"]} for err in exc.errors()]


def canonical_id(raw: dict[str, Any]) -> str:
    """The idempotency key of an event without eventId: a hash of its canonical JSON."""
    body = {k: v for k, v in raw.items() if k != "eventId"}
    digest = hashlib.sha256(
        json.dumps(body, sort_keys=True, separators=(",", ":"), default=str).encode()
    ).hexdigest()
    return f"h-{digest[:40]}"


def parse_json(text: str | bytes) -> Any:
    try:
        return json.loads(text)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidEvent([{"field": "event", "message": f"malformed JSON: {exc}"}]) from exc


MAX_DEPTH = 32


def payload_size(raw: Any) -> int:
    return len(json.dumps(raw, separators=(",", ":"), default=str).encode())


def _depth(value: Any) -> int:
    """How deeply lists and objects nest, without recursion (the input is untrusted)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, dict | list):
            deepest = max(deepest, depth)
            if depth > MAX_DEPTH:
                break
            children = node.values() if isinstance(node, dict) else node
            stack.extend((child, depth + 1) for child in children)
    return deepest


def storage_problem(raw: Any) -> str | None:
    """Why this JSON cannot be validated or stored as it is, or None."""
    if _depth(raw) > MAX_DEPTH:
        return f"nested more than {MAX_DEPTH} levels deep"
    try:
        text = json.dumps(raw, separators=(",", ":"), default=str, ensure_ascii=False)
    except (TypeError, ValueError) as exc:
        return f"not serialisable as JSON: {exc}"
    if "\\u0000" in text:  # PostgreSQL cannot store NUL in text or JSON
        return "contains a NUL character (\\u0000)"
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # JSON text may escape one ("\ud800"); UTF-8 cannot hold it
        return "contains a lone surrogate (\\ud800-\\udfff): not valid Unicode"
    return None


def validate_event(raw: Any, max_bytes: int = 256 * 1024) -> ValidEvent:
    """Validate one wire-shaped event; raise InvalidEvent listing every error."""
    if isinstance(raw, str | bytes):
        raw = parse_json(raw)
    if not isinstance(raw, dict):
        raise InvalidEvent(
            [{"field": "event", "message": f"an event is a JSON object, not {type(raw).__name__}"}]
        )
    problem = storage_problem(raw)
    if problem:
        raise InvalidEvent([{"field": "event", "message": problem}])
    size = payload_size(raw)
    if size > max_bytes:
        raise InvalidEvent(
            [
                {
                    "field": "event",
                    "message": f"payload is {size} bytes, over the {max_bytes}-byte limit",
                }
            ]
        )
    errors: list[dict[str, str]] = []
    envelope: Envelope | None = None
    try:
        envelope = Envelope.model_validate(raw)
    except ValidationError as exc:
        errors.extend(_errors(exc))
    event_type = raw.get("eventType")
    schema = DATA_SCHEMAS.get(event_type) if isinstance(event_type, str) else None
    if isinstance(event_type, str) and schema is None:
        errors.append(
            {
                "field": "eventType",
                "message": f"unknown event type {event_type!r}; known: " + ", ".join(EVENT_TYPES),
            }
        )
    data: dict[str, Any] = {}
    if schema is not None and isinstance(raw.get("data"), dict):
        try:
            data = schema.model_validate(raw["data"]).model_dump(mode="json", by_alias=True)
        except ValidationError as exc:
            errors.extend(_errors(exc, "data"))
    if errors or envelope is None:
        raise InvalidEvent(errors)
    meta = envelope.metadata
    timestamp = envelope.timestamp or dt.datetime.now(dt.UTC)
    metadata = meta.model_dump(mode="json", by_alias=True, exclude_none=True)
    return ValidEvent(
        event_id=envelope.event_id or canonical_id(raw),
        event_type=envelope.event_type,
        tenant_id=envelope.tenant_id,
        timestamp=timestamp.isoformat(),
        source=envelope.source,
        data=data,
        user_id=meta.user_id,
        priority=meta.priority,
        channels=tuple(meta.channels) if meta.channels else None,
        metadata=metadata,
    )

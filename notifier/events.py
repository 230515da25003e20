"""The event wire shape and the typed `data` of every event type (DESIGN.md §2).

Validation collects every error at once so a caller can fix a bad event in one go.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Literal

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
)
from pydantic.alias_generators import to_camel

from config.settings import CHANNELS

Priority = Literal["low", "medium", "high", "critical"]
Channel = Literal["line", "email", "sms", "web_push", "slack", "topic"]
PRIORITIES: tuple[str, ...] = ("low", "medium", "high", "critical")


class InvalidEvent(ValueError):
    """An event that cannot be accepted; `errors` lists every problem found."""

    def __init__(self, errors: list[dict[str, str]]):
        self.errors = errors
        lines = "; ".join(f"{e['field']}: {e['message']}" for e in errors)
        super().__init__(f"invalid event: {lines}")


class _Data(BaseModel):
    """Event data: camelCase on the wire, unknown fields kept."""

    model_config = ConfigDict(extra="allow", alias_generator=to_camel)


class _MoneyMixin(_Data):
    amount: Decimal
    currency: str = Field(pattern=r"^[A-Z]{3}$", description="ISO 4217 code")

    @field_validator("amount")
    @classmethod
    def _finite(cls, value: Decimal) -> Decimal:
        if not value.is_finite():
            raise ValueError("amount must be a finite number")
        return value


class FileUploaded(_Data):
    file_name: str = Field(min_length=1)
    category: str
    uploaded_by: str
    size_bytes: int = Field(ge=0)


class FileProcessed(_Data):
    file_name: str = Field(min_length=1)
    category: str
    status: Literal["completed", "failed"]
    download_url: str | None = None


class FileVirusDetected(_Data):
    file_name: str = Field(min_length=1)
    uploaded_by: str = Field(min_length=1)
    threat_name: str


class MemberRegistered(_Data):
    member_name: str = Field(min_length=1)


class MemberCheckedIn(_Data):
    member_name: str = Field(min_length=1)
    checked_in_at: AwareDatetime
    location: str | None = None


class MembershipExpiring(_Data):
    member_name: str = Field(min_length=1)
    membership_type: str
    expiry_date: dt.date
    days_left: int = Field(ge=0)


class CourseBookingConfirmed(_Data):
    course_id: str
    course_name: str
    instructor_name: str
    start_time: AwareDatetime
    location: str


class CourseCancelled(_Data):
    course_id: str
    course_name: str
    start_time: AwareDatetime
    reason: str | None = None


class CourseReminder(_Data):
    course_id: str
    course_name: str
    instructor_name: str
    start_time: AwareDatetime
    location: str
    remaining_slots: int = Field(ge=0)


class PaymentSuccess(_MoneyMixin):
    payment_id: str
    description: str | None = None


class PaymentFailed(_MoneyMixin):
    payment_id: str
    reason: str
    retry_url: str | None = None


class InvoiceGenerated(_MoneyMixin):
    invoice_number: str
    download_url: str


class SystemBackupCompleted(_Data):
    backup_id: str
    size_bytes: int = Field(ge=0)
    completed_at: AwareDatetime


class SystemMaintenance(_Data):
    starts_at: AwareDatetime
    ends_at: AwareDatetime
    message: str


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
    timestamp: AwareDatetime | None = None
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


if set(CHANNELS) != set(Channel.__args__):  # type: ignore[attr-defined]
    raise RuntimeError("events.Channel and settings.CHANNELS list different channels")

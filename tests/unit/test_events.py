from __future__ import annotations

import json

import pytest

from notifier.events import EVENT_TYPES, InvalidEvent, canonical_id, validate_event
from tests.helpers import event
from tests.unit.samples import SAMPLE_DATA


def fields(exc: pytest.ExceptionInfo[InvalidEvent]) -> set[str]:
    return {e["field"] for e in exc.value.errors}


def test_all_fourteen_types_have_schemas_and_samples() -> None:
    assert len(EVENT_TYPES) == 14
    assert set(SAMPLE_DATA) == set(EVENT_TYPES)


@pytest.mark.parametrize("event_type", EVENT_TYPES)
def test_every_type_validates_its_sample(event_type: str) -> None:
    valid = validate_event(event(event_type))
    assert valid.event_type == event_type
    assert valid.tenant_id == "gym-a"
    # camelCase on the wire is kept in the normalized data
    for key in SAMPLE_DATA[event_type]:
        assert key in valid.data


@pytest.mark.parametrize("event_type", EVENT_TYPES)
def test_every_required_field_is_required(event_type: str) -> None:
    sample = SAMPLE_DATA[event_type]
    optional = {"downloadUrl", "location", "reason", "description", "retryUrl"}
    for key in sample:
        if key in optional:
            continue
        data = {k: v for k, v in sample.items() if k != key}
        with pytest.raises(InvalidEvent) as exc:
            validate_event(event(event_type, data=data))
        assert f"data.{key}" in fields(exc)


def test_unknown_fields_are_kept() -> None:
    ev = event("member.registered")
    ev["data"]["favouriteClass"] = "Spin"
    assert validate_event(ev).data["favouriteClass"] == "Spin"


def test_every_error_is_listed_at_once() -> None:
    bad = {
        "eventType": "payment.failed",
        "tenantId": "",
        "data": {"amount": "twelve", "currency": "usd"},
        "metadata": {"priority": "urgent", "channels": ["pigeon"]},
    }
    with pytest.raises(InvalidEvent) as exc:
        validate_event(bad)
    assert {
        "tenantId",
        "metadata.priority",
        "metadata.channels.0",
        "data.amount",
        "data.currency",
        "data.paymentId",
        "data.reason",
    } <= fields(exc)
    assert "data.amount" in str(exc.value)


def test_unknown_type_is_named() -> None:
    with pytest.raises(InvalidEvent) as exc:
        validate_event(event("payment.success", eventType="payment.refunded"))
    assert "unknown event type 'payment.refunded'" in str(exc.value)


@pytest.mark.parametrize(
    ("event_type", "field", "value"),
    [
        ("member.membership_expiring", "expiryDate", "2026-13-40"),
        ("course.reminder", "startTime", "tomorrow at noon"),
        ("course.reminder", "startTime", "2026-11-23T19:00:00"),  # no offset
        ("member.membership_expiring", "daysLeft", "seven"),
        ("file.uploaded", "sizeBytes", -1),
        ("file.processed", "status", "half-done"),
        ("payment.success", "amount", "NaN"),
    ],
)
def test_bad_values_are_rejected(event_type: str, field: str, value: object) -> None:
    ev = event(event_type)
    ev["data"][field] = value
    with pytest.raises(InvalidEvent) as exc:
        validate_event(ev)
    assert f"data.{field}" in fields(exc)


def test_amount_accepts_number_or_decimal_string() -> None:
    for amount in (1200, "1200.50", 99.5):
        ev = event("payment.success")
        ev["data"]["amount"] = amount
        assert validate_event(ev).data["amount"] is not None


def test_malformed_json_is_a_clear_error() -> None:
    with pytest.raises(InvalidEvent) as exc:
        validate_event('{"eventType": "member.registered", ')
    assert "malformed JSON" in str(exc.value)


@pytest.mark.parametrize("raw", [[], "[]", 42, "null"])
def test_non_object_is_rejected(raw: object) -> None:
    with pytest.raises(InvalidEvent) as exc:
        validate_event(raw)
    assert "JSON object" in str(exc.value)


def test_payload_over_256kb_is_rejected() -> None:
    ev = event("member.registered")
    ev["data"]["memberName"] = "x" * (1024 * 1024)
    with pytest.raises(InvalidEvent) as exc:
        validate_event(ev)
    assert "over the 262144-byte limit" in str(exc.value)


def test_unknown_envelope_key_is_rejected() -> None:
    with pytest.raises(InvalidEvent) as exc:
        validate_event(event("member.registered", tenant="gym-a", eventTipe="x"))
    assert "eventTipe" in fields(exc)


def test_canonical_id_is_stable_and_ignores_key_order() -> None:
    a = event("member.registered")
    b = json.loads(json.dumps(dict(reversed(list(a.items())))))
    assert canonical_id(a) == canonical_id(b)
    assert validate_event(a).event_id == validate_event(b).event_id
    c = event("member.registered", user="u2")
    assert canonical_id(a) != canonical_id(c)


def test_explicit_event_id_wins() -> None:
    assert validate_event(event("member.registered", eventId="evt-1")).event_id == "evt-1"


def test_deep_nesting_is_rejected_without_recursion() -> None:
    value: object = "x"
    for _ in range(5000):
        value = {"a": value}
    ev = event("member.registered")
    ev["data"]["junk"] = value
    with pytest.raises(InvalidEvent, match="nested more than 32 levels"):
        validate_event(ev)


def test_nul_characters_are_rejected() -> None:
    with pytest.raises(InvalidEvent, match="NUL character"):
        validate_event(event("member.registered", data={"memberName": "A\x00"}))

"""Bounded input, bounded output: every field of the 14 data schemas has bounds, every
rendered part fits its channel, a message that cannot be built fails for good naming its
template, and recovery never sends a delivery past its attempt budget."""

from __future__ import annotations

import datetime as dt
import email
import json
import typing
from decimal import Decimal
from email.policy import default as default_policy
from typing import Any

import pytest
from pydantic import AwareDatetime
from sqlalchemy import select, update

from channels.base import Message, PermanentChannelError
from channels.email import SUBJECT_MAX, build_mime
from channels.line import BUTTONS_TEXT_LIMIT, LineChannel, utf16_len
from channels.registry import channel_names
from channels.slack import FALLBACK_MAX, HEADER_MAX, SECTION_MAX, SlackChannel
from channels.sms import SnsSmsChannel, sms_parts
from channels.topic import SUBJECT_MAX as TOPIC_SUBJECT_MAX
from channels.web_push import MAX_PLAINTEXT_BYTES, WebPushChannel
from config.settings import get_settings
from notifier.db import session_scope
from notifier.digests import flush, send_digest
from notifier.directory import import_document
from notifier.events import DATA_SCHEMAS, INT64_MAX, InvalidEvent, validate_event
from notifier.models import (
    DeadLetter,
    Delivery,
    DeliveryStatus,
    Digest,
    Event,
    OutboxMessage,
    utcnow,
)
from notifier.pipeline import accept, plan, requeue_stalled
from notifier.rendering import brand, render
from notifier.sending import send_chunk
from tests.helpers import directory, event, person
from tests.integration.conftest import count, deliveries


def problems(ev: dict[str, Any]) -> dict[str, str]:
    with pytest.raises(InvalidEvent) as exc:
        validate_event(ev)
    return {error["field"]: error["message"] for error in exc.value.errors}


def with_data(event_type: str, **data: Any) -> dict[str, Any]:
    ev = event(event_type)
    ev["data"].update(data)
    return ev


# -- every field of every schema is bounded ---------------------------------------------


def _kinds(annotation: Any) -> set[Any]:
    """The plain types a field annotation allows (Annotated and Optional unwrapped)."""
    if typing.get_origin(annotation) is typing.Annotated:
        return _kinds(typing.get_args(annotation)[0])
    if typing.get_origin(annotation) in (typing.Union, type(int | None)):
        return set().union(*(_kinds(arg) for arg in typing.get_args(annotation)))
    if typing.get_origin(annotation) is typing.Literal:
        return {typing.Literal}
    return {annotation}


FIELDS = [
    (event_type, info.alias or name, _kinds(info.annotation))
    for event_type, schema in DATA_SCHEMAS.items()
    for name, info in schema.model_fields.items()
]
OVERSIZED: dict[Any, Any] = {
    str: "x" * 5_000,
    int: 2**64,
    Decimal: "1e100000",
}


def test_every_field_of_the_14_schemas_has_a_known_kind() -> None:
    assert len(DATA_SCHEMAS) == 14
    known = {str, int, Decimal, AwareDatetime, dt.date, typing.Literal, type(None)}
    assert all(kinds <= known for _, _, kinds in FIELDS), FIELDS


@pytest.mark.parametrize(
    ("event_type", "field", "kind"),
    [(t, f, k) for t, f, kinds in FIELDS for k in kinds & set(OVERSIZED)],
)
def test_an_oversized_value_is_refused_in_every_field(
    event_type: str, field: str, kind: type
) -> None:
    found = problems(with_data(event_type, **{field: OVERSIZED[kind]}))
    assert f"data.{field}" in found, found


def test_a_huge_exponent_amount_is_refused_with_a_clear_message() -> None:
    for amount in ("1e100000", "1e-100000", "9" * 40, 1e300):
        found = problems(with_data("payment.failed", amount=amount))
        assert "digits" in found["data.amount"], found
    accepted = validate_event(with_data("payment.failed", amount="12345678901234.5678"))
    assert accepted.data["amount"] == "12345678901234.5678"


def test_integers_stay_within_64_bits() -> None:
    assert "data.sizeBytes" in problems(with_data("system.backup_completed", sizeBytes=10**400))
    assert "data.sizeBytes" in problems(with_data("file.uploaded", sizeBytes=INT64_MAX + 1))
    ok = validate_event(with_data("system.backup_completed", sizeBytes=INT64_MAX))
    assert ok.data["sizeBytes"] == INT64_MAX


@pytest.mark.parametrize(
    "url",
    [
        "javascript:alert(document.cookie)",
        "JavaScript:alert(1)",
        "data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==",
        "https://a.example/> <!channel> <https://evil.example|Verify your card",
        "https://a.example/x|label",
        'https://a.example/"onmouseover="alert(1)',
        "https://a.example/\r\nSet-Cookie: x=1",
        "ftp://files.example/a.pdf",
        "//evil.example/a",
        "https:///no-host",
        "https://a.example/" + "x" * 3000,
    ],
)
def test_a_url_field_takes_only_a_plain_http_url(url: str) -> None:
    for event_type, field in (
        ("payment.failed", "retryUrl"),
        ("invoice.generated", "downloadUrl"),
        ("file.processed", "downloadUrl"),
    ):
        found = problems(with_data(event_type, **{field: url}))
        assert f"data.{field}" in found, (url, found)


def test_a_refused_url_says_why() -> None:
    found = problems(with_data("payment.failed", retryUrl="javascript:alert(1)"))
    assert "http or https" in found["data.retryUrl"] and "javascript:" in found["data.retryUrl"]
    found = problems(with_data("payment.failed", retryUrl="https://a.example/a b|c"))
    assert "percent-encode" in found["data.retryUrl"]


def test_line_breaks_are_refused_in_one_line_fields_and_kept_in_free_text() -> None:
    found = problems(with_data("member.registered", memberName="Amy\r\nBcc: evil@x.example"))
    assert "control character" in found["data.memberName"]
    ok = validate_event(with_data("payment.failed", reason="Declined.\r\nCall your bank."))
    assert ok.data["reason"] == "Declined.\r\nCall your bank."


# -- every rendered part is cut to its channel's limit ----------------------------------


def _largest(event_type: str) -> dict[str, Any]:
    """The sample data with every string at its largest accepted length (wide characters:
    the UTF-16 and byte budgets are the tight ones) and numbers at their bounds."""
    data = dict(event(event_type)["data"])
    schema = DATA_SCHEMAS[event_type]
    properties = schema.model_json_schema(by_alias=True)["properties"]
    for name, info in schema.model_fields.items():
        alias = info.alias or name
        kinds = _kinds(info.annotation)
        if str in kinds and "Url" not in alias and typing.Literal not in kinds:
            options = properties[alias].get("anyOf", [properties[alias]])
            limits = [option["maxLength"] for option in options if "maxLength" in option]
            if limits:  # (the currency is a pattern: three letters)
                data[alias] = "😀" * limits[0]
        elif int in kinds:
            data[alias] = INT64_MAX
        elif Decimal in kinds:
            data[alias] = "99999999999999.9999"
        elif alias.endswith("Url"):
            data[alias] = "https://a.example/" + "p" * 2000
    return validate_event({**event(event_type), "data": data}).data


def _message(event_type: str, channel: str) -> Message:
    context = {
        "data": _largest(event_type),
        "event": {"id": "e-1", "type": event_type, "priority": "high"},
        "recipient": {"id": "u1", "name": "😀" * 200, "locale": "en", "timezone": "UTC"},
        "tenant": {"id": "gym-a", "name": "Gym", "locale": "en", "timezone": "UTC"},
        "brand": brand(None),
        "links": {"unsubscribe": "https://kyo.app/u/x"},
    }
    rendered = render(event_type, channel, ["en"], context)
    return Message(
        delivery_id=1,
        tenant_id="gym-a",
        event_type=event_type,
        channel=channel,
        recipient="u1",
        address={"email": "u1@example.com", "sms": "+886912345678"}.get(channel, "U" + "a" * 32),
        subject=rendered.subject,
        text=rendered.text,
        html=rendered.html,
        priority="high",
        attributes={"locale": "en", "event": {"eventId": "e-1"}, "category": "PaymentUpdates"},
    )


@pytest.mark.parametrize("event_type", list(DATA_SCHEMAS))
def test_every_channel_payload_fits_its_limit_with_the_largest_accepted_data(
    event_type: str,
) -> None:
    assert set(channel_names()) == {"email", "line", "sms", "web_push", "slack", "topic"}
    mail = build_mime(_message(event_type, "email"), sender="n@kyo.app", max_body_len=100_000)
    parsed = email.message_from_bytes(mail.raw, policy=default_policy)
    assert len(str(parsed["Subject"])) <= SUBJECT_MAX

    [line] = LineChannel().payload_for(_message(event_type, "line"))
    assert utf16_len(line.text) <= 5000

    sms = SnsSmsChannel().payload_for(_message(event_type, "sms"))
    assert sms_parts(sms["Message"]) <= 2  # NOTIFIER_SMS_MAX_PARTS' default

    push = WebPushChannel().payload_for(_message(event_type, "web_push"))
    assert len(push) <= MAX_PLAINTEXT_BYTES and json.loads(push)

    slack = SlackChannel().payload_for(_message(event_type, "slack"))
    assert len(slack["text"]) <= FALLBACK_MAX
    for block in slack["blocks"]:
        if block["type"] == "header":
            assert len(block["text"]["text"]) <= HEADER_MAX
        if block["type"] == "section":
            assert len(block["text"]["text"]) <= SECTION_MAX

    topic_subject = render(event_type, "topic", ["en"], _context_of(event_type)).subject
    assert len(topic_subject) <= TOPIC_SUBJECT_MAX + 1


def _context_of(event_type: str) -> dict[str, Any]:
    return {
        "data": _largest(event_type),
        "event": {"id": "e-1", "type": event_type, "priority": "high"},
        "recipient": {"id": "u1", "name": "x", "locale": "en", "timezone": "UTC"},
        "tenant": {"id": "gym-a", "name": "Gym", "locale": "en", "timezone": "UTC"},
        "brand": brand(None),
        "links": {"unsubscribe": None},
    }


def test_line_buttons_text_is_cut_to_its_limit() -> None:
    buttons = {
        "type": "template",
        "altText": "😀" * 2000,
        "template": {
            "type": "buttons",
            "title": "t" * 100,
            "text": "x" * 1000,
            "actions": [{"type": "uri", "label": "Open", "uri": "https://a.example/"}],
        },
    }
    base = _message("payment.failed", "line")
    message = Message(**{**base.__dict__, "attributes": {"line_messages": [buttons]}})
    [model] = LineChannel().payload_for(message)
    assert utf16_len(model.alt_text) <= 400
    assert len(model.template.title) <= 40 and len(model.template.text) <= 60
    no_title = {**buttons, "template": {**buttons["template"], "title": None}}
    message = Message(**{**base.__dict__, "attributes": {"line_messages": [no_title]}})
    [model] = LineChannel().payload_for(message)
    assert len(model.template.text) <= BUTTONS_TEXT_LIMIT


# -- a message that cannot be built fails for good; recovery respects the budget --------


@pytest.fixture
def backup_deliveries(db: None) -> list[int]:
    """A backup notice by email to the tenant's admin, planned: its delivery ids."""
    admin = person("admin-1", role="admin", preferences={"priority": {"high": ["email"]}})
    import_document(directory(admin))
    metadata = {"priority": "high", "channels": ["email"]}
    accepted = accept(event("system.backup_completed", user=None, metadata=metadata))
    assert accepted.event_pk is not None
    [ids] = [ids for channel, ids in plan(accepted.event_pk).chunks if channel == "email"]
    return ids


def _store_data_of_all(field: str, value: Any) -> None:
    """Put a value in the stored events as an older release (without the bounds) kept it."""
    with session_scope() as session:
        for row in session.scalars(select(Event)).all():
            payload = dict(row.payload)
            payload["data"] = {**payload["data"], field: value}
            session.execute(update(Event).where(Event.id == row.id).values(payload=payload))


def test_a_rendering_overflow_fails_the_delivery_naming_the_template(
    backup_deliveries: list[int],
) -> None:
    _store_data_of_all("sizeBytes", 10**300 * 10**100)  # float() of it raises OverflowError

    outcome = send_chunk("email", backup_deliveries)

    assert (outcome.sent, outcome.failed, outcome.retry_ids) == (0, 1, [])
    with session_scope() as session:
        row = session.get(Delivery, backup_deliveries[0])
        assert row is not None and row.status == DeliveryStatus.FAILED, row and row.reason
        assert "system.backup_completed/email" in (row.reason or "")
        assert "OverflowError" in (row.reason or "")
        assert session.scalars(select(DeadLetter)).one().delivery_id == row.id
    assert requeue_stalled(now=utcnow() + dt.timedelta(days=1)) == []


def _stall(ids: list[int], attempts: int) -> None:
    """The send task died mid-send (`attempts` claims so far) long ago."""
    long_ago = utcnow() - dt.timedelta(hours=2)
    with session_scope() as session:
        session.execute(
            update(Delivery)
            .where(Delivery.id.in_(ids))
            .values(status=DeliveryStatus.SENDING, claimed_at=long_ago, attempts=attempts)
        )


def test_recovery_requeues_a_stalled_delivery_within_its_budget(
    backup_deliveries: list[int],
) -> None:
    _stall(backup_deliveries, attempts=get_settings().send_max_retries)
    assert requeue_stalled() == [("email", backup_deliveries)]


def test_recovery_fails_a_stalled_delivery_that_spent_its_budget(
    backup_deliveries: list[int],
) -> None:
    budget = get_settings().send_max_retries + 1
    _stall(backup_deliveries, attempts=budget)  # e.g. a message that kills its worker

    assert requeue_stalled() == []

    with session_scope() as session:
        row = session.get(Delivery, backup_deliveries[0])
        assert row is not None and row.status == DeliveryStatus.FAILED
        assert row.attempts == budget
        assert f"the last of {budget} attempts never finished" in (row.reason or "")
        assert session.scalars(select(DeadLetter)).one().delivery_id == row.id
    assert requeue_stalled(now=utcnow() + dt.timedelta(days=1)) == []


def _waiting_digest() -> int:
    """A digest of two check-ins for u1 by email, due: its id."""
    import_document(directory(person("u1", preferences={"priority": {"low": ["email"]}})))
    now = utcnow()
    for i in range(2):
        ev = event(
            "member.checked_in", eventId=f"ci-{i}", metadata={"userId": "u1", "channels": ["email"]}
        )
        accepted = accept(ev)
        assert accepted.event_pk is not None
        assert plan(accepted.event_pk, now=now).chunks == []  # batched
    [digest_id] = flush(now=now + dt.timedelta(hours=1))
    return digest_id


def test_a_digest_that_spent_its_budget_is_failed_not_sent_again(db: None) -> None:
    digest_id = _waiting_digest()
    budget = get_settings().send_max_retries + 1
    long_ago = utcnow() - dt.timedelta(hours=2)
    with session_scope() as session:  # its last attempt's worker was killed mid-send
        session.execute(
            update(Digest).values(status="sending", claimed_at=long_ago, attempts=budget)
        )
    assert flush() == [digest_id]

    assert send_digest(digest_id).status == "failed"

    assert count(OutboxMessage) == 0
    with session_scope() as session:
        digest = session.get(Digest, digest_id)
        assert digest is not None and digest.status == "failed"
        assert f"the last of {budget} attempts never finished" in (digest.reason or "")
    assert {d.status for d in deliveries()} == {"failed"}
    assert flush(now=utcnow() + dt.timedelta(days=1)) == []


def test_a_digest_that_cannot_be_built_fails_for_good_naming_the_template(db: None) -> None:
    digest_id = _waiting_digest()
    with session_scope() as session:  # a type a newer release no longer routes
        session.execute(update(Event).values(event_type="member.checked_in.v0"))

    assert send_digest(digest_id).status == "failed"

    with session_scope() as session:
        digest = session.get(Digest, digest_id)
        assert digest is not None and digest.status == "failed"
        assert "templates digest/email.* failed: KeyError" in (digest.reason or "")
    assert flush(now=utcnow() + dt.timedelta(days=1)) == []


def test_an_email_subject_is_cut_to_its_limit() -> None:
    base = _message("payment.failed", "email")
    long = Message(**{**base.__dict__, "subject": "Payment failed: " + "x" * 5000})
    mail = build_mime(long, sender="n@kyo.app", max_body_len=100_000)
    subject = str(email.message_from_bytes(mail.raw, policy=default_policy)["Subject"])
    assert len(subject) == SUBJECT_MAX and subject.endswith("…")


def test_an_error_building_a_payload_is_permanent_and_names_the_templates() -> None:
    base = _message("payment.failed", "slack")
    broken = Message(**{**base.__dict__, "subject": None})  # type: ignore[arg-type]
    with pytest.raises(PermanentChannelError) as exc:
        SlackChannel().send(broken)
    assert "templates en/payment.failed/slack.*" in str(exc.value)
    assert "AttributeError" in str(exc.value)

"""The web app through FastAPI's TestClient, against the real database, broker and worker:
the events API, the SES (SNS) and LINE webhooks, tracked links, one-click unsubscribe,
metrics, health, and schemathesis over the app's own OpenAPI document."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import html
import json
import re
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import urlsplit

import pytest
import schemathesis
from celery import Celery
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from sqlalchemy import select

from config.settings import get_settings, reset_settings
from notifier import InvalidEvent, publish
from notifier.db import session_scope
from notifier.directory import import_document
from notifier.models import (
    Click,
    Delivery,
    Event,
    OutboxMessage,
    Suppression,
    Tenant,
    User,
    utcnow,
)
from notifier.signing import sign, tracked_url, unsubscribe_url
from notifier.web.app import create_app
from notifier.web.auth import issue_api_key
from notifier.web.links import malformed
from tests.fixtures.sns import (
    CERT_URL,
    SUBSCRIBE_URL,
    TOPIC_ARN,
    UNKNOWN_TOPIC_ARN,
    CertificateServer,
    SnsSigner,
    ses_notification,
)
from tests.helpers import TENANT, directory, event, person
from tests.integration.conftest import count, deliveries, wait_settled

OTHER_TENANT = "gym-b"
LINE_SECRET = "line-channel-secret-for-tests"
SES_MESSAGE_ID = "0100018c-ses-message-id-000000"


class Web:
    def __init__(self, client: TestClient, certificates: CertificateServer, key: str):
        self.client = client
        self.certificates = certificates
        self.signer = certificates.signer
        self.key = key

    def post_events(self, body: Any, key: str | None = None) -> Any:
        return self.client.post(
            "/events", json=body, headers={"Authorization": f"Bearer {key or self.key}"}
        )

    def post_sns(self, message: Any, message_type: str | None = "auto") -> Any:
        headers = {"Content-Type": "text/plain; charset=UTF-8"}  # as SNS sends it
        if message_type == "auto":
            message_type = message["Type"]
        if message_type is not None:
            headers["x-amz-sns-message-type"] = message_type
        return self.client.post("/webhooks/ses", content=json.dumps(message), headers=headers)


@pytest.fixture
def environment() -> Iterator[Callable[..., None]]:
    """Set environment variables for the app's settings; all undone after the test."""
    with pytest.MonkeyPatch.context() as patch:

        def configure(**values: str | None) -> None:
            for name, value in values.items():
                if value is None:
                    patch.delenv(name, raising=False)
                else:
                    patch.setenv(name, value)
            reset_settings()

        configure(NOTIFIER_SES_FEEDBACK_TOPIC_ARNS=TOPIC_ARN, LINE_CHANNEL_SECRET=LINE_SECRET)
        yield configure
    reset_settings()


@pytest.fixture
def web(db: None, environment: Callable[..., None]) -> Iterator[Web]:
    import_document(directory(person("u1"), person("u2")))
    import_document(directory(person("u1", tenant=OTHER_TENANT), tenant=OTHER_TENANT))
    certificates = CertificateServer(SnsSigner())
    app = create_app(cert_fetcher=certificates, outbox_page=True, api_docs=True)
    # The dev pages answer to this machine's names only.
    with TestClient(app, base_url="http://localhost") as client:
        yield Web(client, certificates, issue_api_key(TENANT))


# -- POST /events ----------------------------------------------------------------------


@pytest.mark.usefixtures("celery_worker")
def test_single_event_is_queued_and_processed(web: Web) -> None:
    response = web.post_events(event("payment.success", eventId="api-1"))
    assert response.status_code == 200, response.text
    assert response.json() == {
        "queued": 1,
        "duplicate": 0,
        "rejected": 0,
        "results": [{"eventId": "api-1", "status": "queued", "errors": []}],
    }
    rows = wait_settled(expected=3)
    assert {(r.channel, r.status) for r in rows} == {
        ("email", "sent"),
        ("line", "sent"),
        ("topic", "sent"),
    }


@pytest.mark.usefixtures("celery_worker")
def test_a_batch_of_100_is_queued_and_processed(web: Web) -> None:
    batch = [event("payment.success", eventId=f"batch-{i}") for i in range(100)]
    response = web.client.post("/events", json=batch, headers={"X-API-Key": web.key})
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["queued"], body["rejected"]) == (100, 0)
    assert [r["eventId"] for r in body["results"]] == [f"batch-{i}" for i in range(100)]
    wait_settled(expected=300, timeout=120)
    with session_scope() as session:
        stored = set(session.scalars(select(Event.event_id).where(Event.tenant_id == TENANT)))
    assert stored == {f"batch-{i}" for i in range(100)}


@pytest.mark.usefixtures("celery_worker")
def test_a_batch_of_101_is_refused_whole(web: Web) -> None:
    batch = [event("payment.success", eventId=f"big-{i}") for i in range(101)]
    response = web.post_events(batch)
    assert response.status_code == 422
    assert "at most 100 events" in response.json()["detail"]
    # A later event is processed; none of the refused batch ever was.
    assert web.post_events(event("payment.success", eventId="after")).status_code == 200
    wait_settled(expected=3)
    assert count(Event) == 1


def test_an_oversized_body_is_refused(web: Web, environment: Callable[..., None]) -> None:
    environment(NOTIFIER_MAX_PAYLOAD_BYTES="100")  # the body limit becomes 100 * 100 bytes
    padding = "x" * 10_001
    response = web.client.post(
        "/events", content=padding, headers={"Authorization": f"Bearer {web.key}"}
    )
    assert response.status_code == 413
    assert "10000-byte limit" in response.json()["detail"]


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer nk.Z3ltLWE.wrong-secret"},
        {"Authorization": "Bearer not-a-key"},
        {"X-API-Key": "nk.Z3ltLWI.wrong-secret"},
        {"Authorization": "Basic dXNlcjpwYXNz"},
        {"X-API-Key": "nk.Z3ltLWEA.x"},  # the tenant part decodes to "gym-a\x00"
    ],
)
def test_missing_or_wrong_api_key_is_401(web: Web, headers: dict[str, str]) -> None:
    response = web.client.post("/events", json=event(), headers=headers)
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"
    assert count(Event) == 0


def test_a_new_key_revokes_the_old_one(web: Web) -> None:
    old = web.key
    new = issue_api_key(TENANT)
    assert web.post_events([], key=old).status_code == 401
    assert web.post_events([], key=new).status_code == 400  # authenticated; empty batch


@pytest.mark.usefixtures("celery_worker")
def test_events_of_another_tenant_are_rejected(web: Web) -> None:
    foreign = event("payment.success", tenant=OTHER_TENANT, eventId="foreign-1")
    unknown = event("payment.success", tenant="no-such-gym", eventId="foreign-2")
    own = event("payment.success", eventId="own-1")
    response = web.post_events([foreign, unknown, own])
    assert response.status_code == 403
    body = response.json()
    assert (body["queued"], body["duplicate"], body["rejected"]) == (1, 0, 2)
    message = "this API key sends its own tenant's events only"
    for result in body["results"][:2]:
        assert result["status"] == "rejected"
        # The same answer whether the other tenant exists or not.
        assert result["errors"] == [{"field": "tenantId", "message": message}]
    assert body["results"][2] == {"eventId": "own-1", "status": "queued", "errors": []}
    # A key of the other tenant is needed to send its events.
    other_key = issue_api_key(OTHER_TENANT)
    assert web.post_events(foreign, key=other_key).status_code == 200
    rows = wait_settled(expected=6)
    people = {(r.tenant_id, r.recipient) for r in rows if r.channel != "topic"}
    assert people == {(TENANT, "u1"), (OTHER_TENANT, "u1")}


BAD_EVENTS: list[dict[str, Any]] = [
    event("payment.success", eventType="no.such_type"),
    event("payment.success", data={"amount": "12"}),
    event("member.membership_expiring", data={"memberName": "A", "expiryDate": "soon"}),
    event("payment.success", user="nobody"),
    event("payment.success", timestamp="yesterday", extra="field"),
]


@pytest.mark.parametrize("bad", BAD_EVENTS, ids=lambda e: e["eventType"])
def test_validation_errors_are_those_of_publish(web: Web, bad: dict[str, Any]) -> None:
    with pytest.raises(InvalidEvent) as raised:
        publish(bad)
    response = web.post_events(bad)
    # 409: valid, but sent to a person the directory does not have.
    assert response.status_code == (409 if bad["metadata"].get("userId") == "nobody" else 422)
    (result,) = response.json()["results"]
    assert result["status"] == "rejected"
    assert result["errors"] == raised.value.errors
    assert result["errors"]  # every problem is named


@pytest.mark.parametrize(
    ("body", "status", "detail"),
    [
        (b'{"eventType": ', 400, "malformed JSON"),
        (b"", 400, "empty request body"),
        (b"\xff\xfe", 400, "malformed JSON"),
        (b"[]", 400, "empty batch"),
        (b"[" * 100_000 + b"]" * 100_000, 400, "malformed JSON"),
    ],
)
def test_malformed_bodies_get_a_clear_400(web: Web, body: bytes, status: int, detail: str) -> None:
    response = web.client.post(
        "/events",
        content=body,
        headers={"Authorization": f"Bearer {web.key}", "Content-Type": "application/json"},
    )
    assert response.status_code == status
    assert detail in response.json()["detail"]


@pytest.mark.parametrize("depth", [40, 500])
def test_deeply_nested_events_are_rejected_not_a_500(web: Web, depth: int) -> None:
    deep = event("payment.success", eventId="deep")
    deep["data"]["note"] = json.loads("[" * depth + "]" * depth)
    response = web.post_events(deep)
    assert response.status_code == 422
    assert response.json()["results"][0]["errors"] == [
        {"field": "event", "message": "nested over 32 levels deep"}
    ]
    assert count(Event) == 0


@pytest.mark.parametrize("where", ["value", "key", "userId"])
def test_nul_characters_are_rejected_not_a_500(web: Web, where: str) -> None:
    bad = event("payment.success", eventId="nul")
    if where == "value":
        bad["data"]["description"] = "a\x00b"
    elif where == "key":
        bad["data"]["a\x00b"] = 1
    else:
        bad["metadata"]["userId"] = "u\x001"
    response = web.post_events(bad)
    assert response.status_code == 422
    assert "NUL character" in response.json()["results"][0]["errors"][0]["message"]
    assert count(Event) == 0


def test_non_object_items_are_rejected_per_item(web: Web) -> None:
    response = web.post_events([42, "text", None])
    assert response.status_code == 422
    results = response.json()["results"]
    assert [r["errors"][0]["field"] for r in results] == ["event", "event", "event"]


def test_openapi_documents_the_events_api(web: Web) -> None:
    spec = web.client.get("/openapi.json").json()
    post = spec["paths"]["/events"]["post"]
    schema = post["requestBody"]["content"]["application/json"]["schema"]
    assert schema["oneOf"][1]["maxItems"] == 100
    assert {"200", "400", "401", "413", "422"} <= set(post["responses"])
    event_schema = spec["components"]["schemas"]["PaymentSuccessEvent"]
    assert {"eventType", "tenantId", "data"} <= set(event_schema["required"])
    assert "eventId" in spec["components"]["schemas"]["EventResult"]["properties"]


# -- POST /webhooks/ses ----------------------------------------------------------------


def _sent_email(tenant: str = TENANT, recipient: str = "u1", event_id: str = "ev-1") -> int:
    with session_scope() as session:
        ev = Event(
            event_id=event_id,
            tenant_id=tenant,
            event_type="payment.success",
            status="accepted",
            payload={},
        )
        session.add(ev)
        session.flush()
        delivery = Delivery(
            event_pk=ev.id,
            tenant_id=tenant,
            recipient=recipient,
            channel="email",
            status="sent",
            attempts=1,
            provider_message_id=SES_MESSAGE_ID,
            sent_at=utcnow(),
        )
        session.add(delivery)
        session.flush()
        return delivery.id


def _suppressions() -> set[tuple[str, str, str]]:
    with session_scope() as session:
        rows = session.execute(
            select(Suppression.tenant_id, Suppression.channel, Suppression.address)
        )
        return {tuple(row) for row in rows}  # type: ignore[misc]


def _delivery(delivery_id: int) -> Delivery:
    (row,) = deliveries(id=delivery_id)
    return row


@pytest.mark.parametrize("version", ["1", "2"])
@pytest.mark.parametrize("subject", [None, "Amazon SES Email Event Notification"])
def test_permanent_bounce_suppresses_and_fails_the_delivery(
    web: Web, version: str, subject: str | None
) -> None:
    delivery_id = _sent_email()
    body = ses_notification("bounce_permanent", SES_MESSAGE_ID)
    message = web.signer.notification(body, version=version, subject=subject)
    response = web.post_sns(message)
    assert response.status_code == 200, response.text
    assert response.json() == {"status": "applied", "suppressed": 1}
    # Spelled as the directory has it (SES reported "U1@Example.com"), in the right tenant.
    assert _suppressions() == {(TENANT, "email", "u1@example.com")}
    row = _delivery(delivery_id)
    assert row.status == "failed"
    assert row.reason == "bounced: Permanent General"
    # Applying the same notification again (SNS retries) changes nothing.
    assert web.post_sns(message).json() == {"status": "applied", "suppressed": 0}
    assert web.certificates.requests == [CERT_URL]  # fetched once, then cached


def test_a_bounced_digest_fails_every_delivery_in_it(web: Web) -> None:
    # A digest email: several deliveries of one person sent as one SES message.
    in_digest = [_sent_email(event_id=f"digest-item-{i}") for i in range(3)]
    body = ses_notification("bounce_permanent", SES_MESSAGE_ID)
    assert web.post_sns(web.signer.notification(body)).json()["status"] == "applied"
    assert {_delivery(i).status for i in in_digest} == {"failed"}


@pytest.mark.usefixtures("celery_worker")
def test_a_bounced_address_is_not_mailed_again(web: Web) -> None:
    _sent_email()
    body = ses_notification("bounce_permanent", SES_MESSAGE_ID)
    assert web.post_sns(web.signer.notification(body)).status_code == 200
    assert web.post_events(event("payment.success", eventId="after-bounce")).status_code == 200
    rows = wait_settled(expected=4)
    email = [r for r in rows if r.channel == "email" and r.provider_message_id != SES_MESSAGE_ID]
    assert [(r.status, r.reason) for r in email] == [("suppressed", "address suppressed")]


def test_transient_bounce_is_only_noted(web: Web) -> None:
    delivery_id = _sent_email()
    body = ses_notification("bounce_transient", SES_MESSAGE_ID)
    response = web.post_sns(web.signer.notification(body))
    assert response.json() == {"status": "applied", "suppressed": 0}
    row = _delivery(delivery_id)
    assert (row.status, row.reason) == ("sent", "soft bounce: Transient MailboxFull")
    assert _suppressions() == set()


def test_complaint_suppresses(web: Web) -> None:
    delivery_id = _sent_email()
    body = ses_notification("complaint", SES_MESSAGE_ID)
    response = web.post_sns(web.signer.notification(body, version="1"))
    assert response.json() == {"status": "applied", "suppressed": 1}
    assert _suppressions() == {(TENANT, "email", "u1@example.com")}
    assert _delivery(delivery_id).reason == "complaint: abuse"


def test_delivery_notifications_and_unknown_messages_change_nothing(web: Web) -> None:
    delivery_id = _sent_email()
    delivered = web.signer.notification(ses_notification("delivery", SES_MESSAGE_ID))
    assert web.post_sns(delivered).json() == {"status": "ignored", "suppressed": 0}
    stranger = web.signer.notification(ses_notification("bounce_permanent", "other-message"))
    assert web.post_sns(stranger).json() == {"status": "unknown-message", "suppressed": 0}
    not_ses = web.signer.sign(
        {**web.signer.notification({}), "Message": "plain text, not SES"}, "2"
    )
    assert web.post_sns(not_ses).json() == {"status": "ignored", "suppressed": 0}
    assert _suppressions() == set()
    assert (_delivery(delivery_id).status, _delivery(delivery_id).reason) == ("sent", None)


def _tampered_message(web: Web, message: dict[str, Any]) -> dict[str, Any]:
    body = json.loads(message["Message"])
    body["bounce"]["bouncedRecipients"][0]["emailAddress"] = "u2@example.com"
    return {**message, "Message": json.dumps(body)}


def _signed_by_another_key(web: Web, message: dict[str, Any]) -> dict[str, Any]:
    return SnsSigner().sign({k: v for k, v in message.items() if k != "Signature"}, "2")


FORGERIES: dict[str, Callable[[Web, dict[str, Any]], tuple[dict[str, Any], str | None]]] = {
    "tampered Message": lambda w, m: (_tampered_message(w, m), "Notification"),
    "signed by another key": lambda w, m: (_signed_by_another_key(w, m), "Notification"),
    "unsigned": lambda w, m: ({k: v for k, v in m.items() if k != "Signature"}, "Notification"),
    "signature not base64": lambda w, m: ({**m, "Signature": "%%%"}, "Notification"),
    "missing header": lambda w, m: (m, None),
    "header differs from Type": lambda w, m: (m, "SubscriptionConfirmation"),
    "unknown TopicArn": lambda w, m: (
        w.signer.notification(json.loads(m["Message"]), topic=UNKNOWN_TOPIC_ARN),
        "Notification",
    ),
    "certificate on another host": lambda w, m: (
        w.signer.sign({**m, "SigningCertURL": "https://sns.evil.example.com/cert.pem"}),
        "Notification",
    ),
    "certificate over http": lambda w, m: (
        w.signer.sign({**m, "SigningCertURL": CERT_URL.replace("https:", "http:")}),
        "Notification",
    ),
    "certificate URL with a query": lambda w, m: (
        w.signer.sign({**m, "SigningCertURL": CERT_URL + "?x=1"}),
        "Notification",
    ),
    "certificate host with a port": lambda w, m: (
        w.signer.sign(
            {**m, "SigningCertURL": CERT_URL.replace(".amazonaws.com/", ".amazonaws.com:8443/")}
        ),
        "Notification",
    ),
    "unknown SignatureVersion": lambda w, m: ({**m, "SignatureVersion": "3"}, "Notification"),
    "version 1 label on a SHA256 signature": lambda w, m: (
        {**m, "SignatureVersion": "1"},
        "Notification",
    ),
}


@pytest.mark.parametrize("forgery", list(FORGERIES))
def test_forged_sns_messages_are_403(web: Web, forgery: str) -> None:
    delivery_id = _sent_email()
    genuine = web.signer.notification(ses_notification("bounce_permanent", SES_MESSAGE_ID))
    message, header = FORGERIES[forgery](web, genuine)
    response = web.post_sns(message, message_type=header)
    assert response.status_code == 403, response.text
    assert _suppressions() == set()
    assert _delivery(delivery_id).status == "sent"
    assert all(url == CERT_URL for url in web.certificates.requests)  # no other host fetched
    # The genuine message still goes through.
    assert web.post_sns(genuine).status_code == 200


def test_sns_fetch_failure_is_503_so_sns_retries(web: Web) -> None:
    web.certificates.down = True
    message = web.signer.notification(ses_notification("bounce_permanent", SES_MESSAGE_ID))
    assert web.post_sns(message).status_code == 503


def test_sns_body_that_is_not_json_is_400(web: Web) -> None:
    response = web.client.post(
        "/webhooks/ses", content=b"<xml/>", headers={"x-amz-sns-message-type": "Notification"}
    )
    assert response.status_code == 400


def test_subscription_confirmation_of_a_known_topic_is_confirmed(web: Web) -> None:
    response = web.post_sns(web.signer.subscription_confirmation())
    assert response.status_code == 200
    assert response.json()["status"] == "subscribed"
    assert web.certificates.requests == [CERT_URL, SUBSCRIBE_URL]


def test_subscription_confirmation_of_an_unknown_topic_is_refused(web: Web) -> None:
    response = web.post_sns(web.signer.subscription_confirmation(topic=UNKNOWN_TOPIC_ARN))
    assert response.status_code == 403
    assert web.certificates.requests == []


def test_subscribe_url_off_sns_is_never_visited(web: Web) -> None:
    message = web.signer.subscription_confirmation(
        subscribe_url="https://attacker.example.com/?Action=ConfirmSubscription"
    )
    assert web.post_sns(message).status_code == 403
    assert web.certificates.requests == []


# -- POST /webhooks/line ---------------------------------------------------------------


LINE_USER = person("u1")["lineUserId"]


def _line_body(kind: str, at: dt.datetime, user: str = LINE_USER) -> bytes:
    return json.dumps(
        {
            "destination": "Ubot",
            "events": [
                {
                    "type": kind,
                    "mode": "active",
                    "timestamp": int(at.timestamp() * 1000),
                    "source": {"type": "user", "userId": user},
                    "webhookEventId": f"01H{kind}{int(at.timestamp())}",
                    "deliveryContext": {"isRedelivery": False},
                }
            ],
        }
    ).encode()


def _post_line(web: Web, body: bytes, secret: str = LINE_SECRET) -> Any:
    signature = base64.b64encode(hmac.new(secret.encode(), body, hashlib.sha256).digest())
    return web.client.post(
        "/webhooks/line", content=body, headers={"x-line-signature": signature.decode()}
    )


def test_line_unfollow_then_follow(web: Web) -> None:
    now = utcnow()
    response = _post_line(web, _line_body("unfollow", now - dt.timedelta(minutes=5)))
    assert response.status_code == 200
    assert response.json()["status"] == "applied"
    # Every tenant where a user has that LINE id (gym-a's and gym-b's u1).
    assert _suppressions() == {(TENANT, "line", LINE_USER), (OTHER_TENANT, "line", LINE_USER)}
    # A follow older than the unfollow (delivered late) does not undo it.
    assert _post_line(web, _line_body("follow", now - dt.timedelta(minutes=10))).status_code == 200
    assert len(_suppressions()) == 2
    assert _post_line(web, _line_body("follow", now)).status_code == 200
    assert _suppressions() == set()


def test_line_unfollow_of_a_stranger_changes_nothing(web: Web) -> None:
    response = _post_line(web, _line_body("unfollow", utcnow(), user="U" + "f" * 32))
    assert response.status_code == 200
    assert response.json()["status"] == "ignored"
    assert _suppressions() == set()


@pytest.mark.parametrize(
    "signature",
    [None, "", "not base64!", base64.b64encode(b"x" * 32).decode(), "sign with another secret"],
)
def test_line_bad_signature_is_403(web: Web, signature: str | None) -> None:
    body = _line_body("unfollow", utcnow())
    if signature == "sign with another secret":
        response = _post_line(web, body, secret="another-secret")
    else:
        headers = {} if signature is None else {"x-line-signature": signature}
        response = web.client.post("/webhooks/line", content=body, headers=headers)
    assert response.status_code == 403
    assert _suppressions() == set()


def test_line_webhook_without_a_secret_refuses_everything(
    web: Web, environment: Callable[..., None]
) -> None:
    environment(LINE_CHANNEL_SECRET=None)
    # With no secret an attacker could sign with the empty key: that must not work either.
    response = _post_line(web, _line_body("unfollow", utcnow()), secret="")
    assert response.status_code == 503
    assert _suppressions() == set()


def test_line_verification_request_is_ok(web: Web) -> None:
    body = json.dumps({"destination": "Ubot", "events": []}).encode()
    assert _post_line(web, body).json() == {"status": "ignored", "suppressed": 0}


# -- GET /c/<token> --------------------------------------------------------------------

TARGET = "https://kyo.app/membership/renew?utm_source=email&utm_medium=notification"


def _token(url: str) -> str:
    return urlsplit(url).path.rsplit("/", 1)[1]


def _clicks() -> list[tuple[str, int | None, str, str, str]]:
    with session_scope() as session:
        rows = session.execute(
            select(Click.tenant_id, Click.delivery_id, Click.channel, Click.event_type, Click.url)
        )
        return [tuple(row) for row in rows]  # type: ignore[misc]


def test_a_tracked_link_records_the_click_and_redirects(web: Web) -> None:
    link = tracked_url(TARGET, 42, TENANT, "email", "member.membership_expiring")
    assert link.startswith(f"{get_settings().public_base_url}/c/")
    # Extra query parameters cannot change the target.
    response = web.client.get(
        f"/c/{_token(link)}?url=https://evil.example.com", follow_redirects=False
    )
    assert response.status_code == 302
    assert response.headers["location"] == TARGET
    assert _clicks() == [(TENANT, 42, "email", "member.membership_expiring", TARGET)]


def _swap_target(token: str, url: str) -> str:
    body, mac = token.split(".")
    payload = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    payload["u"] = url
    raw = json.dumps(payload, separators=(",", ":"), sort_keys=True).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode() + "." + mac


@pytest.mark.parametrize(
    "make_token",
    [
        pytest.param(lambda t: _swap_target(t, "https://evil.example.com/"), id="target swapped"),
        pytest.param(lambda t: t[:-3] + ("AAA" if not t.endswith("AAA") else "BBB"), id="mac"),
        pytest.param(lambda t: t.split(".")[0], id="no mac"),
        pytest.param(
            lambda t: sign({"u": "https://evil.example.com/", "t": TENANT}, "unsubscribe"),
            id="another purpose",
        ),
        pytest.param(
            lambda t: sign({"u": "javascript:alert(document.cookie)", "t": TENANT}, "click"),
            id="javascript url",
        ),
        pytest.param(
            lambda t: sign({"u": "//evil.example.com", "t": TENANT}, "click"), id="relative"
        ),
        pytest.param(lambda t: "garbage", id="garbage"),
    ],
)
def test_bad_click_tokens_never_redirect(web: Web, make_token: Callable[[str], str]) -> None:
    token = _token(tracked_url(TARGET, 1, TENANT, "email", "payment.success"))
    bad = make_token(token)
    response = web.client.get(f"/c/{bad}", follow_redirects=False)
    assert response.status_code == (400 if malformed(bad) else 404)  # not shaped / not ours
    assert "location" not in response.headers
    assert _clicks() == []


@pytest.mark.parametrize(
    "url", ["javascript:alert(1)", "data:text/html,hi", "/relative", "https://a b.example/"]
)
def test_only_web_links_can_be_tracked(url: str) -> None:
    with pytest.raises(ValueError, match="http"):
        tracked_url(url, 1, TENANT, "email", "payment.success")


# -- GET/POST /u/<token> ---------------------------------------------------------------


def _preferences(tenant: str, user: str) -> dict[str, Any]:
    with session_scope() as session:
        row = session.get(User, (tenant, user))
        assert row is not None
        return dict(row.preferences or {})


def test_unsubscribe_page_then_one_click(web: Web) -> None:
    before = _preferences(TENANT, "u1")
    path = urlsplit(unsubscribe_url(TENANT, "u1", "email")).path
    page = web.client.get(path)
    assert page.status_code == 200
    assert f'action="{path}"' in page.text and "Kyo Gym A" in page.text
    assert _preferences(TENANT, "u1") == before  # looking is not unsubscribing
    for _ in range(2):  # idempotent
        response = web.client.post(
            path,
            content="List-Unsubscribe=One-Click",
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
        assert response.status_code == 200
        assert "You are unsubscribed" in response.text
    after = _preferences(TENANT, "u1")
    assert after["channels"] == {"email": False}
    assert after["priority"] == before["priority"]  # the rest is kept
    # Scoped to the token's tenant and user.
    assert "channels" not in _preferences(OTHER_TENANT, "u1")
    assert "channels" not in _preferences(TENANT, "u2")


def test_unsubscribe_from_push_uses_the_preference_key(web: Web) -> None:
    path = urlsplit(unsubscribe_url(TENANT, "u2", "web_push")).path
    assert web.client.post(path, content="List-Unsubscribe=One-Click").status_code == 200
    assert _preferences(TENANT, "u2")["channels"] == {"webPush": False}


@pytest.mark.usefixtures("celery_worker")
def test_an_unsubscribed_channel_is_skipped(web: Web) -> None:
    path = urlsplit(unsubscribe_url(TENANT, "u1", "email")).path
    assert web.client.post(path, content="List-Unsubscribe=One-Click").status_code == 200
    assert web.post_events(event("payment.success", eventId="after-unsub")).status_code == 200
    rows = wait_settled(expected=3)
    assert [(r.status, r.reason) for r in rows if r.channel == "email"] == [
        ("skipped", "opted out")
    ]


@pytest.mark.parametrize("method", ["GET", "POST"])
def test_tampered_unsubscribe_tokens_are_rejected(web: Web, method: str) -> None:
    token = _token(unsubscribe_url(TENANT, "u1", "email"))
    body, mac = token.split(".")
    forged = sign({"t": TENANT, "u": "u2", "c": "email"}, "unsubscribe").split(".")[0]
    for bad in (f"{forged}.{mac}", body + "." + mac[::-1], "x" + token):
        response = web.client.request(method, f"/u/{bad}", content="List-Unsubscribe=One-Click")
        assert response.status_code == 404  # well shaped, not a link we signed
        assert "not valid" in response.text
    assert "channels" not in _preferences(TENANT, "u1")
    assert "channels" not in _preferences(TENANT, "u2")


# -- GET /outbox -----------------------------------------------------------------------


def _outbox_row(i: int, tenant: str = TENANT, **values: Any) -> OutboxMessage:
    fields: dict[str, Any] = {
        "delivery_id": i,
        "tenant_id": tenant,
        "event_type": "payment.success",
        "channel": "sms",
        "recipient": "u1",
        "address": "+886912345678",
        "subject": "",
        "body_text": f"message number {i}",
        **values,
    }
    return OutboxMessage(**fields)


def test_outbox_page_paginates_newest_first_and_filters(web: Web) -> None:
    with session_scope() as session:
        session.add_all([_outbox_row(i) for i in range(1, 56)])
        session.add(_outbox_row(100, tenant=OTHER_TENANT, body_text="other tenant's message"))
    first = web.client.get("/outbox", params={"tenant": TENANT})
    assert first.status_code == 200
    assert first.text.count('class="card"') == 50
    assert first.text.index("message number 55<") < first.text.index("message number 54<")
    assert "other tenant" not in first.text
    older = re.search(r'href="(/outbox\?[^"]+)">Older messages', first.text)
    assert older is not None
    second = web.client.get(html.unescape(older.group(1)))
    assert second.text.count('class="card"') == 5 and "message number 1<" in second.text
    assert "Older messages" not in second.text
    assert "other tenant" in web.client.get("/outbox").text
    assert 'class="card"' not in web.client.get("/outbox?event_type=course.reminder").text
    assert web.client.get("/outbox", params={"tenant": "gym\x00a"}).status_code == 422


def test_outbox_page_draws_each_channel_as_it_declares(web: Web) -> None:
    line = {"line_messages": [{"type": "text", "text": "hi"}]}
    with session_scope() as session:
        session.add_all(
            [
                _outbox_row(1, channel="sms"),
                _outbox_row(2, channel="web_push", subject="Push title"),
                _outbox_row(3, channel="line", payload=line),
                _outbox_row(4, channel="fax", subject="Old fax", body_text="a removed channel"),
            ]
        )
    page = web.client.get("/outbox").text
    assert 'class="sms-bubble"' in page and 'class="push"' in page
    assert 'class="line-bubble"' in page
    assert 'style="background: #9333ea"' in page  # the colour channels/sms.py declares
    # No module declares "fax" (any more): the generic view, subject and text.
    assert "Old fax" in page and "a removed channel" in page


def test_outbox_page_escapes_what_it_shows(web: Web) -> None:
    evil = '"><script>alert(1)</script><img src=x onerror=alert(2)>'
    with session_scope() as session:
        session.add(_outbox_row(1, channel="email", subject=evil, body_html=f"<p>{evil}</p>"))
        session.add(
            _outbox_row(
                2,
                channel="line",
                payload={"line_messages": [{"type": "text", "text": evil}]},
            )
        )
    page = web.client.get("/outbox").text
    assert "<script>" not in page and "<img src=x" not in page
    # The email body is kept whole for the sandboxed iframe, as an escaped attribute.
    assert 'sandbox="" title="&#34;&gt;&lt;script&gt;' in page
    assert 'srcdoc="&lt;p&gt;&#34;&gt;&lt;script&gt;alert(1)&lt;/script&gt;' in page
    assert "content-security-policy" in web.client.get("/outbox").headers


def test_outbox_page_is_off_unless_enabled(db: None) -> None:
    with TestClient(create_app()) as client:
        assert client.get("/outbox").status_code == 404
        assert "/outbox" not in client.app.openapi()["paths"]


# -- /metrics and /healthz -------------------------------------------------------------


def test_healthz_ok(web: Web) -> None:
    response = web.client.get("/healthz")
    assert (response.status_code, response.json()) == (200, {"database": "ok", "broker": "ok"})


def test_healthz_reports_a_dead_broker(db: None) -> None:
    # Not set as the current app: the pipeline's tasks must keep using the real one.
    dead = Celery("dead", broker="redis://127.0.0.1:1/0", set_as_current=False)
    with TestClient(create_app(celery_app=lambda: dead)) as client:
        response = client.get("/healthz")
    assert (response.status_code, response.json()) == (
        503,
        {"database": "ok", "broker": "unavailable"},
    )


def test_healthz_reports_a_dead_database(web: Web, environment: Callable[..., None]) -> None:
    environment(DATABASE_URL="postgresql://notifier:secret@127.0.0.1:1/nowhere")
    response = web.client.get("/healthz")
    assert (response.status_code, response.json()) == (
        503,
        {"database": "unavailable", "broker": "ok"},
    )
    assert "secret" not in response.text
    # Other routes answer 503 too, not 500.
    assert web.client.get("/metrics").status_code == 503


# -- schemathesis over the app's own OpenAPI document ----------------------------------

# Loaded at import (schemathesis' lazy fixture loader does not run on this pytest); the app
# reads the database and the LINE secret per request, which the fixtures below provide.
FUZZED_APP = create_app(
    cert_fetcher=CertificateServer(SnsSigner()), outbox_page=True, api_docs=True
)
schema = schemathesis.openapi.from_asgi("/openapi.json", FUZZED_APP)


@pytest.fixture
def api_headers(web: Web) -> dict[str, str]:
    return {"Authorization": f"Bearer {web.key}"}


@schema.parametrize()
@settings(
    max_examples=50,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
def test_no_server_errors(case: Any, api_headers: dict[str, str]) -> None:
    case.call_and_validate(headers=api_headers, checks=[not_a_server_error])


# -- notifier tenant api-key -----------------------------------------------------------


def test_cli_issues_a_working_api_key(web: Web) -> None:
    from click.testing import CliRunner

    from notifier.cli import main

    result = CliRunner().invoke(main, ["tenant", "api-key", TENANT])
    assert result.exit_code == 0, result.output
    key = result.output.strip()
    with session_scope() as session:
        stored = session.scalar(select(Tenant.api_key_hash).where(Tenant.id == TENANT))
    assert stored == hashlib.sha256(key.encode()).hexdigest() and key not in stored
    assert web.post_events([], key=key).status_code == 400  # authenticated: an empty batch
    assert web.post_events([], key=web.key).status_code == 401  # the old key is revoked
    unknown = CliRunner().invoke(main, ["tenant", "api-key", "no-such-gym"])
    assert unknown.exit_code == 1 and "unknown tenant" in unknown.output

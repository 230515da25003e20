"""Signed outbound webhooks end to end: a real worker sends, a local receiver verifies every
message with the `standardwebhooks` package; retries, the dead letter, the URL policy and
tenant isolation; bounces, complaints and clicks."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import urlsplit

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from standardwebhooks import Webhook

from config.settings import reset_settings
from notifier.db import session_scope
from notifier.directory import import_document
from notifier.models import DeadLetter, Delivery, Event, utcnow
from notifier.signing import tracked_url
from notifier.web.app import create_app
from notifier.web.auth import issue_api_key
from tests.fixtures.sns import TOPIC_ARN, CertificateServer, SnsSigner, ses_notification
from tests.helpers import TENANT, broker_unreachable, directory, event, person, wait_for
from tests.peers.http import LocalServer

OTHER = "gym-b"


class Receiver:
    """A webhook receiver: verifies each message's signature with its endpoint's secret
    (a bad one is answered 400 and recorded), answers `failures` 503s first."""

    def __init__(self) -> None:
        self.secrets: dict[str, str] = {}
        self.messages: list[tuple[str, dict[str, Any], dict[str, str]]] = []
        self.bad_signatures = 0
        self.failures = 0
        self.requests = 0
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                name = self.path.strip("/")
                headers = {k.lower(): v for k, v in self.headers.items()}
                with receiver.lock:
                    receiver.requests += 1
                    if receiver.failures > 0:
                        receiver.failures -= 1
                        self.send_response(503)
                        self.end_headers()
                        return
                    try:
                        payload = Webhook(receiver.secrets[name]).verify(body, headers)
                    except Exception:
                        receiver.bad_signatures += 1
                        self.send_response(400)
                        self.end_headers()
                        return
                    receiver.messages.append((name, payload, headers))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = LocalServer(Handler)

    def url(self, name: str) -> str:
        return f"{self.server.origin}/{name}"


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    peer = Receiver()
    peer.server.start()
    yield peer
    peer.server.stop()


@pytest.fixture
def client(db: None) -> Iterator[TestClient]:
    import_document(directory(person("u1")))
    import_document(directory(person("u1", tenant=OTHER), tenant=OTHER))
    with TestClient(create_app()) as test_client:
        yield test_client


def register(
    client: TestClient, receiver: Receiver, key: str, name: str, **extra: Any
) -> dict[str, Any]:
    response = client.post(
        "/webhook-endpoints",
        json={"url": receiver.url(name), **extra},
        headers={"Authorization": f"Bearer {key}"},
    )
    assert response.status_code == 201, response.text
    created = response.json()
    assert created["secret"].startswith("whsec_")
    receiver.secrets[name] = created["secret"]
    return created


@pytest.mark.usefixtures("celery_worker")
def test_every_status_change_is_posted_signed(client: TestClient, receiver: Receiver) -> None:
    key_a, key_b = issue_api_key(TENANT), issue_api_key(OTHER)
    register(client, receiver, key_a, "a-all")
    register(client, receiver, key_a, "a-failed-only", eventTypes=["delivery.failed"])
    register(client, receiver, key_b, "b-all")
    receiver.failures = 2  # the first two POSTs are answered 503: retried with backoff
    sent = client.post(
        "/events",
        json=event("payment.success", eventId="wh-1"),
        headers={"Authorization": f"Bearer {key_a}"},
    )
    assert sent.status_code == 200
    # email, line and topic deliveries: three delivery.sent messages to a-all only.
    wait_for(lambda: len(receiver.messages) >= 3 or None, timeout=60)
    assert receiver.bad_signatures == 0 and receiver.requests >= 5
    names = {name for name, _, _ in receiver.messages}
    assert names == {"a-all"}  # B hears nothing of A; a-failed-only nothing of sends
    bodies = {payload["data"]["channel"]: payload for _, payload, _ in receiver.messages}
    assert set(bodies) == {"email", "line", "topic"}
    for payload in bodies.values():
        assert payload["type"] == "delivery.sent"
        assert set(payload["data"]) == {
            "eventId",
            "deliveryId",
            "userId",
            "channel",
            "status",
            "reason",
            "providerMessageId",
        }
        assert payload["data"]["eventId"] == "wh-1" and payload["data"]["status"] == "sent"
    # At least once: a retried message keeps its webhook-id; no id was accepted twice here.
    ids = [headers["webhook-id"] for _, _, headers in receiver.messages]
    assert len(ids) == len(set(ids))


def test_a_receiver_that_never_answers_ends_in_the_dead_letters(
    client: TestClient, receiver: Receiver
) -> None:
    from notifier.status_hooks import StatusChange
    from tasks.webhooks import send_webhook

    register(client, receiver, issue_api_key(TENANT), "down")
    receiver.failures = 1_000
    change = StatusChange(
        delivery_id=7,
        tenant_id=TENANT,
        event_id="e-7",
        recipient="u1",
        channel="email",
        status="failed",
        reason="HTTP 550",
    )
    from notifier.outbound_webhooks import messages_for

    [(endpoint_id, message)] = messages_for([change])
    send_webhook.apply(args=(endpoint_id, message))  # runs every retry in this process
    with session_scope() as session:
        letters = list(session.scalars(select(DeadLetter).where(DeadLetter.kind == "webhook")))
    assert len(letters) == 1 and letters[0].tenant_id == TENANT
    assert letters[0].payload["message"]["body"]["data"]["reason"] == "HTTP 550"
    assert "HTTP 503" in letters[0].error
    assert receiver.requests >= 2


@pytest.mark.usefixtures("celery_worker")
def test_a_message_that_found_the_broker_down_is_kept_and_replayed_once(
    client: TestClient, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    from notifier.dlq import list_dead_letters, replay
    from notifier.status_hooks import StatusChange
    from tasks import enqueue
    from tasks.webhooks import enqueue_webhooks

    register(client, receiver, issue_api_key(TENANT), "later")
    change = StatusChange(
        delivery_id=8,
        tenant_id=TENANT,
        event_id="e-8",
        recipient="u1",
        channel="sms",
        status="sent",
        reason=None,
    )
    broker_unreachable(monkeypatch)
    enqueue_webhooks([change])  # the status hook, as it runs after a send's commit
    [letter] = list_dead_letters(TENANT, 10, include_replayed=False)
    assert letter["kind"] == "webhook" and "broker unreachable" in letter["error"]
    # Still down: the replay fails and the letter stays pending.
    assert letter["id"] in replay(enqueue=enqueue, ids=[letter["id"]]).failed
    monkeypatch.undo()
    assert replay(enqueue=enqueue, ids=[letter["id"]]).replayed == [letter["id"]]
    wait_for(lambda: receiver.messages or None, timeout=30)
    [(name, payload, _)] = receiver.messages
    assert name == "later" and payload["data"]["deliveryId"] == 8
    assert replay(enqueue=enqueue, all=True).replayed == []  # once only


def test_endpoints_are_the_keys_tenants_and_follow_the_url_policy(
    client: TestClient, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    key_a, key_b = issue_api_key(TENANT), issue_api_key(OTHER)
    created = register(client, receiver, key_a, "a")
    as_a = {"Authorization": f"Bearer {key_a}"}
    as_b = {"Authorization": f"Bearer {key_b}"}
    listed = client.get("/webhook-endpoints", headers=as_a).json()
    assert [e["id"] for e in listed] == [created["id"]] and "secret" not in listed[0]
    assert client.get("/webhook-endpoints", headers=as_b).json() == []
    assert client.delete(f"/webhook-endpoints/{created['id']}", headers=as_b).status_code == 404
    assert client.delete(f"/webhook-endpoints/{created['id']}", headers=as_a).status_code == 204
    assert client.get("/webhook-endpoints", headers=as_a).json() == []
    bad_type = client.post(
        "/webhook-endpoints", json={"url": receiver.url("x"), "eventTypes": ["x"]}, headers=as_a
    )
    assert bad_type.status_code == 422
    monkeypatch.delenv("NOTIFIER_ALLOW_PRIVATE_URLS")
    reset_settings()
    try:
        for url in (receiver.url("x"), "http://example.com/hook", "https://10.0.0.1/hook"):
            response = client.post("/webhook-endpoints", json={"url": url}, headers=as_a)
            assert response.status_code == 422, url
            assert response.json()["errors"][0]["field"] == "url"
    finally:
        monkeypatch.setenv("NOTIFIER_ALLOW_PRIVATE_URLS", "1")
        reset_settings()
    assert json.dumps(client.get("/webhook-endpoints", headers=as_a).json()) == "[]"


def _sent_email(tenant: str, message_id: str, event_id: str) -> int:
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
            recipient="u1",
            channel="email",
            status="sent",
            attempts=1,
            provider_message_id=message_id,
            sent_at=utcnow(),
        )
        session.add(delivery)
        session.flush()
        return delivery.id


@pytest.mark.usefixtures("celery_worker")
def test_bounces_complaints_and_clicks_are_posted_signed(
    db: None, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SES feedback (through a verified SNS message) and the click redirect: a hard bounce
    is delivery.bounced, a complaint delivery.complained, a counted click delivery.clicked;
    a soft bounce and a click again within the window send nothing; B hears nothing of A."""
    monkeypatch.setenv("NOTIFIER_SES_FEEDBACK_TOPIC_ARNS", TOPIC_ARN)
    reset_settings()
    import_document(directory(person("u1")))
    import_document(directory(person("u1", tenant=OTHER), tenant=OTHER))
    certificates = CertificateServer(SnsSigner())
    try:
        with TestClient(create_app(cert_fetcher=certificates)) as client:
            key_a, key_b = issue_api_key(TENANT), issue_api_key(OTHER)
            register(client, receiver, key_a, "a-all")
            register(client, receiver, key_a, "a-clicks", eventTypes=["delivery.clicked"])
            register(client, receiver, key_b, "b-all")
            bounced = _sent_email(TENANT, "ses-bounced-1", "ev-bounce")
            complained = _sent_email(TENANT, "ses-complained-1", "ev-complaint")
            clicked = _sent_email(TENANT, "ses-clicked-1", "ev-click")
            _sent_email(OTHER, "ses-other-1", "ev-other")

            def sns(name: str, message_id: str) -> None:
                message = certificates.signer.notification(ses_notification(name, message_id))
                response = client.post(
                    "/webhooks/ses",
                    content=json.dumps(message),
                    headers={"x-amz-sns-message-type": "Notification"},
                )
                assert response.status_code == 200, response.text

            sns("bounce_transient", "ses-bounced-1")  # soft: noted, no webhook
            sns("bounce_permanent", "ses-bounced-1")
            sns("complaint", "ses-complained-1")
            link = urlsplit(tracked_url("https://kyo.example/x", clicked, TENANT, "email", "e"))
            for _ in range(2):  # the second is within the window: not counted, not posted
                assert client.get(link.path, follow_redirects=False).status_code == 302
            wait_for(lambda: len(receiver.messages) >= 4 or None, timeout=60)
            time.sleep(1.0)  # nothing more arrives
    finally:
        monkeypatch.delenv("NOTIFIER_SES_FEEDBACK_TOPIC_ARNS")
        reset_settings()
    assert receiver.bad_signatures == 0
    got = {(name, payload["type"]) for name, payload, _ in receiver.messages}
    assert got == {
        ("a-all", "delivery.bounced"),
        ("a-all", "delivery.complained"),
        ("a-all", "delivery.clicked"),
        ("a-clicks", "delivery.clicked"),
    }
    assert len(receiver.messages) == 4
    data = {p["type"]: p["data"] for name, p, _ in receiver.messages if name == "a-all"}
    assert data["delivery.bounced"] == {
        "eventId": "ev-bounce",
        "deliveryId": bounced,
        "userId": "u1",
        "channel": "email",
        "status": "failed",
        "reason": "bounced: Permanent General",
        "providerMessageId": "ses-bounced-1",
    }
    assert data["delivery.complained"]["deliveryId"] == complained
    assert data["delivery.complained"]["status"] == "sent"
    assert data["delivery.complained"]["reason"].startswith("complaint")
    assert data["delivery.clicked"] == {
        "eventId": "ev-click",
        "deliveryId": clicked,
        "userId": "u1",
        "channel": "email",
        "status": "sent",
        "reason": None,
        "providerMessageId": "ses-clicked-1",
    }

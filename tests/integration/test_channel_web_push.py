"""WebPushChannel against a local push service that checks VAPID and decrypts the body."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from channels.base import DeliveryResult, Message, PermanentChannelError, TransientChannelError
from channels.web_push import (
    MAX_PLAINTEXT_BYTES,
    WebPushChannel,
    fit_payload,
    load_vapid_key,
    topic_token,
)
from tests.peers.push import FakeSubscription, PushService, vapid_keys

SUBJECT = "mailto:ops@example.com"


VAPID_PRIVATE, VAPID_PUBLIC, VAPID = vapid_keys()


@pytest.fixture(scope="module")
def service() -> Iterator[PushService]:
    with PushService(subject=SUBJECT, vapid_public_key=VAPID_PUBLIC) as svc:
        yield svc


@pytest.fixture
def push(service: PushService, monkeypatch: pytest.MonkeyPatch) -> Iterator[PushService]:
    service.reset()
    monkeypatch.setenv("VAPID_PRIVATE_KEY", VAPID_PRIVATE)
    monkeypatch.setenv("VAPID_SUBJECT", SUBJECT)
    monkeypatch.setenv("NOTIFIER_WEB_PUSH_TIMEOUT", "2")
    yield service
    service.reset()


def message(*subs: FakeSubscription | dict[str, Any], **overrides: Any) -> Message:
    values: dict[str, Any] = {
        "delivery_id": 42,
        "tenant_id": "t-1",
        "event_type": "course.booking_confirmed",
        "channel": "web_push",
        "recipient": "u-1",
        "address": "u-1",
        "subject": "Booking confirmed: Yoga",
        "text": "See you on Monday at 09:00.",
        "priority": "medium",
        "retry_key": "5f1c0c7e9d7a4c7f8d3e2b1a0c9d8e7f",
        "attributes": {"url": "https://app.example.com/bookings/7"},
        "credentials": {
            "subscriptions": [s.info if isinstance(s, FakeSubscription) else s for s in subs]
        },
    }
    values.update(overrides)
    return Message(**values)


def send(msg: Message) -> Any:
    return WebPushChannel().send(msg)


# -- success -------------------------------------------------------------------------------


def test_success_is_decrypted_by_the_push_service(push: PushService) -> None:
    sub = push.subscribe()
    result = send(message(sub))

    assert isinstance(result, DeliveryResult)
    [req] = push.received
    assert req.error is None
    assert req.json == {
        "title": "Booking confirmed: Yoga",
        "body": "See you on Monday at 09:00.",
        "tag": "course.booking_confirmed",
        "data": {
            "eventType": "course.booking_confirmed",
            "deliveryId": 42,
            "url": "https://app.example.com/bookings/7",
        },
    }
    assert req.headers["content-encoding"] == "aes128gcm"
    assert result.provider_message_id.startswith(f"{push.origin}/message/")
    host = push.origin.removeprefix("http://")
    assert result.raw_response == {
        "subscriptions": [{"host": host, "status": 201, "outcome": "accepted"}]
    }
    assert sub.id not in json.dumps(result.raw_response)  # the capability URL stays secret
    assert result.gone_subscriptions == ()


def test_vapid_claims_are_signed_for_the_push_service(push: PushService) -> None:
    sub = push.subscribe()
    send(message(sub))
    send(message(sub))  # a fresh claims dict per call: the second send signs anew

    for req in push.received:
        assert req.error is None
        assert req.vapid_key == VAPID_PUBLIC
        assert req.vapid_claims is not None
        assert req.vapid_claims["aud"] == push.origin
        assert req.vapid_claims["sub"] == SUBJECT
        assert req.headers["authorization"].startswith("vapid t=")


def test_wrong_vapid_key_is_refused_and_disables_the_channel(
    push: PushService, monkeypatch: pytest.MonkeyPatch
) -> None:
    other_private, _, _ = vapid_keys()
    monkeypatch.setenv("VAPID_PRIVATE_KEY", other_private)
    sub = push.subscribe()

    with pytest.raises(PermanentChannelError) as err:
        send(message(sub))

    assert push.received[0].error and "application server key" in push.received[0].error
    assert err.value.disable_channel is True
    assert err.value.status_code == 401


def test_pem_private_key_with_escaped_newlines_is_accepted(
    push: PushService, monkeypatch: pytest.MonkeyPatch
) -> None:
    pem = VAPID.private_pem().decode().replace("\n", "\\n")
    monkeypatch.setenv("VAPID_PRIVATE_KEY", pem)
    sub = push.subscribe()

    assert isinstance(send(message(sub)), DeliveryResult)
    assert push.received[0].vapid_key == VAPID_PUBLIC


@pytest.mark.parametrize(
    ("priority", "urgency", "ttl"),
    [
        ("low", "low", 604_800),
        ("medium", "normal", 86_400),
        ("high", "high", 43_200),
        ("critical", "high", 86_400),
    ],
)
def test_urgency_and_ttl_follow_priority(
    push: PushService, priority: str, urgency: str, ttl: int
) -> None:
    sub = push.subscribe()
    send(message(sub, priority=priority))

    [req] = push.received
    assert (req.urgency, req.ttl) == (urgency, ttl)


def test_topic_is_stable_per_delivery(push: PushService) -> None:
    sub = push.subscribe()
    send(message(sub))
    send(message(sub))  # a retry of the same delivery
    send(message(sub, retry_key="another-delivery"))

    topics = [r.topic for r in push.received]
    assert topics[0] == topics[1] == topic_token("5f1c0c7e9d7a4c7f8d3e2b1a0c9d8e7f")
    assert topics[2] != topics[0]
    assert all(t is not None and len(t) == 32 for t in topics)


# -- several subscriptions, gone ones ------------------------------------------------------


def test_one_gone_of_two_is_sent_and_the_gone_one_reported(push: PushService) -> None:
    alive, gone = push.subscribe(), push.subscribe()
    push.script(gone.id, 410)

    result = send(message(alive, gone))

    assert isinstance(result, DeliveryResult)
    # Reported for the outcome recorder to remove after its commit; never in the raw
    # response, which is stored (an endpoint is a capability URL).
    assert result.gone_subscriptions == (gone.endpoint,)
    outcomes = [(s["status"], s["outcome"]) for s in result.raw_response["subscriptions"]]
    assert outcomes == [(201, "accepted"), (410, "gone")]
    assert gone.id not in json.dumps(result.raw_response)
    assert len(push.for_subscription(alive.id)) == 1
    assert push.for_subscription(alive.id)[0].json["title"] == "Booking confirmed: Yoga"


def test_all_gone_is_permanent(push: PushService) -> None:
    first, second = push.subscribe(), push.subscribe()
    push.script(first.id, 410)
    push.script(second.id, 404)

    with pytest.raises(PermanentChannelError, match="all subscriptions gone") as err:
        send(message(first, second))

    assert err.value.suppress is False
    assert err.value.disable_channel is False
    assert err.value.status_code == 410
    assert err.value.channel == "web_push" and err.value.delivery_id == 42
    assert err.value.gone_subscriptions == (first.endpoint, second.endpoint)
    assert first.id not in json.dumps(err.value.response)
    assert first.id not in str(err.value)


def test_404_reports_the_subscription_gone(push: PushService) -> None:
    sub = push.subscribe()
    push.script(sub.id, 404)

    with pytest.raises(PermanentChannelError) as err:
        send(message(sub))

    assert err.value.status_code == 404
    assert err.value.gone_subscriptions == (sub.endpoint,)


def test_no_subscription_is_permanent(push: PushService) -> None:
    with pytest.raises(PermanentChannelError, match="no web push subscription"):
        send(message())
    assert push.received == []


def test_malformed_subscription_is_skipped(push: PushService) -> None:
    sub = push.subscribe()
    bad = {"endpoint": f"{push.origin}/push/bad", "keys": {"p256dh": "!!", "auth": "x"}}

    assert isinstance(send(message(bad, sub)), DeliveryResult)
    with pytest.raises(PermanentChannelError, match="no usable") as err:
        send(message(bad))
    assert err.value.gone_subscriptions == ()


# -- scripted provider answers ---------------------------------------------------------------


def test_413_is_permanent(push: PushService) -> None:
    sub = push.subscribe()
    push.script(sub.id, 413)

    with pytest.raises(PermanentChannelError, match="too large") as err:
        send(message(sub))

    assert err.value.status_code == 413
    assert err.value.disable_channel is False
    assert err.value.gone_subscriptions == ()


def test_429_honours_retry_after(push: PushService) -> None:
    sub = push.subscribe()
    push.script(sub.id, 429, {"Retry-After": "7"})

    with pytest.raises(TransientChannelError) as err:
        send(message(sub))

    assert err.value.retry_after == 7
    assert err.value.status_code == 429


@pytest.mark.parametrize("status", [400, 401, 403])
def test_vapid_configuration_errors_disable_the_channel(push: PushService, status: int) -> None:
    sub = push.subscribe()
    push.script(sub.id, status, {"Content-Type": "application/json"}, '{"error": "bad jwt"}')

    with pytest.raises(PermanentChannelError) as err:
        send(message(sub))

    assert err.value.disable_channel is True
    assert err.value.status_code == status
    # Only the status and a one-token error code of what the push service answered.
    assert err.value.response["subscriptions"][0]["reason"] == f"HTTP {status}"
    assert err.value.gone_subscriptions == ()


@pytest.mark.parametrize("status", [500, 502, 503])
def test_5xx_is_transient(push: PushService, status: int) -> None:
    sub = push.subscribe()
    push.script(sub.id, status)

    with pytest.raises(TransientChannelError) as err:
        send(message(sub))

    assert err.value.status_code == status
    assert err.value.retry_after is None


def test_transient_and_gone_without_acceptance_is_transient(push: PushService) -> None:
    busy, gone = push.subscribe(), push.subscribe()
    push.script(busy.id, 503)
    push.script(gone.id, 410)

    with pytest.raises(TransientChannelError) as err:
        send(message(busy, gone))
    assert err.value.gone_subscriptions == (gone.endpoint,)


def test_one_accepted_wins_over_a_5xx(push: PushService) -> None:
    busy, alive = push.subscribe(), push.subscribe()
    push.script(busy.id, 500)

    result = send(message(busy, alive))

    assert isinstance(result, DeliveryResult)
    assert result.provider_message_id is not None


def test_timeout_is_transient(push: PushService, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NOTIFIER_WEB_PUSH_TIMEOUT", "0.3")
    sub = push.subscribe()
    push.script(sub.id, 201, delay=1.0)

    with pytest.raises(TransientChannelError, match="timeout") as err:
        send(message(sub))

    assert err.value.status_code is None


def test_connection_refused_is_transient(push: PushService) -> None:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    sub = push.subscribe()
    info = sub.info | {"endpoint": f"http://127.0.0.1:{port}/push/{sub.id}"}

    with pytest.raises(TransientChannelError, match="connection"):
        send(message(info))


def test_missing_vapid_configuration_disables_the_channel(
    push: PushService, monkeypatch: pytest.MonkeyPatch
) -> None:
    sub = push.subscribe()
    monkeypatch.delenv("VAPID_PRIVATE_KEY")
    with pytest.raises(PermanentChannelError, match="VAPID_PRIVATE_KEY") as err:
        send(message(sub))
    assert err.value.disable_channel is True

    monkeypatch.setenv("VAPID_PRIVATE_KEY", "not-a-key")
    with pytest.raises(PermanentChannelError) as err:
        send(message(sub))
    assert err.value.disable_channel is True
    assert "not-a-key" not in str(err.value)
    assert push.received == []


# -- payload size ----------------------------------------------------------------------------


def test_fit_payload_shrinks_a_10kb_chinese_body() -> None:
    body = "通知內容測試，" * 500  # 3,500 characters, 10,500 bytes of UTF-8
    assert len(body.encode()) > 10_000
    data = {"eventType": "system.maintenance", "deliveryId": 1}

    raw = fit_payload("系統維護通知", body, "system.maintenance", data)

    assert len(raw) <= MAX_PLAINTEXT_BYTES
    assert len(raw) > MAX_PLAINTEXT_BYTES - 10  # cut as little as needed
    payload = json.loads(raw)
    assert payload["title"] == "系統維護通知"
    assert payload["body"].endswith("…")
    assert body.startswith(payload["body"][:-1])
    assert payload["data"] == data


def test_fit_payload_leaves_a_small_payload_alone() -> None:
    raw = fit_payload("Hi", "short", "x", {"deliveryId": 1})
    assert json.loads(raw) == {
        "title": "Hi",
        "body": "short",
        "tag": "x",
        "data": {"deliveryId": 1},
    }


def test_fit_payload_cuts_the_title_when_the_body_is_not_enough() -> None:
    raw = fit_payload("標題" * 3000, "body", "x", {"deliveryId": 1})
    payload = json.loads(raw)
    assert len(raw) <= MAX_PLAINTEXT_BYTES
    assert payload["body"] == ""
    assert payload["title"].endswith("…")


def test_an_oversized_payload_is_shrunk_and_still_decrypts(push: PushService) -> None:
    sub = push.subscribe()
    body = "課程已取消，請留意後續通知。" * 800

    result = send(message(sub, text=body))

    assert isinstance(result, DeliveryResult)
    [req] = push.received
    assert req.error is None
    assert req.body_length <= 4096
    assert req.payload is not None and len(req.payload) <= MAX_PLAINTEXT_BYTES
    assert req.json["title"] == "Booking confirmed: Yoga"
    assert req.json["body"].endswith("…")
    assert body.startswith(req.json["body"][:-1])


def test_load_vapid_key_forms() -> None:
    raw_key = load_vapid_key(VAPID_PRIVATE)
    pem_key = load_vapid_key(VAPID.private_pem().decode())
    expected = VAPID.private_key.private_numbers().private_value
    assert raw_key.private_key.private_numbers().private_value == expected
    assert pem_key.private_key.private_numbers().private_value == expected


def test_the_channel_reports_and_never_writes_the_database() -> None:
    """Removing a gone subscription is the outcome recorder's, once the outcome commits
    (tests/integration/test_outcomes.py): the channel imports nothing that writes."""
    import ast
    import inspect

    import channels.web_push

    tree = ast.parse(inspect.getsource(channels.web_push))
    imported = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    imported |= {
        f"{n.module}.{a.name}"
        for n in ast.walk(tree)
        if isinstance(n, ast.ImportFrom)
        for a in n.names
    }
    database = ("sqlalchemy", "notifier.db", "notifier.dbutil", "notifier.directory")
    assert imported and not [name for name in imported if name.startswith(database)]

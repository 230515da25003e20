"""Issue 11.3: the outbound URL policy for tenant-supplied URLs (Slack webhooks, Web Push
endpoints). Checked as written at import and at send, and on the address each connection
really reaches, so a name that resolves (or is rebound) to an internal address gets
nothing, not even the request line."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from channels.base import PermanentChannelError
from notifier.directory import import_document
from notifier.events import InvalidEvent
from notifier.urlpolicy import BlockedURL, check_url, guarded_session, sanitized_reason
from tests.helpers import directory, environment, person
from tests.integration import test_channel_slack as slack_tests
from tests.integration import test_channel_web_push as push_tests
from tests.peers.push import PushService


class Listener:
    """A TCP port on 127.0.0.1 that records every byte anyone sends it."""

    def __init__(self) -> None:
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.received = b""
        self.connections = 0
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.server.accept()
            except OSError:
                return
            self.connections += 1
            conn.settimeout(2)
            with conn:
                try:
                    while chunk := conn.recv(65536):
                        self.received += chunk
                except OSError:
                    pass

    def close(self) -> None:
        self.server.close()


@pytest.fixture
def listener() -> Iterator[Listener]:
    peer = Listener()
    yield peer
    peer.close()


@pytest.fixture
def policy_on() -> Iterator[None]:
    with environment({"NOTIFIER_ALLOW_PRIVATE_URLS": ""}):
        yield


@pytest.fixture
def resolve_to_loopback(monkeypatch: pytest.MonkeyPatch) -> None:
    """DNS that answers 127.0.0.1 for the real providers' names (a rebinding attacker)."""
    real = socket.getaddrinfo
    hosts = {"hooks.slack.com", "fcm.googleapis.com", "rebind.example"}

    def fake(host: Any, *args: Any, **kwargs: Any) -> Any:
        return real("127.0.0.1" if host in hosts else host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", fake)


@pytest.mark.usefixtures("policy_on")
@pytest.mark.parametrize(
    ("url", "purpose", "why"),
    [
        ("http://hooks.slack.com/services/T/B/x", "slack", "must be an https URL"),
        ("https://evil.example/services/T/B/x", "slack", "not an allowed"),
        ("https://hooks.slack.com.evil.example/x", "slack", "not an allowed"),
        ("https://127.0.0.1/services/x", "slack", "non-public address"),
        ("https://[::1]/x", "webhook", "non-public address"),
        ("https://169.254.169.254/latest/meta-data", "webhook", "non-public address"),
        ("https://10.0.0.8/x", "webhook", "non-public address"),
        ("https://[::ffff:192.168.1.1]/x", "webhook", "non-public address"),
        ("https://user:pw@hooks.slack.com/services/x", "slack", "credentials"),
        ("javascript:alert(1)", "webhook", "must be an https URL"),
        ("https://hooks.slack.com:99999/x", "slack", "not a valid URL"),
        ("https://hooks.slack.com/a b", "slack", "not a valid URL"),
        ("https://push.example/x", "web_push", "not an allowed"),
        ("https://evilwindows.com/x", "web_push", "not an allowed"),
    ],
)
def test_urls_the_policy_refuses(url: str, purpose: Any, why: str) -> None:
    with pytest.raises(BlockedURL, match=why):
        check_url(url, purpose)


@pytest.mark.usefixtures("policy_on")
@pytest.mark.parametrize(
    ("url", "purpose"),
    [
        ("https://hooks.slack.com/services/T/B/x", "slack"),
        ("https://fcm.googleapis.com/fcm/send/abc", "web_push"),
        ("https://updates.push.services.mozilla.com/wpush/v2/abc", "web_push"),
        ("https://web.push.apple.com/QGx", "web_push"),
        ("https://wns2-by3p.notify.windows.com/w/?token=x", "web_push"),
        ("https://hooks.example.com/notifier", "webhook"),
        ("https://93.184.216.34/notifier", "webhook"),
    ],
)
def test_urls_the_policy_allows(url: str, purpose: Any) -> None:
    check_url(url, purpose)


def test_the_host_lists_are_extendable() -> None:
    values = {"NOTIFIER_ALLOW_PRIVATE_URLS": "", "NOTIFIER_SLACK_WEBHOOK_HOSTS": "*.chat.example"}
    with environment(values):
        check_url("https://hooks.chat.example/x", "slack")
        with pytest.raises(BlockedURL):
            check_url("https://chat.example.evil/x", "slack")


@pytest.mark.usefixtures("policy_on", "resolve_to_loopback")
def test_a_name_that_resolves_inside_gets_no_byte(listener: Listener) -> None:
    check_url(f"https://rebind.example:{listener.port}/x", "webhook")  # as written: fine
    with guarded_session() as session, pytest.raises(BlockedURL, match="non-public"):
        session.post(f"https://rebind.example:{listener.port}/x", json={"secret": 1})
    with guarded_session() as session, pytest.raises(BlockedURL):
        session.get(f"http://127.0.0.1:{listener.port}/x")
    assert listener.received == b""


@pytest.mark.usefixtures("policy_on", "resolve_to_loopback")
def test_slack_to_a_rebound_host_is_refused_before_sending(listener: Listener) -> None:
    url = f"https://hooks.slack.com:{listener.port}/services/T/B/x"
    with pytest.raises(PermanentChannelError, match="refused") as err:
        slack_tests.send(slack_tests.message(url))
    assert err.value.disable_channel is True
    assert listener.received == b""


@pytest.mark.usefixtures("policy_on")
def test_slack_to_a_private_http_url_is_refused(listener: Listener) -> None:
    url = f"http://127.0.0.1:{listener.port}/services/T/B/x"
    with pytest.raises(PermanentChannelError, match="https"):
        slack_tests.send(slack_tests.message(url))
    assert listener.connections == 0


def test_web_push_to_an_internal_endpoint_sends_nothing(
    listener: Listener, resolve_to_loopback: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The push request carries VAPID auth: it must never reach an internal host."""
    with PushService() as service:
        monkeypatch.setenv("VAPID_PRIVATE_KEY", push_tests.VAPID_PRIVATE)
        monkeypatch.setenv("VAPID_SUBJECT", push_tests.SUBJECT)
        sub = service.subscribe()
        private = {**sub.info, "endpoint": f"http://127.0.0.1:{listener.port}/push/1"}
        rebound = {**sub.info, "endpoint": f"https://fcm.googleapis.com:{listener.port}/fcm/2"}
        with (
            environment({"NOTIFIER_ALLOW_PRIVATE_URLS": ""}),
            pytest.raises(PermanentChannelError) as err,
        ):
            push_tests.send(push_tests.message(private, rebound))
        assert service.received == []
    assert listener.received == b""
    outcomes = err.value.response["subscriptions"]
    assert [o["outcome"] for o in outcomes] == ["invalid", "invalid"]
    assert "https" in outcomes[0]["error"] and "non-public" in outcomes[1]["error"]


@pytest.mark.usefixtures("db", "policy_on")
def test_the_directory_import_refuses_such_urls() -> None:
    with pytest.raises(InvalidEvent, match="Slack webhook"):
        import_document(directory(slackWebhookUrl="http://127.0.0.1:8080/hook"))
    sub = {"endpoint": "https://10.1.1.1/push", "keys": {"p256dh": "x", "auth": "y"}}
    with pytest.raises(InvalidEvent, match="push endpoint"):
        import_document(directory(person("u1", webPushSubscriptions=[sub])))
    ok = {"endpoint": "https://fcm.googleapis.com/fcm/send/1", "keys": {"p256dh": "x", "auth": "y"}}
    import_document(
        directory(
            person("u1", webPushSubscriptions=[ok]),
            slackWebhookUrl="https://hooks.slack.com/services/T/B/x",
        )
    )


@pytest.mark.parametrize(
    ("status", "body", "expected"),
    [
        (400, "invalid_payload", "HTTP 400 invalid_payload"),
        (500, '{"error": "rollup_error"}', "HTTP 500 rollup_error"),
        (500, "<html><title>db01.internal: password for admin=...</title></html>", "HTTP 500"),
        (502, '{"error": "connect to 10.0.0.5:5432 refused"}', "HTTP 502"),
        (404, "x" * 10_000, "HTTP 404"),
        (410, b"\xff\xfe\x00", "HTTP 410"),
    ],
)
def test_what_a_host_answers_is_a_status_and_a_short_code(
    status: int, body: str | bytes, expected: str
) -> None:
    assert sanitized_reason(status, body) == expected


def test_a_hostile_slack_answer_is_not_stored(slack: Any) -> None:
    """The reported finding: an internal host's error body stored and shown by status."""
    slack.script(500, body="<h1>Internal</h1> redis://:hunter2@10.0.0.3:6379 stack trace...")
    with pytest.raises(Exception) as err:
        slack_tests.send(slack_tests.message(slack.url("T/B/x")))
    assert err.value.response == {"status": 500, "reason": "HTTP 500"}  # type: ignore[attr-defined]
    assert "hunter2" not in str(err.value)


slack = slack_tests.slack
peer = slack_tests.peer

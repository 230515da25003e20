"""SlackChannel against a local incoming-webhook endpoint that validates Block Kit."""

from __future__ import annotations

import json
import logging
import socket
from collections.abc import Iterator
from typing import Any

import pytest

from channels.base import (
    DeliveryResult,
    Message,
    NotifierError,
    PermanentChannelError,
    TransientChannelError,
)
from channels.slack import SlackChannel, clip
from tests.peers.slack import SlackWebhook, block_errors

SECRET_PATH = "T0TENANT1/B0HOOK42/s3cr3tT0k3nValue"


@pytest.fixture(scope="module")
def peer() -> Iterator[SlackWebhook]:
    with SlackWebhook() as webhook:
        yield webhook


@pytest.fixture
def slack(peer: SlackWebhook, monkeypatch: pytest.MonkeyPatch) -> Iterator[SlackWebhook]:
    peer.reset()
    monkeypatch.setenv("NOTIFIER_SLACK_TIMEOUT", "2")
    yield peer
    peer.reset()


def message(url: str | None, **overrides: Any) -> Message:
    values: dict[str, Any] = {
        "delivery_id": 7,
        "tenant_id": "t-1",
        "event_type": "payment.failed",
        "channel": "slack",
        "recipient": "staff-1",
        "address": url,
        "subject": "Payment failed: NT$1,200",
        "text": ":warning: Payment *p-9* of *NT$1,200* failed: card declined. "
        "<https://app.example.com/pay/9|Retry payment>",
        "priority": "high",
        "retry_key": "0f0e0d0c0b0a09080706050403020100",
    }
    values.update(overrides)
    return Message(**values)


def send(msg: Message) -> Any:
    return SlackChannel().send(msg)


def assert_no_secret(err: NotifierError) -> None:
    for text in (str(err), repr(err), err.describe(), json.dumps(err.response)):
        assert "s3cr3t" not in text
        assert SECRET_PATH not in text


# -- success -------------------------------------------------------------------------------


def test_success_sends_blocks_and_fallback_text(slack: SlackWebhook) -> None:
    result = send(message(slack.url(SECRET_PATH)))

    assert isinstance(result, DeliveryResult)
    assert result.provider_message_id is None
    assert result.raw_response == {"status": 200, "reason": "HTTP 200 ok"}
    [req] = slack.received
    assert req.error is None
    assert req.path == f"/services/{SECRET_PATH}"
    assert req.headers["content-type"].startswith("application/json")
    body = req.body
    assert body["text"] == (
        "Payment failed: NT$1,200\n:warning: Payment *p-9* of *NT$1,200* failed: card declined. "
        "<https://app.example.com/pay/9|Retry payment>"
    )
    assert body["blocks"] == [
        {
            "type": "header",
            "text": {"type": "plain_text", "text": "Payment failed: NT$1,200", "emoji": True},
        },
        {
            "type": "section",
            "text": {
                "type": "mrkdwn",
                "text": ":warning: Payment *p-9* of *NT$1,200* failed: card declined. "
                "<https://app.example.com/pay/9|Retry payment>",
            },
        },
        {
            "type": "context",
            "elements": [
                {"type": "plain_text", "text": "payment.failed · priority high", "emoji": False}
            ],
        },
    ]


def test_long_subject_and_text_are_cut_to_slack_limits(slack: SlackWebhook) -> None:
    subject = "課程取消通知" * 60  # 360 characters
    text = "Details *bold* & more. " * 300  # 6,900 characters

    result = send(message(slack.url(), subject=subject, text=text))

    assert isinstance(result, DeliveryResult)
    [req] = slack.received
    assert req.error is None
    header, section, _ = req.body["blocks"]
    assert len(header["text"]["text"]) <= 150 and header["text"]["text"].endswith("…")
    assert len(section["text"]["text"]) <= 3000 and section["text"]["text"].endswith("…")
    assert text.startswith(section["text"]["text"][:-1])
    assert len(req.body["text"]) <= 3000


def test_clip_never_cuts_inside_a_link_or_entity() -> None:
    text = "a" * 90 + " <https://example.com/very/long/link|Open it>"
    cut = clip(text, 100)
    assert cut == "a" * 90 + "…"
    assert clip("b" * 96 + " &amp; tail", 100) == "b" * 96 + "…"
    assert clip("short", 100) == "short"


def test_peer_refuses_what_slack_refuses() -> None:
    assert block_errors([{"type": "header", "text": {"type": "plain_text", "text": "x" * 151}}])
    assert block_errors([{"type": "section", "text": {"type": "mrkdwn", "text": "x" * 3001}}])
    assert block_errors([{"type": "bogus"}])
    assert not block_errors([{"type": "divider"}])


def test_empty_subject_sends_no_header_block(slack: SlackWebhook) -> None:
    send(message(slack.url(), subject=""))
    [req] = slack.received
    assert req.error is None
    assert [b["type"] for b in req.body["blocks"]] == ["section", "context"]


# -- scripted answers ----------------------------------------------------------------------


def test_429_honours_retry_after_without_sdk_retries(slack: SlackWebhook) -> None:
    slack.script(429, {"Retry-After": "3"}, "rate_limited")

    with pytest.raises(TransientChannelError) as err:
        send(message(slack.url(SECRET_PATH)))

    assert err.value.retry_after == 3
    assert err.value.status_code == 429
    assert err.value.channel == "slack" and err.value.delivery_id == 7
    assert len(slack.received) == 1  # slack_sdk's retry handlers are off
    assert_no_secret(err.value)


def test_500_rollup_error_is_transient(slack: SlackWebhook) -> None:
    slack.script(500, body="rollup_error")

    with pytest.raises(TransientChannelError, match="rollup_error") as err:
        send(message(slack.url(SECRET_PATH)))

    assert err.value.status_code == 500
    assert err.value.response == {"status": 500, "reason": "HTTP 500 rollup_error"}
    assert len(slack.received) == 1
    assert_no_secret(err.value)


@pytest.mark.parametrize("status", [502, 503, 504])
def test_5xx_is_transient(slack: SlackWebhook, status: int) -> None:
    slack.script(status, body="service_unavailable")
    with pytest.raises(TransientChannelError) as err:
        send(message(slack.url()))
    assert err.value.status_code == status


def test_400_invalid_payload_is_permanent(slack: SlackWebhook) -> None:
    slack.script(400, body="invalid_payload")

    with pytest.raises(PermanentChannelError, match="invalid_payload") as err:
        send(message(slack.url(SECRET_PATH)))

    assert err.value.status_code == 400
    assert err.value.disable_channel is False
    assert err.value.suppress is False
    assert_no_secret(err.value)


@pytest.mark.parametrize(
    ("status", "code"),
    [
        (403, "action_prohibited"),
        (404, "channel_not_found"),
        (410, "channel_is_archived"),
        (404, "no_service"),
        (403, "invalid_token"),
    ],
)
def test_gone_or_forbidden_webhook_disables_the_channel(
    slack: SlackWebhook, status: int, code: str
) -> None:
    slack.script(status, body=code)

    with pytest.raises(PermanentChannelError, match=code) as err:
        send(message(slack.url(SECRET_PATH)))

    assert err.value.disable_channel is True
    assert err.value.status_code == status
    assert err.value.response == {"status": status, "reason": f"HTTP {status} {code}"}
    assert_no_secret(err.value)


def test_a_response_echoing_the_url_is_scrubbed(slack: SlackWebhook) -> None:
    url = slack.url(SECRET_PATH)
    slack.script(400, body=f"invalid_payload for {url} (/services/{SECRET_PATH})")

    with pytest.raises(PermanentChannelError) as err:
        send(message(url))

    assert_no_secret(err.value)


def test_timeout_is_transient(slack: SlackWebhook, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NOTIFIER_SLACK_TIMEOUT", "0.3")
    slack.script(200, body="ok", delay=1.0)

    with pytest.raises(TransientChannelError, match="timed out") as err:
        send(message(slack.url(SECRET_PATH)))

    assert err.value.status_code is None
    assert len(slack.received) == 1
    assert_no_secret(err.value)


def test_connection_refused_is_transient() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]

    with pytest.raises(TransientChannelError, match="connection error") as err:
        send(message(f"http://127.0.0.1:{port}/services/{SECRET_PATH}"))

    assert_no_secret(err.value)


def test_a_non_http_webhook_url_disables_the_channel() -> None:
    with pytest.raises(PermanentChannelError) as err:
        send(message(f"file:///services/{SECRET_PATH}"))
    assert err.value.disable_channel is True
    assert_no_secret(err.value)


def test_no_webhook_url_is_permanent() -> None:
    with pytest.raises(PermanentChannelError, match="no Slack webhook"):
        send(message(None))


def test_the_webhook_url_is_never_logged(
    slack: SlackWebhook, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)

    send(message(slack.url(SECRET_PATH)))
    slack.script(500, body="rollup_error")
    with pytest.raises(TransientChannelError):
        send(message(slack.url(SECRET_PATH)))

    assert "s3cr3t" not in caplog.text

"""The email channel against real local peers: moto's server and a scripted SES v2 stub for
SES, an aiosmtpd server for SMTP. No provider library is mocked."""

from __future__ import annotations

import base64
import email
import email.policy
import json
import socket
import threading
import time
from collections import deque
from collections.abc import Iterator
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from channels.base import (
    DeliveryResult,
    Message,
    NotifierError,
    PermanentChannelError,
    TransientChannelError,
)
from channels.email import SesEmailChannel, SmtpEmailChannel
from tests.peers.moto import MotoPeer, moto_server
from tests.peers.smtp import SmtpPeer

SENDER = "notifications@kyo.app"
RECIPIENT = "member@example.com"
SUBJECT = "【課程更新】您的瑜伽課程時間已變更，請確認新的上課時間 — Kyo Gym 台北信義館"
TEXT = "王小明您好：\n您報名的「晨間瑜伽」改到週三 07:00，地點不變。\n—— Kyo Gym"
HTML = "<p>王小明您好：</p><p>您報名的<b>「晨間瑜伽」</b>改到週三 07:00。</p>"
UNSUBSCRIBE = "https://notify.kyo.app/unsubscribe?token=" + "t0k3n" * 20


def make_message(**overrides: Any) -> Message:
    fields: dict[str, Any] = {
        "delivery_id": 42,
        "tenant_id": "gym-a",
        "event_type": "CourseUpdated",
        "channel": "email",
        "recipient": "u1",
        "address": RECIPIENT,
        "subject": SUBJECT,
        "text": TEXT,
        "html": HTML,
        "retry_key": "0f1e2d3c4b5a69788796a5b4c3d2e1f0",
        "attributes": {"unsubscribe_url": UNSUBSCRIBE, "locale": "zh-TW"},
    }
    fields.update(overrides)
    return Message(**fields)


def parse(raw: bytes | str) -> EmailMessage:
    if isinstance(raw, str):
        raw = raw.encode()
    parsed: EmailMessage = email.message_from_bytes(raw, policy=email.policy.default)
    return parsed


def assert_full_message(mime: EmailMessage, *, message_id: str | None = None) -> None:
    """Both parts present and UTF-8 decoded, the Subject intact, RFC 8058 headers present."""
    assert mime["Subject"] == SUBJECT
    assert mime["From"] == SENDER
    assert mime["To"] == RECIPIENT
    assert mime.get_content_type() == "multipart/alternative"
    parts = {part.get_content_type(): part for part in mime.iter_parts()}
    assert set(parts) == {"text/plain", "text/html"}
    for part in parts.values():
        assert part.get_content_charset() == "utf-8"
    assert parts["text/plain"].get_content().rstrip("\n") == TEXT
    assert parts["text/html"].get_content().rstrip("\n") == HTML
    assert mime["List-Unsubscribe"].strip() == f"<{UNSUBSCRIBE}>"
    assert mime["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert mime["Message-ID"]
    if message_id is not None:
        assert mime["Message-ID"] == message_id
    # The raw message stays 7-bit: encoded words in headers, base64 bodies.
    assert mime.as_bytes().isascii()


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in (
        "AWS_PROFILE",
        "AWS_ENDPOINT_URL_SESV2",
        "NOTIFIER_EMAIL_FROM",
        "SMTP_USERNAME",
        "SMTP_PASSWORD",
        "SMTP_STARTTLS",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
    return monkeypatch


# =========================================================================== SES / moto


@pytest.fixture(scope="module")
def moto_peer() -> Iterator[MotoPeer]:
    with moto_server() as peer:
        yield peer


@pytest.fixture
def ses_moto(moto_peer: MotoPeer, clean_env: pytest.MonkeyPatch) -> MotoPeer:
    import boto3

    moto_peer.reset()
    for name, value in moto_peer.env().items():
        clean_env.setenv(name, value)
    client = boto3.session.Session().client("sesv2", endpoint_url=moto_peer.url)
    client.create_email_identity(EmailIdentity=SENDER)
    return moto_peer


def moto_raw_messages(moto: MotoPeer) -> list[dict[str, Any]]:
    return moto.ses_raw_messages()


def test_ses_sends_raw_mime_through_moto(ses_moto: MotoPeer) -> None:
    message = make_message()
    result = SesEmailChannel().send(message)

    assert isinstance(result, DeliveryResult)
    assert isinstance(result, DeliveryResult)
    assert result.provider_message_id
    assert result.raw_response["MessageId"] == result.provider_message_id
    assert "ResponseMetadata" not in result.raw_response
    json.dumps(result.raw_response)

    [stored] = moto_raw_messages(ses_moto)
    assert stored["id"] == result.provider_message_id
    assert stored["source"] == SENDER
    assert RECIPIENT in stored["destinations"]
    assert_full_message(parse(stored["raw_data"]))


def test_ses_text_only_message_and_display_name_sender(
    ses_moto: MotoPeer, clean_env: pytest.MonkeyPatch
) -> None:
    clean_env.setenv("NOTIFIER_EMAIL_FROM", f"Kyo 健身 <{SENDER}>")
    message = make_message(html=None, attributes={}, subject="Plain subject")
    result = SesEmailChannel().send(message)
    assert isinstance(result, DeliveryResult)

    [stored] = moto_raw_messages(ses_moto)
    mime = parse(stored["raw_data"])
    assert mime.get_content_type() == "text/plain"
    assert mime.get_content().rstrip("\n") == TEXT
    assert mime["Subject"] == "Plain subject"
    assert mime["From"].addresses[0].display_name == "Kyo 健身"
    assert mime["From"].addresses[0].addr_spec == SENDER
    assert "List-Unsubscribe" not in mime


def test_ses_unverified_sender_is_a_permanent_failure(
    ses_moto: MotoPeer, clean_env: pytest.MonkeyPatch
) -> None:
    clean_env.setenv("NOTIFIER_EMAIL_FROM", "someone@unverified.example")
    with pytest.raises(PermanentChannelError) as caught:
        SesEmailChannel().send(make_message())
    error = caught.value
    assert error.response["code"] == "MessageRejected"
    assert not error.disable_channel and not error.suppress
    assert error.channel == "email" and error.delivery_id == 42
    assert moto_raw_messages(ses_moto) == []


# =========================================================================== SES / scripted


class SesStub:
    """A tiny SES v2 REST server: answers POST /v2/email/outbound-emails from a script."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.script: deque[tuple[int, dict[str, str], bytes, float]] = deque()
        self._lock = threading.Lock()
        stub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length)
                with stub._lock:
                    stub.requests.append(
                        {
                            "method": "POST",
                            "path": self.path,
                            "headers": dict(self.headers),
                            "body": json.loads(raw or b"{}"),
                        }
                    )
                    step = stub.script.popleft() if stub.script else None
                if step is None:
                    step = (200, {}, json.dumps({"MessageId": "stub-message-1"}).encode(), 0.0)
                status, headers, body, delay = step
                if delay:
                    time.sleep(delay)
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("x-amzn-RequestId", "stub-request-1")
                    for name, value in headers.items():
                        self.send_header(name, value)
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                except OSError:
                    pass  # the client gave up (timeout tests)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def error(self, status: int, code: str | None, text: str, delay: float = 0.0) -> None:
        headers = {"x-amzn-ErrorType": f"{code}:http://internal.amazon.com/coral/"} if code else {}
        body = json.dumps({"message": text}).encode() if code else b"<html>Bad Gateway</html>"
        self.script.append((status, headers, body, delay))

    def reset(self) -> None:
        with self._lock:
            self.requests.clear()
            self.script.clear()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def ses_stub_server() -> Iterator[SesStub]:
    stub = SesStub()
    yield stub
    stub.stop()


@pytest.fixture
def ses_stub(ses_stub_server: SesStub, clean_env: pytest.MonkeyPatch) -> SesStub:
    ses_stub_server.reset()
    clean_env.setenv("AWS_ENDPOINT_URL", ses_stub_server.url)
    clean_env.setenv("AWS_ACCESS_KEY_ID", "testing")
    clean_env.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    clean_env.setenv("AWS_DEFAULT_REGION", "ap-northeast-1")
    return ses_stub_server


def test_ses_request_carries_raw_mime_and_stable_message_id(ses_stub: SesStub) -> None:
    channel = SesEmailChannel()
    message = make_message()
    first = channel.send(message)
    second = channel.send(message)  # a retry of the same delivery
    assert first.provider_message_id == second.provider_message_id == "stub-message-1"
    assert first.raw_response == {"MessageId": "stub-message-1", "RequestId": "stub-request-1"}

    assert [r["path"] for r in ses_stub.requests] == ["/v2/email/outbound-emails"] * 2
    bodies = [r["body"] for r in ses_stub.requests]
    assert bodies[0]["FromEmailAddress"] == SENDER
    assert bodies[0]["Destination"] == {"ToAddresses": [RECIPIENT]}
    assert "Simple" not in bodies[0]["Content"]
    mimes = [parse(base64.b64decode(b["Content"]["Raw"]["Data"])) for b in bodies]
    assert_full_message(mimes[0])
    # No SES idempotency key exists: a retry at least repeats the Message-ID.
    assert mimes[0]["Message-ID"] == mimes[1]["Message-ID"]
    assert "ap-northeast-1" in ses_stub.requests[0]["headers"]["Authorization"]


QUOTA = "Daily message quota exceeded."
RATE = "Maximum sending rate exceeded."

SES_ROWS = [
    # (status, x-amzn-ErrorType, message, class, flags)
    (400, "Throttling", RATE, TransientChannelError, {"retry_after": None}),
    (429, "TooManyRequestsException", RATE, TransientChannelError, {"retry_after": None}),
    (400, "Throttling", QUOTA, TransientChannelError, {"retry_after": 600}),
    (429, "TooManyRequestsException", QUOTA, TransientChannelError, {"retry_after": 600}),
    (400, "LimitExceededException", "Sending quota", TransientChannelError, {"retry_after": 600}),
    (400, "MessageRejected", "Email address is not verified.", PermanentChannelError, {}),
    (400, "BadRequestException", "Invalid raw message.", PermanentChannelError, {}),
    (400, "MailFromDomainNotVerifiedException", "MAIL FROM", PermanentChannelError, {}),
    (400, "AccountSuspendedException", "suspended", PermanentChannelError, {"disable": True}),
    (400, "SendingPausedException", "paused", PermanentChannelError, {"disable": True}),
    (
        400,
        "ConfigurationSetDoesNotExistException",
        "no set",
        PermanentChannelError,
        {"disable": True},
    ),
    (404, "NotFoundException", "no such set", PermanentChannelError, {"disable": True}),
    (403, "AccessDeniedException", "not allowed", PermanentChannelError, {"disable": True}),
    (403, "UnrecognizedClientException", "bad token", PermanentChannelError, {"disable": True}),
    (500, "InternalFailure", "oops", TransientChannelError, {"retry_after": None}),
    (503, "ServiceUnavailable", "later", TransientChannelError, {"retry_after": None}),
    (500, "InternalServiceErrorException", "oops", TransientChannelError, {}),
    (502, None, "bad gateway", TransientChannelError, {}),
]


@pytest.mark.parametrize(
    ("status", "code", "text", "expected", "flags"),
    SES_ROWS,
    ids=[f"{row[0]}-{row[1]}-{row[2][:12]}" for row in SES_ROWS],
)
def test_ses_error_table(
    ses_stub: SesStub,
    status: int,
    code: str | None,
    text: str,
    expected: type[NotifierError],
    flags: dict[str, Any],
) -> None:
    ses_stub.error(status, code, text)
    with pytest.raises(expected) as caught:
        SesEmailChannel().send(make_message())
    error = caught.value
    assert type(error) is expected
    assert len(ses_stub.requests) == 1  # botocore retries are off
    assert error.channel == "email"
    assert error.delivery_id == 42
    assert error.status_code == status
    json.dumps(error.response)
    if code:
        assert error.response["code"] == code
        assert error.response["message"] == text
    if isinstance(error, TransientChannelError):
        if flags.get("retry_after"):
            assert error.retry_after is not None and error.retry_after >= flags["retry_after"]
        elif "retry_after" in flags:
            assert error.retry_after is None
    else:
        assert isinstance(error, PermanentChannelError)
        assert error.disable_channel is bool(flags.get("disable"))
        assert error.suppress is False


def test_ses_read_timeout_is_transient(ses_stub: SesStub, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(SesEmailChannel, "read_timeout", 0.5)
    ses_stub.script.append((200, {}, b'{"MessageId": "late"}', 6.0))
    started = time.monotonic()
    with pytest.raises(TransientChannelError) as caught:
        SesEmailChannel().send(make_message())
    assert time.monotonic() - started < 4.0  # the read timeout, not the peer's 6 s
    assert caught.value.response == {"error": "ReadTimeoutError"}
    assert len(ses_stub.requests) == 1


def test_ses_endpoint_down_is_transient(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{free_port()}")
    clean_env.setenv("AWS_ACCESS_KEY_ID", "testing")
    clean_env.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    with pytest.raises(TransientChannelError) as caught:
        SesEmailChannel().send(make_message())
    assert caught.value.response == {"error": "EndpointConnectionError"}


def test_missing_address_is_permanent(ses_stub: SesStub) -> None:
    with pytest.raises(PermanentChannelError):
        SesEmailChannel().send(make_message(address=None))
    with pytest.raises(PermanentChannelError):
        SesEmailChannel().send(make_message(address="a@example.com\r\nBcc: x@example.com"))
    assert ses_stub.requests == []


def test_ses_body_is_cut_at_max_body_len(
    ses_stub: SesStub, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(SesEmailChannel, "max_body_len", 10)
    SesEmailChannel().send(make_message())
    mime = parse(base64.b64decode(ses_stub.requests[0]["body"]["Content"]["Raw"]["Data"]))
    parts = {part.get_content_type(): part.get_content() for part in mime.iter_parts()}
    assert parts["text/plain"] == TEXT[:10]
    assert parts["text/html"] == HTML[:10]


# =========================================================================== SMTP


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


@pytest.fixture(scope="module")
def smtp_server() -> Iterator[SmtpPeer]:
    peer = SmtpPeer().start()
    yield peer
    peer.stop()


@pytest.fixture
def smtp(smtp_server: SmtpPeer, clean_env: pytest.MonkeyPatch) -> SmtpPeer:
    smtp_server.reset()
    for name, value in smtp_server.env().items():
        clean_env.setenv(name, value)
    return smtp_server


@pytest.fixture
def smtp_channel(smtp: SmtpPeer) -> Iterator[SmtpEmailChannel]:
    channel = SmtpEmailChannel()
    yield channel
    channel.close()


def test_smtp_sends_the_mime_message(smtp: SmtpPeer, smtp_channel: SmtpEmailChannel) -> None:
    result = smtp_channel.send(make_message())

    assert isinstance(result, DeliveryResult)
    assert result.raw_response == {"smtp": "250 2.0.0 Ok: queued as TEST0001"}
    [received] = smtp.messages
    assert received.mail_from == SENDER
    assert received.rcpt_tos == [RECIPIENT]
    assert_full_message(received.message, message_id=result.provider_message_id)


def test_smtp_reuses_one_connection(smtp: SmtpPeer, smtp_channel: SmtpEmailChannel) -> None:
    results = [smtp_channel.send(make_message(delivery_id=i, retry_key=None)) for i in range(5)]
    assert len(smtp.messages) == 5
    assert smtp.connections == 1
    assert len({m.peer for m in smtp.messages}) == 1
    assert len({r.provider_message_id for r in results}) == 5


def test_smtp_connection_per_thread(smtp: SmtpPeer, smtp_channel: SmtpEmailChannel) -> None:
    errors: list[BaseException] = []

    def worker(base: int) -> None:
        try:
            for i in range(3):
                smtp_channel.send(make_message(delivery_id=base + i))
        except BaseException as exc:
            errors.append(exc)
        finally:
            smtp_channel.close()

    threads = [threading.Thread(target=worker, args=(n * 10,)) for n in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert errors == []
    assert len(smtp.messages) == 9
    assert smtp.connections == 3


def test_smtp_retry_repeats_the_message_id(smtp: SmtpPeer, smtp_channel: SmtpEmailChannel) -> None:
    smtp.handler.data_replies.append("451 4.3.0 Try again later")
    message = make_message()
    with pytest.raises(TransientChannelError):
        smtp_channel.send(message)
    result = smtp_channel.send(message)
    [received] = smtp.messages
    assert received.message["Message-ID"] == result.provider_message_id
    assert result.provider_message_id == f"<{message.retry_key}.42@kyo.app>"


SMTP_ROWS = [
    # (stage, scripted reply, class, flags)
    ("rcpt", "550 5.1.1 <member@example.com>: Recipient address rejected: User unknown",
     PermanentChannelError, {"suppress": True}),
    ("rcpt", "551 5.1.6 User not local", PermanentChannelError, {"suppress": True}),
    ("rcpt", "553 5.1.3 Bad recipient address syntax", PermanentChannelError, {"suppress": True}),
    ("rcpt", "550 5.7.1 Relaying denied", PermanentChannelError, {}),
    ("rcpt", "552 5.2.2 Mailbox full", PermanentChannelError, {}),
    ("rcpt", "450 4.2.0 Mailbox busy", TransientChannelError, {}),
    ("data", "451 4.3.0 Try again later", TransientChannelError, {}),
    ("data", "554 5.6.0 Message rejected as spam", PermanentChannelError, {}),
    ("data", "454 Throttling failure: Daily message quota exceeded", TransientChannelError,
     {"retry_after": 600}),
    ("mail", "530 5.7.0 Authentication required", PermanentChannelError, {"disable": True}),
    ("mail", "553 5.7.1 Sender address rejected", PermanentChannelError, {}),
]  # fmt: skip


@pytest.mark.parametrize(
    ("stage", "reply", "expected", "flags"),
    SMTP_ROWS,
    ids=[f"{row[0]}-{row[1][:3]}-{row[1][4:9]}" for row in SMTP_ROWS],
)
def test_smtp_reply_table(
    smtp: SmtpPeer,
    smtp_channel: SmtpEmailChannel,
    stage: str,
    reply: str,
    expected: type[NotifierError],
    flags: dict[str, Any],
) -> None:
    getattr(smtp.handler, f"{stage}_replies").append(reply)
    with pytest.raises(expected) as caught:
        smtp_channel.send(make_message())
    error = caught.value
    assert type(error) is expected
    code = int(reply[:3])
    assert error.channel == "email" and error.delivery_id == 42
    assert error.status_code == code
    assert error.response == {"smtp": reply, "stage": stage}
    if isinstance(error, PermanentChannelError):
        assert error.suppress is bool(flags.get("suppress"))
        assert error.disable_channel is bool(flags.get("disable"))
    else:
        assert isinstance(error, TransientChannelError)
        assert error.retry_after == flags.get("retry_after")
    assert smtp.messages == []

    # The refused transaction was reset: the same connection carries the next message.
    smtp_channel.send(make_message())
    assert len(smtp.messages) == 1
    assert smtp.connections == 1


def test_smtp_421_on_a_reused_connection_reconnects(
    smtp: SmtpPeer, smtp_channel: SmtpEmailChannel
) -> None:
    smtp_channel.send(make_message(delivery_id=1))
    smtp.handler.mail_replies.append("421 4.7.0 Too many messages on this connection")
    smtp_channel.send(make_message(delivery_id=2))
    assert len(smtp.messages) == 2
    assert smtp.connections == 2


def test_smtp_421_on_a_fresh_connection_is_transient(
    smtp: SmtpPeer, smtp_channel: SmtpEmailChannel
) -> None:
    smtp.handler.mail_replies.append("421 4.3.2 Service shutting down")
    with pytest.raises(TransientChannelError) as caught:
        smtp_channel.send(make_message())
    assert caught.value.status_code == 421
    assert smtp.messages == []


def test_smtp_server_down_is_transient(
    clean_env: pytest.MonkeyPatch, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(SmtpEmailChannel, "timeout", 1.0)
    clean_env.setenv("SMTP_HOST", "127.0.0.1")
    clean_env.setenv("SMTP_PORT", str(free_port()))
    with pytest.raises(TransientChannelError) as caught:
        SmtpEmailChannel().send(make_message())
    assert caught.value.response == {"error": "ConnectionRefusedError"}


def test_smtp_timeout_is_transient(
    smtp: SmtpPeer, smtp_channel: SmtpEmailChannel, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(SmtpEmailChannel, "timeout", 0.5)
    smtp.handler.data_delay = 2.0
    started = time.monotonic()
    with pytest.raises(TransientChannelError) as caught:
        smtp_channel.send(make_message())
    assert time.monotonic() - started < 1.8  # no silent second attempt after DATA
    assert caught.value.response["stage"] == "data"
    assert "timed out" in str(caught.value)

    # The broken connection was dropped; the next send opens a new one.
    smtp.handler.data_delay = 0.0
    smtp_channel.send(make_message())
    assert smtp.connections == 2


def test_smtp_auth(clean_env: pytest.MonkeyPatch) -> None:
    peer = SmtpPeer(credentials=("mailer", "s3cret")).start()
    try:
        for name, value in peer.env().items():
            clean_env.setenv(name, value)
        clean_env.setenv("SMTP_USERNAME", "mailer")
        clean_env.setenv("SMTP_PASSWORD", "s3cret")
        channel = SmtpEmailChannel()
        assert isinstance(channel.send(make_message()), DeliveryResult)
        channel.close()

        clean_env.setenv("SMTP_PASSWORD", "wrong")
        with pytest.raises(PermanentChannelError) as caught:
            SmtpEmailChannel().send(make_message())
        assert caught.value.status_code == 535
        assert caught.value.disable_channel is True
        assert "s3cret" not in json.dumps(caught.value.response)
        assert len(peer.messages) == 1
    finally:
        peer.stop()


def test_smtp_starttls_not_offered_is_a_configuration_error(
    smtp: SmtpPeer, clean_env: pytest.MonkeyPatch
) -> None:
    clean_env.setenv("SMTP_STARTTLS", "true")
    with pytest.raises(PermanentChannelError) as caught:
        SmtpEmailChannel().send(make_message())
    assert caught.value.disable_channel is True
    assert smtp.messages == []


def test_both_backends_share_one_mime_builder(
    ses_stub: SesStub, smtp: SmtpPeer, smtp_channel: SmtpEmailChannel
) -> None:
    message = make_message()
    SesEmailChannel().send(message)
    smtp_channel.send(message)
    via_ses = parse(base64.b64decode(ses_stub.requests[0]["body"]["Content"]["Raw"]["Data"]))
    via_smtp = smtp.messages[0].message
    for header in ("Subject", "From", "To", "Message-ID", "List-Unsubscribe"):
        assert via_ses[header] == via_smtp[header]
    assert SesEmailChannel.name == SmtpEmailChannel.name == "email"
    assert (SesEmailChannel.backend, SmtpEmailChannel.backend) == ("ses", "smtp")
    assert SesEmailChannel.rate_per_sec == 14

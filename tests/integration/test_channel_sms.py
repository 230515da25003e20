"""SnsSmsChannel against moto's server (sent SMS read back from /moto-api/data.json) and a
scripted SNS Query API server for the answers moto cannot give."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import pytest

from channels.base import DeliveryResult, Message, PermanentChannelError, TransientChannelError
from channels.sms import SnsSmsChannel, fit_sms, is_gsm7, reset_sns_clients, sms_parts
from tests.peers.moto_sns import (
    MotoSnsServer,
    ScriptedSnsServer,
    moto_sns_server,
    scripted_sns_server,
)

PHONE = "+886912345678"


def sms_message(address: str | None = "+886 912-345-678", text: str = "Class at 7pm", **kw):
    fields = {
        "delivery_id": 42,
        "tenant_id": "gym-a",
        "event_type": "course.reminder",
        "channel": "sms",
        "recipient": "u1",
        "address": address,
        "subject": "Reminder",
        "text": text,
        "priority": "high",
        "retry_key": "0f" * 16,
    }
    fields.update(kw)
    return Message(**fields)


@pytest.fixture(scope="module")
def moto() -> Iterator[MotoSnsServer]:
    with moto_sns_server() as server:
        yield server


@pytest.fixture(scope="module")
def scripted_server() -> Iterator[ScriptedSnsServer]:
    with scripted_sns_server() as server:
        yield server


def _aws_env(monkeypatch: pytest.MonkeyPatch, endpoint: str) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "ap-northeast-1")
    monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)
    for name in ("AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_ENDPOINT_URL_SNS"):
        monkeypatch.delenv(name, raising=False)
    for name in ("SNS_SMS_SENDER_ID", "NOTIFIER_SMS_DEFAULT_REGION", "NOTIFIER_SMS_MAX_PARTS"):
        monkeypatch.delenv(name, raising=False)
    reset_sns_clients()


@pytest.fixture
def sns(moto: MotoSnsServer, monkeypatch: pytest.MonkeyPatch) -> MotoSnsServer:
    moto.reset()
    _aws_env(monkeypatch, moto.url)
    return moto


@pytest.fixture
def scripted(scripted_server: ScriptedSnsServer, monkeypatch: pytest.MonkeyPatch):
    scripted_server.clear()
    _aws_env(monkeypatch, scripted_server.url)
    return scripted_server


# --- segment budget ---------------------------------------------------------------------


def test_gsm7_detection() -> None:
    assert is_gsm7("Hello @ £5 {x} [y] €")
    assert not is_gsm7("你好")
    assert not is_gsm7("emoji 🙂")
    assert not is_gsm7("…")


@pytest.mark.parametrize(
    ("text", "parts"),
    [
        ("", 0),
        ("a" * 160, 1),
        ("a" * 161, 2),
        ("a" * 306, 2),
        ("a" * 307, 3),
        ("€" * 80, 1),  # 160 septets
        ("€" * 81, 2),
        ("中" * 70, 1),
        ("中" * 71, 2),
        ("中" * 134, 2),
        ("中" * 135, 3),
    ],
)
def test_sms_parts(text: str, parts: int) -> None:
    assert sms_parts(text) == parts


def test_fit_sms_keeps_what_fits() -> None:
    assert fit_sms("a" * 306, 2) == "a" * 306
    assert fit_sms("中" * 134, 2) == "中" * 134
    assert fit_sms("a" * 160, 1) == "a" * 160
    assert fit_sms("short", 2) == "short"


def test_fit_sms_gsm_truncates_with_ascii_ellipsis() -> None:
    fitted = fit_sms("a" * 400, 2)
    assert fitted == "a" * 303 + "..."
    assert len(fitted) == 306 and is_gsm7(fitted)
    assert fit_sms("a" * 200, 1) == "a" * 157 + "..."


def test_fit_sms_gsm_extension_characters_count_double() -> None:
    fitted = fit_sms("€" * 200, 2)
    # 153 septets per part, an escape pair never split: 76 euros (152) | 75 euros + "..."
    assert fitted.endswith("...") and sms_parts(fitted) == 2
    assert fitted.count("€") == 76 + 75
    one = fit_sms("[]{}" * 50, 1)
    assert sms_parts(one) == 1
    assert len(one) == 78 + 3  # 78 extension chars = 156 septets + "..."


def test_fit_sms_ucs2_truncates_with_unicode_ellipsis() -> None:
    fitted = fit_sms("中" * 300, 2)
    assert fitted == "中" * 133 + "…"
    assert fit_sms("中" * 100, 1) == "中" * 69 + "…"
    # one non-GSM character anywhere makes the whole message UCS-2
    mixed = fit_sms("a" * 200 + "中", 2)
    assert mixed == "a" * 133 + "…"


def test_fit_sms_counts_surrogate_pairs_as_two_units() -> None:
    fitted = fit_sms("🙂" * 100, 2)
    assert fitted.endswith("…") and sms_parts(fitted) == 2
    assert fitted.count("🙂") == 33 + 33  # 67 units per part, pairs never split


def test_fit_sms_strips_trailing_space_before_ellipsis() -> None:
    assert fit_sms("a" * 156 + " " + "b" * 100, 1) == "a" * 156 + "..."


# --- against moto -----------------------------------------------------------------------


def test_send_success_normalises_number(sns: MotoSnsServer) -> None:
    result = SnsSmsChannel().send(sms_message("+886 912-345-678", "Class at 7pm"))
    assert isinstance(result, DeliveryResult)
    assert result.provider_message_id
    assert result.raw_response["MessageId"] == result.provider_message_id
    assert sns.sms() == [
        {"phone_number": PHONE, "message": "Class at 7pm", "message_id": result.provider_message_id}
    ]


def test_national_number_uses_default_region(sns: MotoSnsServer) -> None:
    SnsSmsChannel().send(sms_message("0912345678"))
    assert [m["phone_number"] for m in sns.sms()] == [PHONE]


def test_default_region_is_configurable(
    sns: MotoSnsServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NOTIFIER_SMS_DEFAULT_REGION", "JP")
    SnsSmsChannel().send(sms_message("090-1234-5678"))
    assert [m["phone_number"] for m in sns.sms()] == ["+819012345678"]


def test_opted_out_number_is_suppressed_and_not_sent(sns: MotoSnsServer) -> None:
    with pytest.raises(PermanentChannelError) as info:
        SnsSmsChannel().send(sms_message("0912345699"))
    assert info.value.suppress and not info.value.disable_channel
    assert info.value.channel == "sms" and info.value.delivery_id == 42
    assert "912345699" not in str(info.value)
    assert sns.sms() == []


@pytest.mark.parametrize("address", ["12345", "not a phone", "+886 12", "0912"])
def test_invalid_number_is_suppressed(sns: MotoSnsServer, address: str) -> None:
    with pytest.raises(PermanentChannelError) as info:
        SnsSmsChannel().send(sms_message(address))
    assert info.value.suppress
    assert str(info.value) == "invalid phone number"
    assert sns.sms() == []


def test_missing_address_is_permanent_without_suppression(sns: MotoSnsServer) -> None:
    with pytest.raises(PermanentChannelError) as info:
        SnsSmsChannel().send(sms_message(None))
    assert not info.value.suppress


def test_chinese_text_over_budget_is_truncated(sns: MotoSnsServer) -> None:
    text = "您好，這是健身房的課程提醒。" * 20
    SnsSmsChannel().send(sms_message(text=text))
    (sent,) = sns.sms()
    assert sent["message"] == text[:133] + "…"
    assert sms_parts(sent["message"]) == 2


def test_max_parts_is_configurable(sns: MotoSnsServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NOTIFIER_SMS_MAX_PARTS", "1")
    SnsSmsChannel().send(sms_message(text="x" * 500))
    assert sns.sms()[0]["message"] == "x" * 157 + "..."


# --- against the scripted SNS server ----------------------------------------------------


def _attributes(params: dict[str, str]) -> dict[str, str]:
    out = {}
    for key, value in params.items():
        if key.startswith("MessageAttributes.entry.") and key.endswith(".Name"):
            prefix = key[: -len(".Name")]
            out[value] = params[f"{prefix}.Value.StringValue"]
    return out


def test_publish_request_carries_type_and_sender_id(scripted: ScriptedSnsServer) -> None:
    result = SnsSmsChannel().send(sms_message("0912345678"))
    assert isinstance(result, DeliveryResult)
    (check,) = scripted.received("CheckIfPhoneNumberIsOptedOut")
    assert check.params["phoneNumber"] == PHONE
    (publish,) = scripted.received("Publish")
    assert publish.params["PhoneNumber"] == PHONE
    assert publish.params["Message"] == "Class at 7pm"
    assert _attributes(publish.params) == {
        "AWS.SNS.SMS.SMSType": "Transactional",
        "AWS.SNS.SMS.SenderID": "KyoGym",
    }


@pytest.mark.parametrize("sender", ["12345", "ab", "TooLongSender1", "Kyo Gym", ""])
def test_invalid_sender_id_is_left_out(
    scripted: ScriptedSnsServer, monkeypatch: pytest.MonkeyPatch, sender: str
) -> None:
    monkeypatch.setenv("SNS_SMS_SENDER_ID", sender)
    SnsSmsChannel().send(sms_message())
    (publish,) = scripted.received("Publish")
    assert _attributes(publish.params) == {"AWS.SNS.SMS.SMSType": "Transactional"}


def test_valid_sender_id_from_env(scripted: ScriptedSnsServer, monkeypatch) -> None:
    monkeypatch.setenv("SNS_SMS_SENDER_ID", "Gym2")
    SnsSmsChannel().send(sms_message())
    (publish,) = scripted.received("Publish")
    assert _attributes(publish.params)["AWS.SNS.SMS.SenderID"] == "Gym2"


ERROR_ROWS = [
    # status, code, error class, suppress, disable_channel
    (429, "Throttling", TransientChannelError, False, False),
    (400, "Throttling", TransientChannelError, False, False),
    (500, "InternalError", TransientChannelError, False, False),
    (503, "ServiceUnavailable", TransientChannelError, False, False),
    (403, "AuthorizationError", PermanentChannelError, False, True),
    (403, "InvalidClientTokenId", PermanentChannelError, False, True),
    (400, "InvalidParameter", PermanentChannelError, False, False),
    (400, "InvalidParameterValue", PermanentChannelError, False, False),
]


@pytest.mark.parametrize(("status", "code", "cls", "suppress", "disable"), ERROR_ROWS)
def test_publish_error_rows(
    scripted: ScriptedSnsServer,
    status: int,
    code: str,
    cls: type[Exception],
    suppress: bool,
    disable: bool,
) -> None:
    scripted.script_error("Publish", status, code, f"Invalid parameter: PhoneNumber {PHONE}")
    with pytest.raises(cls) as info:
        SnsSmsChannel().send(sms_message())
    error = info.value
    assert type(error) is cls
    assert error.status_code == status
    assert error.channel == "sms" and error.delivery_id == 42
    assert error.response["Error"]["Code"] == code
    if isinstance(error, PermanentChannelError):
        assert (error.suppress, error.disable_channel) == (suppress, disable)
    # the provider's text quoted the number: it is redacted everywhere we keep it
    assert "912345678" not in str(error) and "912345678" not in repr(error.response)
    assert error.__cause__ is None and error.__suppress_context__
    # botocore retries are off: exactly one request per attempt
    assert len(scripted.received("Publish")) == 1
    assert len(scripted.received("CheckIfPhoneNumberIsOptedOut")) == 1


def test_non_xml_5xx_is_transient(scripted: ScriptedSnsServer) -> None:
    scripted.script("Publish", 502, "<html>Bad Gateway</html>")
    with pytest.raises(TransientChannelError) as info:
        SnsSmsChannel().send(sms_message())
    assert info.value.status_code == 502
    assert len(scripted.received("Publish")) == 1


def test_opted_out_answer_is_suppressed(scripted: ScriptedSnsServer) -> None:
    scripted.script(
        "CheckIfPhoneNumberIsOptedOut",
        200,
        "<CheckIfPhoneNumberIsOptedOutResponse><CheckIfPhoneNumberIsOptedOutResult>"
        "<isOptedOut>true</isOptedOut></CheckIfPhoneNumberIsOptedOutResult>"
        "</CheckIfPhoneNumberIsOptedOutResponse>",
    )
    with pytest.raises(PermanentChannelError) as info:
        SnsSmsChannel().send(sms_message())
    assert info.value.suppress
    assert info.value.response["isOptedOut"] is True
    assert scripted.received("Publish") == []


def test_opt_out_check_throttled_is_transient(scripted: ScriptedSnsServer) -> None:
    scripted.script_error("CheckIfPhoneNumberIsOptedOut", 429, "Throttling", "Rate exceeded")
    with pytest.raises(TransientChannelError):
        SnsSmsChannel().send(sms_message())
    assert len(scripted.received("CheckIfPhoneNumberIsOptedOut")) == 1
    assert scripted.received("Publish") == []


def test_opt_out_check_rejecting_number_suppresses(scripted: ScriptedSnsServer) -> None:
    scripted.script_error("CheckIfPhoneNumberIsOptedOut", 400, "InvalidParameter", "bad number")
    with pytest.raises(PermanentChannelError) as info:
        SnsSmsChannel().send(sms_message())
    assert info.value.suppress
    assert scripted.received("Publish") == []


def test_retry_after_throttling_succeeds(scripted: ScriptedSnsServer) -> None:
    scripted.script_error("Publish", 429, "Throttling", "Rate exceeded")
    channel = SnsSmsChannel()
    message = sms_message()
    with pytest.raises(TransientChannelError):
        channel.send(message)
    result = channel.send(message)
    assert isinstance(result, DeliveryResult)
    first, second = scripted.received("Publish")
    assert first.params == second.params  # the same request, built again


def test_timeout_is_transient(scripted: ScriptedSnsServer, monkeypatch) -> None:
    monkeypatch.setattr(SnsSmsChannel, "read_timeout", 0.3)
    scripted.script(
        "Publish", 200, "<PublishResponse><PublishResult/></PublishResponse>", delay=6.0
    )
    started = time.monotonic()
    with pytest.raises(TransientChannelError) as info:
        SnsSmsChannel().send(sms_message())
    # gave up at the read timeout, long before the peer answers (the machine may be busy)
    assert time.monotonic() - started < 4.0
    assert info.value.status_code is None
    assert "ReadTimeout" in str(info.value)
    assert len(scripted.received("Publish")) == 1


def test_connection_refused_is_transient(monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    _aws_env(monkeypatch, f"http://127.0.0.1:{port}")
    with pytest.raises(TransientChannelError) as info:
        SnsSmsChannel().send(sms_message())
    assert info.value.channel == "sms"

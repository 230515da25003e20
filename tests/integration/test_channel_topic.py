"""SnsTopicChannel against moto's server (topics, an SQS subscription with a filter policy)
and a scripted SNS Query API server for the errors moto cannot give."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from typing import Any

import boto3
import pytest

from channels.base import DeliveryResult, Message, PermanentChannelError, TransientChannelError
from channels.sms import reset_sns_clients
from channels.topic import SnsTopicChannel, sanitize_subject
from config.settings import TOPIC_CATEGORIES
from tests.peers.moto_sns import (
    MotoSnsServer,
    ScriptedSnsServer,
    moto_sns_server,
    scripted_sns_server,
)

REGION = "ap-northeast-1"
ACCOUNT = "123456789012"


def event(event_id: str = "evt-1", priority: str = "high") -> dict[str, Any]:
    return {
        "eventId": event_id,
        "eventType": "system.alert",
        "tenantId": "gym-a",
        "priority": priority,
        "occurredAt": "2026-11-22T02:00:00Z",
        "metadata": {"component": "scanner", "detail": "disk 91%"},
    }


def topic_message(
    priority: str = "high",
    event_id: str = "evt-1",
    category: str = "SystemAlerts",
    retry_key: str | None = "ab" * 16,
    **kw: Any,
) -> Message:
    fields: dict[str, Any] = {
        "delivery_id": 7,
        "tenant_id": "gym-a",
        "event_type": "system.alert",
        "channel": "topic",
        "recipient": "ops",
        "address": category,
        "subject": "Disk almost full",
        "text": "Disk usage at 91% on scanner",
        "priority": priority,
        "retry_key": retry_key,
        "attributes": {"category": category, "event": event(event_id, priority)},
    }
    fields.update(kw)
    return Message(**fields)


def _aws_env(monkeypatch: pytest.MonkeyPatch, endpoint: str) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)
    for name in ("AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_ENDPOINT_URL_SNS"):
        monkeypatch.delenv(name, raising=False)
    for category in TOPIC_CATEGORIES:
        monkeypatch.delenv(f"NOTIFIER_TOPIC_ARN_{category.upper()}", raising=False)
    reset_sns_clients()


@pytest.fixture(scope="module")
def moto() -> Iterator[MotoSnsServer]:
    with moto_sns_server() as server:
        yield server


@pytest.fixture(scope="module")
def scripted_server() -> Iterator[ScriptedSnsServer]:
    with scripted_sns_server() as server:
        yield server


class Topics:
    def __init__(self, url: str, monkeypatch: pytest.MonkeyPatch):
        kw = {"endpoint_url": url, "region_name": REGION}
        self.sns = boto3.client("sns", **kw)
        self.sqs = boto3.client("sqs", **kw)
        self.monkeypatch = monkeypatch
        self.arns: dict[str, str] = {}
        for category in TOPIC_CATEGORIES:
            arn = self.sns.create_topic(Name=f"notifier-{category}")["TopicArn"]
            self.arns[category] = arn
            monkeypatch.setenv(f"NOTIFIER_TOPIC_ARN_{category.upper()}", arn)
        self.queue_url = self.sqs.create_queue(QueueName="ops-alerts")["QueueUrl"]
        queue_arn = self.sqs.get_queue_attributes(
            QueueUrl=self.queue_url, AttributeNames=["QueueArn"]
        )["Attributes"]["QueueArn"]
        self.sns.subscribe(
            TopicArn=self.arns["SystemAlerts"],
            Protocol="sqs",
            Endpoint=queue_arn,
            Attributes={
                "FilterPolicy": json.dumps({"priority": ["high", "critical"]}),
                "RawMessageDelivery": "true",
            },
        )

    def receive(self) -> list[dict[str, Any]]:
        messages: list[dict[str, Any]] = []
        while True:
            got = self.sqs.receive_message(
                QueueUrl=self.queue_url,
                MaxNumberOfMessages=10,
                MessageAttributeNames=["All"],
                WaitTimeSeconds=0,
            ).get("Messages", [])
            if not got:
                return messages
            messages.extend(got)


@pytest.fixture
def topics(moto: MotoSnsServer, monkeypatch: pytest.MonkeyPatch) -> Topics:
    moto.reset()
    _aws_env(monkeypatch, moto.url)
    return Topics(moto.url, monkeypatch)


@pytest.fixture
def scripted(scripted_server: ScriptedSnsServer, monkeypatch: pytest.MonkeyPatch):
    scripted_server.clear()
    _aws_env(monkeypatch, scripted_server.url)
    for category in TOPIC_CATEGORIES:
        monkeypatch.setenv(
            f"NOTIFIER_TOPIC_ARN_{category.upper()}",
            f"arn:aws:sns:{REGION}:{ACCOUNT}:notifier-{category}",
        )
    return scripted_server


# --- subject ----------------------------------------------------------------------------


def test_sanitize_subject() -> None:
    assert sanitize_subject("Disk almost full") == "Disk almost full"
    assert sanitize_subject("line one\nline two\r\n\tend") == "line one line two end"
    assert sanitize_subject("Café résumé") == "Cafe resume"
    assert sanitize_subject("課程取消 Course cancelled") == "Course cancelled"
    assert sanitize_subject("課程取消") == ""
    long = sanitize_subject("x" * 300)
    assert len(long) <= 100 and long.endswith("...")
    assert all(" " <= ch <= "~" for ch in sanitize_subject("a\x00b\x1fc\x7fd€"))


# --- against moto -----------------------------------------------------------------------


def test_filter_policy_routes_only_high_priority(topics: Topics) -> None:
    channel = SnsTopicChannel()
    high = channel.send(topic_message("high", "evt-high"))
    low = channel.send(topic_message("low", "evt-low"))
    assert isinstance(high, DeliveryResult) and isinstance(low, DeliveryResult)
    assert high.provider_message_id
    assert high.raw_response["MessageId"] == high.provider_message_id

    (received,) = topics.receive()
    body = json.loads(received["Body"])  # raw delivery: our JSON as is
    assert body["eventId"] == "evt-high"
    assert body["eventType"] == "system.alert"
    assert body["tenantId"] == "gym-a"
    assert body["priority"] == "high"
    assert body["summary"] == "Disk usage at 91% on scanner"
    assert body["event"] == event("evt-high", "high")
    attributes = {k: v["StringValue"] for k, v in received["MessageAttributes"].items()}
    assert attributes == {"eventType": "system.alert", "tenantId": "gym-a", "priority": "high"}


def test_each_category_goes_to_its_topic(topics: Topics, moto: MotoSnsServer) -> None:
    for category in TOPIC_CATEGORIES:
        SnsTopicChannel().send(topic_message(category=category))
    sent = {t["arn"]: t["sent_notifications"] for t in moto.data()["sns"]["Topic"]}
    for category, arn in topics.arns.items():
        assert len(sent[arn]) == 1, category
        _id, text, subject, _attrs, _group = sent[arn][0]
        assert json.loads(text)["eventId"] == "evt-1"
        assert subject == "Disk almost full"


def test_category_falls_back_to_address(topics: Topics) -> None:
    message = topic_message(attributes={"event": event("evt-addr")}, address="systemalerts")
    SnsTopicChannel().send(message)
    (received,) = topics.receive()
    assert json.loads(received["Body"])["eventId"] == "evt-addr"


def test_missing_arn_names_the_variable(topics: Topics, monkeypatch) -> None:
    monkeypatch.delenv("NOTIFIER_TOPIC_ARN_PAYMENTUPDATES")
    with pytest.raises(PermanentChannelError) as info:
        SnsTopicChannel().send(topic_message(category="PaymentUpdates"))
    assert "NOTIFIER_TOPIC_ARN_PAYMENTUPDATES" in str(info.value)
    assert info.value.channel == "topic" and info.value.delivery_id == 7
    assert not info.value.suppress


def test_unknown_category_is_permanent(topics: Topics) -> None:
    with pytest.raises(PermanentChannelError, match="unknown topic category"):
        SnsTopicChannel().send(topic_message(category="Nope"))


def test_topic_that_does_not_exist_is_permanent(topics: Topics, monkeypatch) -> None:
    monkeypatch.setenv("NOTIFIER_TOPIC_ARN_SYSTEMALERTS", f"arn:aws:sns:{REGION}:{ACCOUNT}:missing")
    with pytest.raises(PermanentChannelError) as info:
        SnsTopicChannel().send(topic_message())
    assert info.value.status_code == 404
    assert info.value.response["Error"]["Code"] == "NotFound"


def test_fifo_topic_gets_group_and_dedup_id(
    topics: Topics, moto: MotoSnsServer, monkeypatch
) -> None:
    created = topics.sns.create_topic(Name="alerts.fifo", Attributes={"FifoTopic": "true"})
    arn = created["TopicArn"]
    monkeypatch.setenv("NOTIFIER_TOPIC_ARN_SYSTEMALERTS", arn)
    result = SnsTopicChannel().send(topic_message())  # moto insists on MessageGroupId
    assert isinstance(result, DeliveryResult)
    (fifo,) = [t for t in moto.data()["sns"]["Topic"] if t["arn"] == arn]
    (notification,) = fifo["sent_notifications"]
    assert notification[-1] == "gym-a"  # the message group


# --- against the scripted SNS server ----------------------------------------------------


def _attributes(params: dict[str, str]) -> dict[str, str]:
    out = {}
    for key, value in params.items():
        if key.startswith("MessageAttributes.entry.") and key.endswith(".Name"):
            out[value] = params[key[: -len(".Name")] + ".Value.StringValue"]
    return out


def test_publish_request(scripted: ScriptedSnsServer) -> None:
    SnsTopicChannel().send(topic_message(subject="課程 Alert:\nDisk almost full"))
    (publish,) = scripted.received("Publish")
    params = publish.params
    assert params["TopicArn"].endswith(":notifier-SystemAlerts")
    assert params["Subject"] == "Alert: Disk almost full"
    assert json.loads(params["Message"])["eventId"] == "evt-1"
    assert _attributes(params) == {
        "eventType": "system.alert",
        "tenantId": "gym-a",
        "priority": "high",
    }
    assert "MessageGroupId" not in params and "MessageDeduplicationId" not in params


def test_fifo_dedup_id_is_stable_across_retries(scripted: ScriptedSnsServer, monkeypatch) -> None:
    monkeypatch.setenv(
        "NOTIFIER_TOPIC_ARN_SYSTEMALERTS", f"arn:aws:sns:{REGION}:{ACCOUNT}:alerts.fifo"
    )
    scripted.script_error("Publish", 429, "Throttling", "Rate exceeded")
    channel = SnsTopicChannel()
    with pytest.raises(TransientChannelError):
        channel.send(topic_message())
    assert isinstance(channel.send(topic_message()), DeliveryResult)
    channel.send(topic_message(retry_key="cd" * 16))  # another delivery of the same event
    first, retry, other = (r.params for r in scripted.received("Publish"))
    assert first["MessageGroupId"] == retry["MessageGroupId"] == "gym-a"
    dedup = first["MessageDeduplicationId"]
    assert dedup == retry["MessageDeduplicationId"]
    assert len(dedup) <= 128 and dedup.isalnum()
    assert other["MessageDeduplicationId"] != dedup


ERROR_ROWS = [
    # status, code, error class, disable_channel
    (404, "NotFound", PermanentChannelError, False),
    (400, "InvalidParameter", PermanentChannelError, False),
    (400, "InvalidParameterValue", PermanentChannelError, False),
    (403, "AuthorizationError", PermanentChannelError, True),
    (400, "KMSAccessDenied", PermanentChannelError, True),
    (429, "Throttling", TransientChannelError, False),
    (400, "KMSThrottling", TransientChannelError, False),
    (500, "InternalError", TransientChannelError, False),
    (503, "ServiceUnavailable", TransientChannelError, False),
]


@pytest.mark.parametrize(("status", "code", "cls", "disable"), ERROR_ROWS)
def test_publish_error_rows(
    scripted: ScriptedSnsServer, status: int, code: str, cls: type[Exception], disable: bool
) -> None:
    scripted.script_error("Publish", status, code, f"{code} happened")
    with pytest.raises(cls) as info:
        SnsTopicChannel().send(topic_message())
    error = info.value
    assert type(error) is cls
    assert error.status_code == status
    assert error.channel == "topic" and error.delivery_id == 7
    assert error.response["Error"] == {
        "Code": code,
        "Type": "Sender" if status < 500 else "Receiver",
        "Message": f"{code} happened",
    }
    if isinstance(error, PermanentChannelError):
        assert error.disable_channel is disable and not error.suppress
    assert len(scripted.received("Publish")) == 1  # botocore retries are off


def test_timeout_is_transient(scripted: ScriptedSnsServer, monkeypatch) -> None:
    monkeypatch.setattr(SnsTopicChannel, "read_timeout", 0.3)
    scripted.script("Publish", 200, "<PublishResponse/>", delay=6.0)
    started = time.monotonic()
    with pytest.raises(TransientChannelError) as info:
        SnsTopicChannel().send(topic_message())
    # gave up at the read timeout, long before the peer answers (the machine may be busy)
    assert time.monotonic() - started < 4.0
    assert info.value.status_code is None
    assert len(scripted.received("Publish")) == 1


def test_connection_refused_is_transient(monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    _aws_env(monkeypatch, f"http://127.0.0.1:{port}")
    monkeypatch.setenv("NOTIFIER_TOPIC_ARN_SYSTEMALERTS", f"arn:aws:sns:{REGION}:{ACCOUNT}:x")
    with pytest.raises(TransientChannelError):
        SnsTopicChannel().send(topic_message())

"""Alarms to an SNS topic on moto's server and to a local Slack webhook, one per window per
key across workers (the real Redis), never with addresses or bodies."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import boto3
import pytest

from notifier import ratelimit
from notifier.alarms import AlarmService, raise_alarm
from tests.helpers import environment, wait_for
from tests.peers.moto import MotoPeer, moto_peer  # noqa: F401  (the session's moto server)
from tests.peers.slack import SlackWebhook

DETAILS = {
    "deliveryId": 41,
    "attempts": 4,
    "error": "550 mailbox unavailable for amy@example.com",
    "recipientEmail": "amy@example.com",
    "phone": "+886912345678",
    "body": "Hi Amy, your Gold membership expires on 2026-11-29",
    "webhookUrl": "https://hooks.slack.com/services/T0/B0/secret",
    "note": "LINE user U4af4980629abcdef0123456789abcdef; call 0912345678",
}
NEVER_PUBLISHED = (
    "amy@example.com",
    "+886912345678",
    "0912345678",
    "Hi Amy",
    "hooks.slack.com",
    "U4af4980629abcdef0123456789abcdef",
)


def unique_prefix() -> str:
    """Alarm keys of this test only: sessions and tests share the Redis."""
    return f"test-{uuid.uuid4().hex[:8]}-"


@pytest.fixture
def slack() -> Iterator[SlackWebhook]:
    with SlackWebhook() as peer:
        yield peer


class AlarmTopic:
    """An SNS alarm topic with an SQS queue subscribed, to read back what was published."""

    def __init__(self, peer: MotoPeer):
        kw: dict[str, Any] = {"endpoint_url": peer.url, "region_name": "us-east-1"}
        self.sns = boto3.client("sns", **kw)
        self.sqs = boto3.client("sqs", **kw)
        self.arn: str = self.sns.create_topic(Name="notifier-alarms")["TopicArn"]
        self.queue = self.sqs.create_queue(QueueName="ops-alarms")["QueueUrl"]
        queue_arn = self.sqs.get_queue_attributes(QueueUrl=self.queue, AttributeNames=["QueueArn"])[
            "Attributes"
        ]["QueueArn"]
        self.sns.subscribe(TopicArn=self.arn, Protocol="sqs", Endpoint=queue_arn)

    def received(self) -> list[dict[str, Any]]:
        """The SNS notifications delivered so far (Subject, Message...)."""
        got = self.sqs.receive_message(QueueUrl=self.queue, MaxNumberOfMessages=10)
        return [json.loads(m["Body"]) for m in got.get("Messages", [])]


@pytest.fixture
def topic(moto_peer: MotoPeer) -> Iterator[AlarmTopic]:  # noqa: F811
    moto_peer.reset()
    with environment(moto_peer.env()):
        from channels.sms import reset_sns_clients

        reset_sns_clients()
        yield AlarmTopic(moto_peer)
        reset_sns_clients()


def test_alarm_goes_to_the_sns_topic_without_addresses_or_bodies(topic: AlarmTopic) -> None:
    service = AlarmService(topic_arn=topic.arn, key_prefix=unique_prefix())
    published = service.raise_alarm(
        "error",  # severities are case-insensitive
        "Email deliveries failing for amy@example.com",
        key="delivery_failed:gym-a:email",
        tenant_id="gym-a",
        channel="email",
        details=DETAILS,
    )
    assert published is True
    [notification] = wait_for(topic.received)
    assert notification["Subject"] == ("[ERROR] notifier: Email deliveries failing for [email]")
    alarm = json.loads(notification["Message"])
    assert alarm["severity"] == "ERROR" and alarm["source"] == "notifier"
    assert (alarm["key"], alarm["tenantId"], alarm["channel"]) == (
        "delivery_failed:gym-a:email",
        "gym-a",
        "email",
    )
    assert alarm["details"] == {
        "deliveryId": 41,
        "attempts": 4,
        "error": "550 mailbox unavailable for [email]",
        "note": "LINE user [line-user]; call [phone]",
    }
    assert alarm["heldBack"] == 0
    assert not any(secret in json.dumps(notification) for secret in NEVER_PUBLISHED)


def test_a_thousand_alarms_of_one_key_publish_once(slack: SlackWebhook) -> None:
    prefix = unique_prefix()
    # four services: four worker processes sharing the broker's Redis
    workers = [AlarmService(slack_webhook_url=slack.url(), key_prefix=prefix) for _ in range(4)]

    def fire(n: int) -> bool:
        return workers[n % 4].raise_alarm(
            "CRITICAL", "LINE down", key="provider_down:gym-a:line", tenant_id="gym-a"
        )

    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(fire, range(1000)))
    assert results.count(True) == 1
    assert len(slack.received) == 1
    posted = slack.received[0]
    assert posted.error is None  # a body Slack accepts
    assert posted.body["text"] == "[CRITICAL] notifier: LINE down"

    other = workers[0].raise_alarm("CRITICAL", "SES down", key="provider_down:gym-a:email")
    assert other is True and len(slack.received) == 2


def test_the_next_alarm_after_the_window_counts_the_ones_held_back(slack: SlackWebhook) -> None:
    service = AlarmService(
        slack_webhook_url=slack.url(), window_seconds=1, key_prefix=unique_prefix()
    )
    key = "delivery_failed:gym-a:sms"
    assert service.raise_alarm("WARNING", "SMS failing", key=key) is True
    assert [service.raise_alarm("WARNING", "SMS failing", key=key) for _ in range(5)] == [False] * 5
    time.sleep(1.2)  # Redis expires the window by its own clock
    assert service.raise_alarm("WARNING", "SMS failing", key=key) is True
    assert [r.body["text"] for r in slack.received] == [
        "[WARNING] notifier: SMS failing",
        "[WARNING] notifier: SMS failing (and 5 more)",
    ]


def test_severity_is_validated() -> None:
    service = AlarmService(slack_webhook_url="http://127.0.0.1:1/services/x")
    for bad in ("FATAL", "", "warn"):
        with pytest.raises(ValueError, match="INFO, WARNING, ERROR, CRITICAL"):
            service.raise_alarm(bad, "x", key="k")


def test_no_target_and_failing_targets_never_raise(slack: SlackWebhook, topic: AlarmTopic) -> None:
    assert AlarmService(key_prefix=unique_prefix()).raise_alarm("ERROR", "x", key="k") is False

    slack.script(500, body="rollup_error")
    broken_slack = AlarmService(slack_webhook_url=slack.url(), key_prefix=unique_prefix())
    assert broken_slack.raise_alarm("ERROR", "x", key="k") is False
    unreachable = AlarmService(
        slack_webhook_url="http://127.0.0.1:1/services/x", key_prefix=unique_prefix()
    )
    assert unreachable.raise_alarm("ERROR", "x", key="k") is False
    missing_topic = AlarmService(
        topic_arn=topic.arn.replace("notifier-alarms", "no-such-topic"),
        key_prefix=unique_prefix(),
    )
    assert missing_topic.raise_alarm("ERROR", "x", key="k") is False
    # one target down does not stop the other
    both = AlarmService(
        topic_arn=topic.arn,
        slack_webhook_url="http://127.0.0.1:1/services/x",
        key_prefix=unique_prefix(),
    )
    assert both.raise_alarm("ERROR", "x", key="k") is True
    assert len(wait_for(topic.received)) == 1


def test_raise_alarm_reads_the_settings(slack: SlackWebhook) -> None:
    values = {"NOTIFIER_ALARM_SLACK_WEBHOOK_URL": slack.url(), "NOTIFIER_ALARM_WINDOW": "600"}
    with environment(values):
        key = f"ingest_dead_letters:gym-a:{uuid.uuid4().hex}"
        assert raise_alarm("INFO", "Dead letters", key=key, tenant_id="gym-a") is True
        assert raise_alarm("INFO", "Dead letters", key=key, tenant_id="gym-a") is False
    assert len(slack.received) == 1
    assert slack.received[0].path == "/services/T0000/B0000/secretsecretsecret"


def test_without_redis_each_process_still_holds_back_repeats(slack: SlackWebhook) -> None:
    service = AlarmService(slack_webhook_url=slack.url(), key_prefix=unique_prefix())
    dead_broker = "redis://127.0.0.1:1/0"
    ratelimit.redis_client.cache_clear()
    try:
        with environment({"CELERY_BROKER_URL": dead_broker, "REDIS_URL": dead_broker}):
            results = [service.raise_alarm("ERROR", "Redis down", key="redis") for _ in range(3)]
    finally:
        ratelimit.redis_client.cache_clear()
    assert results == [True, False, False]
    assert len(slack.received) == 1

"""`notifier report`: numbers from seeded deliveries and clicks, tenant days and isolation, the
CLI, and the CloudWatch exporter against moto's server."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest

from config.settings import get_settings
from notifier.db import session_scope
from notifier.models import Click, Delivery, Event, Tenant, utcnow
from notifier.report import UnknownTenant, export_all, export_cloudwatch, metric_data, report
from tests.helpers import environment
from tests.peers.moto import MotoPeer, moto_peer  # noqa: F401  (the session's moto server)

BIN = Path(sys.executable).parent
TAIPEI = dt.timezone(dt.timedelta(hours=8))
NOW = dt.datetime(2026, 11, 22, 12, 0, tzinfo=TAIPEI)


def at(day: int, hour: int, minute: int = 0, second: int = 0) -> dt.datetime:
    """A moment of November 2026 in Taipei (the tenants' timezone)."""
    return dt.datetime(2026, 11, day, hour, minute, second, tzinfo=TAIPEI)


class Seed:
    """Rows as the pipeline leaves them: events, deliveries, clicks."""

    def __init__(self) -> None:
        self.events: dict[tuple[str, str], int] = {}

    def tenant(self, tenant_id: str, timezone: str = "Asia/Taipei") -> None:
        with session_scope() as session:
            session.add(Tenant(id=tenant_id, name=tenant_id, timezone=timezone))

    def _event(self, tenant: str, event_type: str) -> int:
        if (tenant, event_type) not in self.events:
            with session_scope() as session:
                row = Event(
                    event_id=uuid.uuid4().hex,
                    tenant_id=tenant,
                    event_type=event_type,
                    status="accepted",
                    payload={},
                )
                session.add(row)
                session.flush()
                self.events[(tenant, event_type)] = row.id
        return self.events[(tenant, event_type)]

    def delivery(
        self,
        tenant: str,
        channel: str,
        event_type: str,
        status: str,
        when: dt.datetime,
    ) -> None:
        with session_scope() as session:
            session.add(
                Delivery(
                    event_pk=self._event(tenant, event_type),
                    tenant_id=tenant,
                    recipient=f"u-{uuid.uuid4().hex[:6]}",
                    channel=channel,
                    status=status,
                    sent_at=when if status == "sent" else None,
                    created_at=when - dt.timedelta(minutes=5),
                    updated_at=when,
                )
            )

    def click(self, tenant: str, channel: str, event_type: str, when: dt.datetime) -> None:
        with session_scope() as session:
            session.add(
                Click(
                    tenant_id=tenant,
                    channel=channel,
                    event_type=event_type,
                    url="https://gym.kyo.app/x",
                    created_at=when,
                )
            )


@pytest.fixture
def seed(db: None) -> Seed:
    data = Seed()
    data.tenant("gym-a")
    data.tenant("gym-b")
    a, b = "gym-a", "gym-b"
    # gym-a, inside the last 3 Taipei days (Nov 20-22, from 2026-11-19T16:00Z)
    data.delivery(a, "line", "member.registered", "sent", at(20, 0))  # the window's first instant
    data.delivery(a, "line", "payment.success", "sent", at(21, 23, 59))
    data.delivery(a, "email", "payment.success", "sent", at(22, 1))  # still Nov 21 in UTC
    data.delivery(a, "email", "payment.success", "failed", at(22, 10))
    data.delivery(a, "email", "payment.success", "queued", at(22, 10))  # not settled: not counted
    data.delivery(a, "sms", "payment.success", "skipped", at(22, 10))  # never tried
    data.click(a, "email", "payment.success", at(22, 9))
    data.click(a, "email", "payment.success", at(22, 11))
    data.click(a, "line", "member.registered", at(21, 8))
    # gym-a, outside: the second before the window, and a click days before
    data.delivery(a, "email", "payment.success", "sent", at(19, 23, 59, 59))
    data.delivery(a, "email", "payment.success", "failed", at(19, 12))
    data.click(a, "email", "payment.success", at(18, 12))
    # gym-b: the same days, never in gym-a's report
    for _ in range(5):
        data.delivery(b, "line", "payment.success", "sent", at(22, 9))
    data.delivery(b, "email", "payment.failed", "failed", at(21, 9))
    data.click(b, "line", "payment.success", at(22, 9))
    return data


EXPECTED_A = {
    "tenantId": "gym-a",
    "timezone": "Asia/Taipei",
    "days": 3,
    "from": "2026-11-20",
    "to": "2026-11-22",
    "totalSent": 3,
    "totalFailed": 1,
    "totalClicked": 3,
    "clickRate": 1.0,
    "failureRate": 0.25,
    "dailyBreakdown": [
        {"date": "2026-11-20", "sent": 1, "clicked": 0},
        {"date": "2026-11-21", "sent": 1, "clicked": 1},
        {"date": "2026-11-22", "sent": 1, "clicked": 2},
    ],
    "byChannel": {
        "email": {"sent": 1, "failed": 1, "failureRate": 0.5, "clicked": 2},
        "line": {"sent": 2, "failed": 0, "failureRate": 0.0, "clicked": 1},
    },
    "byEventType": {
        "member.registered": {"sent": 1, "failed": 0, "failureRate": 0.0, "clicked": 1},
        "payment.success": {"sent": 2, "failed": 1, "failureRate": 0.3333, "clicked": 2},
    },
    "byChannelAndEventType": [
        {
            "channel": "email",
            "eventType": "payment.success",
            "sent": 1,
            "failed": 1,
            "failureRate": 0.5,
            "clicked": 2,
        },
        {
            "channel": "line",
            "eventType": "member.registered",
            "sent": 1,
            "failed": 0,
            "failureRate": 0.0,
            "clicked": 1,
        },
        {
            "channel": "line",
            "eventType": "payment.success",
            "sent": 1,
            "failed": 0,
            "failureRate": 0.0,
            "clicked": 0,
        },
    ],
}


def test_report_counts_the_tenants_own_days(seed: Seed) -> None:
    assert report("gym-a", 3, now=NOW) == EXPECTED_A


def test_report_never_counts_another_tenants_rows(seed: Seed) -> None:
    b = report("gym-b", 3, now=NOW)
    assert (b["totalSent"], b["totalFailed"], b["totalClicked"]) == (5, 1, 1)
    assert set(b["byChannel"]) == {"line", "email"}
    assert set(b["byEventType"]) == {"payment.success", "payment.failed"}
    assert b["clickRate"] == 0.2


def test_report_days_follow_the_tenants_timezone(seed: Seed) -> None:
    with session_scope() as session:
        tenant = session.get(Tenant, "gym-a")
        assert tenant is not None
        tenant.timezone = "UTC"
    doc = report("gym-a", 3, now=NOW)  # NOW is 04:00 UTC on Nov 22
    assert [(d["date"], d["sent"]) for d in doc["dailyBreakdown"]] == [
        ("2026-11-20", 0),
        ("2026-11-21", 2),  # 23:59 Taipei on the 21st and 01:00 Taipei on the 22nd
        ("2026-11-22", 0),
    ]
    assert doc["totalSent"] == 2  # 00:00 Taipei on the 20th is the 19th in UTC: outside


def test_report_of_a_single_day_and_bad_input(seed: Seed) -> None:
    today = report("gym-a", 1, now=NOW)
    assert (today["from"], today["totalSent"], today["totalFailed"]) == ("2026-11-22", 1, 1)
    with pytest.raises(UnknownTenant):
        report("gym-zz", 3, now=NOW)
    with pytest.raises(ValueError, match="days"):
        report("gym-a", 0, now=NOW)


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "notifier"), *args], capture_output=True, text=True, timeout=120
    )


def test_cli_prints_json_and_a_table(seed: Seed) -> None:
    recent = utcnow() - dt.timedelta(minutes=1)
    seed.delivery("gym-a", "web_push", "course.reminder", "sent", recent)
    seed.click("gym-a", "web_push", "course.reminder", recent)

    as_json = cli("report", "--tenant", "gym-a", "--days", "7", "--json")
    assert as_json.returncode == 0, as_json.stderr
    doc = json.loads(as_json.stdout)
    assert doc == report("gym-a", 7)
    assert doc["byChannel"]["web_push"] == {
        "sent": 1,
        "failed": 0,
        "failureRate": 0.0,
        "clicked": 1,
    }
    assert doc["totalSent"] >= 1 and len(doc["dailyBreakdown"]) == 7

    table = cli("report", "--tenant", "gym-a", "--days", "7")
    assert table.returncode == 0, table.stderr
    assert "web_push" in table.stdout and "course.reminder" in table.stdout
    assert "click rate" in table.stdout

    unknown = cli("report", "--tenant", "gym-zz", "--json")
    assert unknown.returncode == 1 and "unknown tenant" in unknown.stderr


# -- CloudWatch -------------------------------------------------------------------------


@pytest.fixture
def cloudwatch(moto_peer: MotoPeer) -> Iterator[Any]:  # noqa: F811
    moto_peer.reset()
    with environment(moto_peer.env()):
        yield boto3.client("cloudwatch", endpoint_url=moto_peer.url, region_name="us-east-1")


def sums(client: Any, namespace: str, name: str, dims: dict[str, str]) -> list[float]:
    points = client.get_metric_statistics(
        Namespace=namespace,
        MetricName=name,
        Dimensions=[{"Name": k, "Value": v} for k, v in dims.items()],
        StartTime=at(1, 0),
        EndTime=at(30, 0),
        Period=86400,
        Statistics=["Sum"],
    )["Datapoints"]
    return sorted(p["Sum"] for p in points)


def test_export_puts_the_seeds_metrics(seed: Seed, cloudwatch: Any) -> None:
    # one closed day: Nov 21 in Taipei (CloudWatch takes data points up to two weeks old)
    doc = report("gym-a", 1, now=at(21, 23, 59, 59))
    data = metric_data(doc)
    day_start = at(21, 0).astimezone(dt.UTC)
    daily = [d for d in data if [x["Name"] for x in d["Dimensions"]] == ["TenantId"]]
    assert [(d["MetricName"], d["Value"], d["Timestamp"]) for d in daily] == [
        ("NotificationSent", 1.0, day_start),
        ("NotificationClicked", 1.0, day_start),
    ]
    assert export_cloudwatch(doc) == len(data)

    namespace = "Kyo/Notifications"
    listed = {
        (m["MetricName"], tuple(sorted((d["Name"], d["Value"]) for d in m["Dimensions"])))
        for m in cloudwatch.list_metrics(Namespace=namespace)["Metrics"]
    }
    line_payments = {"TenantId": "gym-a", "Channel": "line", "EventType": "payment.success"}
    assert listed == {
        ("NotificationSent", (("TenantId", "gym-a"),)),
        ("NotificationClicked", (("TenantId", "gym-a"),)),
        ("NotificationSent", tuple(sorted(line_payments.items()))),
        ("NotificationClicked", (("Channel", "line"), ("TenantId", "gym-a"))),
    }
    # (moto sums every metric whose dimensions include the ones asked for; CloudWatch wants
    # an exact match: the most specific dimensions give the same answer on both)
    assert sums(cloudwatch, namespace, "NotificationSent", line_payments) == [1.0]


def test_export_all_sends_each_closed_day_once(seed: Seed, cloudwatch: Any) -> None:
    from notifier.ratelimit import redis_client

    now = at(23, 12)  # Nov 21 and Nov 22 are the closed days looked at
    namespace = f"Test/{uuid.uuid4().hex[:8]}"
    assert export_all(now) == 0  # NOTIFIER_CLOUDWATCH_ENABLED is off
    assert cloudwatch.list_metrics(Namespace=namespace)["Metrics"] == []
    enabled = {"NOTIFIER_CLOUDWATCH_ENABLED": "1", "NOTIFIER_CLOUDWATCH_NAMESPACE": namespace}
    try:
        with environment(enabled):
            assert export_all(now) == 4  # two tenants x two closed days
            assert export_all(now) == 0  # a rerun (or a second Beat) exports nothing again
        # Nov 21 (line) and Nov 22 (email), each exported once
        for channel in ("line", "email"):
            dims = {"TenantId": "gym-a", "Channel": channel, "EventType": "payment.success"}
            assert sums(cloudwatch, namespace, "NotificationSent", dims) == [1.0]
        failed_b = sums(
            cloudwatch,
            namespace,
            "NotificationFailed",
            {"TenantId": "gym-b", "Channel": "email", "EventType": "payment.failed"},
        )
        assert failed_b == [1.0]
    finally:
        prefix = get_settings().queue_prefix
        for key in redis_client().scan_iter(f"notifier:{prefix}cloudwatch:*"):
            redis_client().delete(key)

"""Real backends through the whole pipeline: a real worker sends to every local peer."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from notifier import notify
from notifier.directory import import_document
from tests.helpers import directory, event, person
from tests.integration.conftest import wait_settled
from tests.peers.every import every_peer, use_real_backends

pytestmark = pytest.mark.usefixtures("db", "celery_worker")
LINE_TOKEN = "tenant-line-token"


@pytest.fixture(scope="module")
def peers() -> Iterator[dict[str, Any]]:
    with every_peer(LINE_TOKEN) as running:
        yield running


@pytest.fixture
def real_backends(peers: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    use_real_backends(peers, monkeypatch, LINE_TOKEN)
    return peers


def test_a_critical_event_reaches_every_peer(real_backends: dict[str, Any]) -> None:
    peers = real_backends
    subscription = peers["push"].subscribe()
    admin = person(
        "admin-1",
        role="admin",
        phone="0912345678",
        lineUserId="U" + "a" * 32,
        webPushSubscriptions=[subscription.info],
    )
    import_document(
        directory(admin, slackWebhookUrl=peers["slack"].url(), lineChannelAccessToken=LINE_TOKEN)
    )
    ev = event(
        "file.virus_detected",
        user=None,
        eventId="virus-1",
        data={"fileName": "invoice.exe", "uploadedBy": "admin-1", "threatName": "EICAR-Test-File"},
    )
    assert notify.delay(ev).get(timeout=30)["status"] == "accepted"
    rows = {r.channel: r for r in wait_settled(expected=6, timeout=60)}
    assert {c: r.status for c, r in rows.items()} == {
        c: "sent" for c in ("line", "sms", "email", "web_push", "slack", "topic")
    }, {c: r.reason for c, r in rows.items()}

    [line_request] = peers["line"].requests
    assert line_request.headers["authorization"] == f"Bearer {LINE_TOKEN}"
    assert line_request.retry_key.replace("-", "") == rows["line"].retry_key
    [mail] = peers["smtp"].messages
    assert "invoice.exe" in str(mail.message)
    assert str(mail.message["List-Unsubscribe"]).strip().startswith("<http://")
    sms = peers["moto"].data()["sns"]["SMS"]
    messages = list(sms.values()) if isinstance(sms, dict) else sms
    assert [m["phone_number"] for m in messages] == ["+886912345678"]  # normalised to E.164
    [pushed] = peers["push"].received
    assert "invoice.exe" in pushed.json["body"] or "invoice.exe" in pushed.json["title"]
    [slack_post] = peers["slack"].received
    assert "invoice.exe" in slack_post.body["text"]


def test_a_broadcast_goes_out_through_line_multicast_in_chunks_of_500(
    real_backends: dict[str, Any],
) -> None:
    peers = real_backends
    members = [
        person(f"m{i:04d}", lineUserId=f"U{i:032d}", preferences={"priority": {"high": ["line"]}})
        for i in range(1200)
    ]
    import_document(directory(*members, lineChannelAccessToken=LINE_TOKEN))
    ev = event(
        "system.maintenance", user=None, eventId="maint-line", metadata={"channels": ["line"]}
    )
    assert notify.delay(ev).get(timeout=30)["status"] == "accepted"
    rows = wait_settled(expected=1200, timeout=120)
    assert {r.status for r in rows} == {"sent"}
    multicasts = [r for r in peers["line"].requests if r.path.endswith("/multicast")]
    assert sorted(len(r.recipients) for r in multicasts) == [200, 500, 500]
    assert len({r.retry_key for r in multicasts}) == 3
    reached = {uid for r in multicasts for uid in r.recipients}
    assert reached == {m["lineUserId"] for m in members}

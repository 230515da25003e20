"""A broadcast to many people on LINE and Web Push, and the accounting that checks it:
what the database says was sent against what the peers received."""

from __future__ import annotations

import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import func, select

from notifier.db import session_scope
from notifier.directory import import_document
from notifier.models import DeadLetter, Delivery, DeliveryStatus
from tests.helpers import TENANT, directory, person
from tests.reliability import logcapture
from tests.reliability.cluster import SEND_CONCURRENCY

BODY_MARKER = "RELIABILITY-BODY-9c41f07b"
"""In every broadcast's message: it reaches the peers and must never reach a log."""
TERMINAL = {
    DeliveryStatus.SENT,
    DeliveryStatus.FAILED,
    DeliveryStatus.SUPPRESSED,
    DeliveryStatus.SKIPPED,
}
logcapture.secret(BODY_MARKER)


def people(count: int, push_service: Any) -> list[dict[str, Any]]:
    """Members reachable on LINE and on Web Push (a subscription at `push_service`)."""
    members = [
        person(
            f"p{i:05d}",
            lineUserId=f"U{i:032x}",
            phone=f"+8869{i:08d}",
            email=f"member{i}@example.com",
            preferences={"priority": {"high": ["line", "web_push"]}},
            webPushSubscriptions=[push_service.subscribe().info],
        )
        for i in range(count)
    ]
    logcapture.secret(*(m["phone"] for m in members[:50]), *(m["email"] for m in members[:50]))
    return members


def import_people(members: list[dict[str, Any]]) -> None:
    import_document(directory(*members))


def broadcast(channels: list[str]) -> dict[str, Any]:
    """A tenant-wide maintenance notice (high priority: every active member)."""
    return {
        "eventId": f"maint-{uuid.uuid4().hex[:10]}",
        "eventType": "system.maintenance",
        "tenantId": TENANT,
        "timestamp": "2026-11-22T09:00:00+08:00",
        "source": "kyo.reliability",
        "data": {
            "startsAt": "2026-11-29T18:00:00+00:00",
            "endsAt": "2026-11-29T22:00:00+00:00",
            "message": f"Database upgrade {BODY_MARKER}",
        },
        "metadata": {"channels": channels},
    }


def status_counts() -> Counter[str]:
    """How many deliveries are in each status."""
    with session_scope() as session:
        query = select(Delivery.status, func.count()).group_by(Delivery.status)
        return Counter({str(s): int(n) for s, n in session.execute(query).tuples()})


def rows(channel: str | None = None) -> list[Delivery]:
    with session_scope() as session:
        query = select(Delivery).order_by(Delivery.id)
        if channel is not None:
            query = query.where(Delivery.channel == channel)
        return list(session.scalars(query))


def dead_letter_ids() -> set[int]:
    """Delivery ids that have a dead letter."""
    with session_scope() as session:
        return {
            int(delivery_id)
            for delivery_id in session.scalars(select(DeadLetter.delivery_id))
            if delivery_id is not None
        }


def wait_all_terminal(expected: int, timeout: float) -> Counter[str]:
    """Wait until `expected` deliveries exist and every one is terminal (Beat's
    requeue_stalled, in the cluster, recovers what was lost meanwhile)."""
    deadline = time.monotonic() + timeout
    while True:
        counts = status_counts()
        if sum(counts.values()) >= expected and all(s in TERMINAL for s in counts):
            return counts
        if time.monotonic() > deadline:
            raise AssertionError(f"not settled in {timeout}s: {dict(counts)} of {expected}")
        time.sleep(0.25)


@dataclass
class PeerTally:
    """What one peer received, per recipient id: gaps and duplicates."""

    received: Counter[str] = field(default_factory=Counter)
    replays: int = 0
    """Repeated requests the provider recognised by their idempotency key (not delivered)."""

    @property
    def duplicates(self) -> int:
        return sum(n - 1 for n in self.received.values() if n > 1)

    def missing(self, expected: set[str]) -> set[str]:
        return expected - set(self.received)


def line_tally(peer: Any) -> PeerTally:
    """LINE user ids the peer accepted (2xx); a 409 is a replay LINE did not deliver."""
    tally = PeerTally()
    for request in list(peer.requests):
        if 200 <= request.status < 300:
            tally.received.update(request.recipients)
        elif request.status == 409:
            tally.replays += 1
    return tally


def push_tally(service: Any) -> PeerTally:
    """Delivery ids of the Web Push notifications the service accepted and decrypted."""
    tally = PeerTally()
    for request in list(service.received):
        if request.status == 201 and request.payload:
            tally.received[str(request.json["data"]["deliveryId"])] += 1
    return tally


def sent_rows(channel: str) -> list[Delivery]:
    return [r for r in rows(channel) if r.status == DeliveryStatus.SENT]


def verify_broadcast(
    members: list[dict[str, Any]],
    line_peer: Any,
    push_service: Any,
    *,
    processes_lost: int,
    other_sent: int = 0,
) -> tuple[PeerTally, PeerTally]:
    """Every member's LINE and Web Push delivery is `sent` (plus `other_sent` more rows),
    each peer received exactly the sent ones, LINE nobody twice, and Web Push (no
    idempotency key) at most the requests in flight in the `processes_lost` pool processes
    (killed or cut off) again. Returns (LINE, Web Push)."""
    assert status_counts() == {"sent": 2 * len(members) + other_sent}

    line = line_tally(line_peer)
    line_ids = {m["lineUserId"] for m in members}
    assert line.missing(line_ids) == set()
    assert line.duplicates == 0, [
        (r.path, r.status, len(r.recipients), r.retry_key) for r in line_peer.requests
    ]
    assert set(line.received) == line_ids
    assert {r.recipient for r in sent_rows("line")} == {m["id"] for m in members}

    push = push_tally(push_service)
    sent_push = {str(r.id) for r in sent_rows("web_push")}
    assert push.missing(sent_push) == set()
    assert set(push.received) == sent_push  # nothing reached anyone whose row is not sent
    assert push.duplicates <= processes_lost * SEND_CONCURRENCY, push.received.most_common(3)
    return line, push


def wait_until(probe: Any, timeout: float, interval: float = 0.01) -> None:
    deadline = time.monotonic() + timeout
    while not probe():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        time.sleep(interval)

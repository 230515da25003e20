"""Issue 7.4: a provider that fails in the four usual ways.

One broadcast goes to people whose Web Push endpoints answer 500 for a while, 429 with a
Retry-After, hang past the client timeout, or close the connection unanswered (see
faultpeer.py). Every delivery must end `sent`, or `failed` with the reason and a dead
letter, within the retry budget: no more than NOTIFIER_SEND_MAX_RETRIES + 1 requests per
delivery (counted at the peer), so a failing provider never meets a retry storm. A
Retry-After is honoured, even one longer than the stalled-work sweep's patience.

The 500 window is 30 s under `make reliability` (longer than the whole retry budget: the
deliveries run out of retries and fail) and 10 s in CI (about as long as the retries take:
most get through on a late attempt). Either ending is checked the same way.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from notifier.models import DeliveryStatus
from tests.helpers import person
from tests.reliability.cluster import STALE_CLAIM_SECONDS, Cluster
from tests.reliability.conftest import FULL, finding, web_push_env
from tests.reliability.faultpeer import MODES, FaultPeer
from tests.reliability.scenario import (
    broadcast,
    dead_letter_ids,
    import_people,
    rows,
    wait_all_terminal,
)

pytestmark = pytest.mark.usefixtures("db", "postgres")
PER_MODE = 100 if FULL else 20
WINDOW = 30.0 if FULL else 10.0
MAX_RETRIES = 5
BACKOFF_MAX = 4
RETRY_AFTER = 15
"""Longer than BACKOFF_MAX + STALE_CLAIM_SECONDS: requeue_stalled must not jump the gun."""
assert RETRY_AFTER > BACKOFF_MAX + STALE_CLAIM_SECONDS
CLIENT_TIMEOUT = 1.0
HANG = 3.0


def test_every_delivery_ends_within_the_retry_budget(tmp_path: Path) -> None:
    peer = FaultPeer(window=WINDOW, retry_after=RETRY_AFTER, hang=HANG).start()
    try:
        members = [
            person(
                f"{mode}-{i:03d}",
                webPushSubscriptions=[peer.subscription(mode, f"{mode}-{i:03d}")],
                preferences={"priority": {"high": ["web_push"]}},
            )
            for mode in MODES
            for i in range(PER_MODE)
        ]
        import_people(members)
        env = {
            **web_push_env(),
            "NOTIFIER_SEND_MAX_RETRIES": str(MAX_RETRIES),
            "NOTIFIER_SEND_BACKOFF_MAX": str(BACKOFF_MAX),
            "NOTIFIER_WEB_PUSH_TIMEOUT": str(CLIENT_TIMEOUT),
            # Small chunks and four processes: the hanging endpoints (a second each) do not
            # hold up the retries of the others, which then meet the 500s while they last.
            "NOTIFIER_SEND_CHUNK_SIZE": "5",
        }
        with Cluster(tmp_path, env=env) as cluster:
            cluster.start_worker(concurrency=4)
            cluster.start_beat()
            cluster.send("notifier.notify", broadcast(["web_push"]))
            wait_all_terminal(len(members), timeout=300 if FULL else 150)
    finally:
        peer.stop()

    deliveries = {row.recipient: row for row in rows("web_push")}
    dead = dead_letter_ids()
    budget = MAX_RETRIES + 1
    outcomes: dict[str, Counter[str]] = {}
    requests: dict[str, int] = {}
    for mode in MODES:
        hits = peer.hits_for(mode)
        outcome: Counter[str] = Counter()
        for i in range(PER_MODE):
            uid = f"{mode}-{i:03d}"
            row, mine = deliveries[uid], hits.get(f"{mode}/{uid}", [])
            assert 1 <= len(mine) <= budget, (uid, [h.answer for h in mine])
            assert row.attempts == len(mine), (uid, row.attempts, len(mine))
            if row.status == DeliveryStatus.SENT:
                assert mine[-1].answer == "201" and all(h.answer != "201" for h in mine[:-1])
            else:
                assert row.status == DeliveryStatus.FAILED, (uid, row.status)
                assert row.reason and row.reason.startswith("retries exhausted"), row.reason
                assert row.id in dead
                assert len(mine) == budget and all(h.answer != "201" for h in mine)
            outcome[str(row.status)] += 1
        outcomes[mode] = outcome
        requests[mode] = sum(len(h) for h in hits.values())

    # The one-off faults are retried once and then go through.
    for mode in ("retry_after", "hang", "close"):
        assert outcomes[mode] == {"sent": PER_MODE}, (mode, outcomes[mode])
        assert requests[mode] == 2 * PER_MODE, (mode, requests[mode])
    gaps = [h[1].at - h[0].at for h in peer.hits_for("retry_after").values()]
    assert min(gaps) >= RETRY_AFTER - 0.5, sorted(gaps)[:5]  # Retry-After honoured

    assert sum(requests.values()) <= len(members) * budget
    finding(
        f"provider faults, {PER_MODE} people each, budget {budget} requests per delivery: "
        f"500 for {WINDOW:.0f}s -> {dict(outcomes['error500'])} in {requests['error500']} "
        f"requests; 429 Retry-After {RETRY_AFTER}s -> all sent, 2 requests each, next try "
        f"after {min(gaps):.1f}s at the earliest; hang past the {CLIENT_TIMEOUT:.0f}s "
        f"timeout -> all sent in {requests['hang']} requests; connection closed -> all "
        f"sent in {requests['close']} requests"
    )

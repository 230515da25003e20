"""Issue 7.1: workers SIGKILLed mid-send lose nothing and send each message once.

A tenant-wide broadcast goes to every member on LINE (multicast, with an idempotency key)
and Web Push (one request per person, no idempotency key). Mid-send a pool process is
SIGKILLed (the master forks a new one), or the whole worker (a new one is started). The
redelivered task finds its deliveries claimed; Beat's requeue_stalled re-sends the claims
older than the stale timeout. Then every delivery is `sent`, none is left `sending`, the
peers received every person, LINE nobody twice (its retry key makes the replay a 409), and
Web Push at most the one request that was in flight in the killed process.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from tests.reliability.cluster import Cluster
from tests.reliability.conftest import BROADCAST_SIZE, finding, line_env, web_push_env
from tests.reliability.scenario import (
    PeerTally,
    broadcast,
    import_people,
    people,
    status_counts,
    verify_broadcast,
    wait_all_terminal,
    wait_until,
)

pytestmark = pytest.mark.usefixtures("db", "postgres")
SETTLE_TIMEOUT = 600.0 if BROADCAST_SIZE > 1000 else 180.0
LINE_DELAY = 3.0
"""The first LINE multicast is answered this late: the kill lands while it is in flight."""
PUSH_DELAY = 0.05
"""Each first Web Push is answered this late: with several in flight per process the
broadcast would otherwise be over before a pool process is seen talking to the service."""


def _port(url: str) -> int:
    port = urlsplit(url).port
    assert port is not None
    return port


def _start(tmp_path: Path, line_peer: Any, push_service: Any) -> tuple[Cluster, list[Any]]:
    members = people(BROADCAST_SIZE, push_service)
    import_people(members)
    line_peer.script(200, delay=LINE_DELAY)
    for subscription_id in list(push_service.subscriptions):
        push_service.script(subscription_id, 201, delay=PUSH_DELAY)
    cluster = Cluster(tmp_path, env={**line_env(line_peer), **web_push_env()})
    return cluster, members


def _report(what: str, line: PeerTally, push: PeerTally) -> None:
    finding(
        f"{what}: {BROADCAST_SIZE} people x LINE + Web Push all sent; LINE duplicates "
        f"{line.duplicates} ({line.replays} replay(s) answered 409 by retry key); Web Push "
        f"duplicates {push.duplicates} (no idempotency key)"
    )


def test_a_pool_process_killed_mid_send(tmp_path: Path, line_peer: Any, push_service: Any) -> None:
    cluster, members = _start(tmp_path, line_peer, push_service)
    with cluster:
        worker = cluster.start_worker(concurrency=2)
        cluster.start_beat()
        cluster.send("notifier.notify", broadcast(["line", "web_push"]))

        wait_until(lambda: len(line_peer.requests) >= 1, timeout=60)
        line_killed = worker.kill_child_connected_to(_port(line_peer.url))
        wait_until(lambda: len(push_service.received) >= BROADCAST_SIZE // 3, timeout=120)
        push_killed = worker.kill_child_connected_to(_port(push_service.origin))
        assert line_killed != push_killed

        wait_all_terminal(2 * BROADCAST_SIZE, SETTLE_TIMEOUT)
        assert "WorkerLostError" in worker.log_text()  # the kills did happen mid-task
    # Requests may have been in flight in the pool process killed during Web Push.
    line, push = verify_broadcast(members, line_peer, push_service, processes_lost=1)
    _report("pool process SIGKILLed (twice)", line, push)


def test_the_whole_worker_killed_mid_send(
    tmp_path: Path, line_peer: Any, push_service: Any
) -> None:
    cluster, members = _start(tmp_path, line_peer, push_service)
    with cluster:
        worker = cluster.start_worker(concurrency=2)
        cluster.start_beat()
        cluster.send("notifier.notify", broadcast(["line", "web_push"]))

        wait_until(lambda: len(line_peer.requests) >= 1, timeout=60)
        wait_until(lambda: len(push_service.received) >= BROADCAST_SIZE // 10, timeout=120)
        worker.kill()
        stuck = status_counts()
        assert stuck["sending"] > 0, stuck  # the kill left claims behind

        cluster.start_worker(concurrency=2)
        wait_all_terminal(2 * BROADCAST_SIZE, SETTLE_TIMEOUT)
    # Requests may have been in flight in each of the two pool processes.
    line, push = verify_broadcast(members, line_peer, push_service, processes_lost=2)
    _report("whole worker SIGKILLed", line, push)

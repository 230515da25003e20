"""Issue 7.3: the database is unreachable for 10 s while a broadcast is being sent.

The workers reach PostgreSQL through a TCP proxy; mid-send the proxy resets every open
connection and refuses new ones for OUTAGE seconds. Send tasks meet OperationalError and
retry with backoff; a message sent just before its outcome could be written stays claimed
and is re-sent once the claim is stale. Afterwards every delivery is `sent`, each peer
received exactly the people whose rows say `sent` (no row claims a send that did not
happen, no send is missing its row), LINE nobody twice.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.engine import make_url

from tests.reliability.cluster import SEND_CONCURRENCY, Cluster
from tests.reliability.conftest import OUTAGE_SIZE, finding, line_env, web_push_env
from tests.reliability.faultproxy import FaultProxy
from tests.reliability.scenario import (
    broadcast,
    import_people,
    people,
    verify_broadcast,
    wait_all_terminal,
    wait_until,
)

pytestmark = pytest.mark.usefixtures("db")
OUTAGE = 10.0
SIZE = OUTAGE_SIZE
SETTLE_TIMEOUT = 600.0 if SIZE > 1000 else 180.0


def test_the_database_unreachable_for_10_seconds_mid_send(
    tmp_path: Path, postgres: str, line_peer: Any, push_service: Any
) -> None:
    members = people(SIZE, push_service)
    import_people(members)
    url = make_url(postgres)
    with FaultProxy(url.host or "127.0.0.1", url.port or 5432) as proxy:
        proxied = url.set(host="127.0.0.1", port=proxy.port)
        env = {**line_env(line_peer), **web_push_env()}
        with Cluster(
            tmp_path, env=env, database_url=proxied.render_as_string(hide_password=False)
        ) as cluster:
            worker = cluster.start_worker(concurrency=2)
            cluster.start_beat()
            cluster.send("notifier.notify", broadcast(["line", "web_push"]))
            wait_until(lambda: len(push_service.received) >= SIZE // 3, timeout=120)

            proxy.cut()
            received_at_cut = len(push_service.received)
            time.sleep(OUTAGE)
            received_during = len(push_service.received) - received_at_cut
            proxy.restore()
            # Outcomes are written as calls return and at most NOTIFIER_SEND_CONCURRENCY calls
            # are in flight per process: no more than that goes out while nothing is written.
            assert received_during <= 2 * SEND_CONCURRENCY, received_during

            wait_all_terminal(2 * SIZE, SETTLE_TIMEOUT)
            assert proxy.refused > 0  # the workers did try, and were turned away
            assert "OperationalError" in worker.log_text()
    # Sends can only be in flight in the two pool processes when the cut comes.
    line, push = verify_broadcast(members, line_peer, push_service, processes_lost=2)
    finding(
        f"database cut for {OUTAGE:.0f}s: {SIZE} people x LINE + Web Push all sent; "
        f"{proxy.dropped} connections reset, {proxy.refused} refused; {received_during} "
        f"push(es) went out during the outage (in flight at the cut); LINE duplicates "
        f"{line.duplicates}, Web Push duplicates {push.duplicates}"
    )

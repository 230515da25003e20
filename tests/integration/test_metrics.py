"""GET /metrics against the real worker, database and Redis: counters counted where outcomes
are recorded, shared by processes, never lowered by deleting rows; a scrape runs one indexed
count and no table scan."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import delete, event, text

from notifier import publish
from notifier.db import get_engine, session_scope
from notifier.directory import import_document
from notifier.models import Delivery, Event
from notifier.web.app import create_app
from tests.helpers import directory, person, wait_for
from tests.helpers import event as make_event
from tests.integration.conftest import deliveries, wait_settled

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


@pytest.fixture
def client(db: None) -> Iterator[TestClient]:
    import_document(directory(person("u1"), person("u2")))
    with TestClient(create_app()) as test_client:
        yield test_client


def scrape(client: TestClient) -> Samples:
    response = client.get("/metrics")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(response.text)
        for s in family.samples
    }


def grew(before: Samples, after: Samples) -> Samples:
    """How much each sample went up between two scrapes (only the ones that did)."""
    return {
        k: v - before.get(k, 0.0)
        for k, v in after.items()
        if v != before.get(k, 0.0)
        and not k[0].startswith(("notifier_queue", "notifier_deliveries_waiting"))
    }


@pytest.mark.usefixtures("celery_worker")
def test_counters_follow_outcomes_and_never_go_down(client: TestClient) -> None:
    before = scrape(client)
    publish(make_event("payment.success", eventId="m-1"))  # LINE + email + topic
    publish(make_event("payment.success", eventId="m-1"))  # a duplicate
    publish(make_event("member.registered", user="u2", eventId="m-2"))
    wait_settled(expected=5)
    with session_scope() as session:
        sent = [(d.channel, d.status) for d in session.query(Delivery).all()]
    after = scrape(client)
    change = grew(before, after)
    assert change[("notifier_events_total", (("status", "accepted"),))] == 2
    assert change[("notifier_events_total", (("status", "duplicate"),))] == 1
    for channel in {c for c, status in sent if status == "sent"}:
        expected = sum(1 for c, s in sent if c == channel and s == "sent")
        labels = (("channel", channel), ("status", "sent"))
        assert change[("notifier_deliveries_total", labels)] == expected
        count = ("notifier_accept_to_sent_seconds_count", (("channel", channel),))
        assert change[count] == expected
        inf = ("notifier_accept_to_sent_seconds_bucket", (("channel", channel), ("le", "+Inf")))
        assert change[inf] == expected
        # Sent within seconds of the accept: every observation is in the 60 s bucket.
        minute = ("notifier_accept_to_sent_seconds_bucket", (("channel", channel), ("le", "60.0")))
        assert change[minute] == expected
    # Retention deletes the rows: the counters stay where they were.
    with session_scope() as session:
        session.execute(delete(Delivery))
        session.execute(delete(Event))
    assert grew(after, scrape(client)) == {}


def test_processes_add_to_the_same_counters(client: TestClient) -> None:
    before = scrape(client)
    script = (
        "from notifier import metrics\n"
        "metrics.count_deliveries('sms', 'failed', 2)\n"
        "metrics.count_deliveries('sms', metrics.RETRY)\n"
    )
    for _ in range(2):  # two other processes, as two workers would
        subprocess.run(
            [sys.executable, "-c", script], check=True, env=os.environ.copy(), timeout=60
        )
    change = grew(before, scrape(client))
    assert change == {
        ("notifier_deliveries_total", (("channel", "sms"), ("status", "failed"))): 4,
        ("notifier_delivery_retries_total", (("channel", "sms"),)): 2,
    }


def test_a_scrape_runs_one_indexed_count_and_no_table_scan(client: TestClient) -> None:
    engine = get_engine()
    statements: list[str] = []

    def seen(conn, cursor, statement, parameters, context, executemany):  # type: ignore[no-untyped-def]
        statements.append(statement)

    event.listen(engine, "before_cursor_execute", seen)
    try:
        samples = scrape(client)
    finally:
        event.remove(engine, "before_cursor_execute", seen)
    queries = [s for s in statements if s.lstrip().upper().startswith("SELECT")]
    assert len(queries) == 1 and "FROM deliveries" in queries[0], statements
    assert samples[("notifier_deliveries_waiting", (("status", "deferred"),))] == 0
    if engine.dialect.name == "postgresql":
        with engine.connect() as conn:
            conn.execute(text("SET enable_seqscan = off"))  # as on a big table
            plan = "\n".join(
                row[0]
                for row in conn.execute(
                    text(
                        "EXPLAIN SELECT status, count(*) FROM deliveries "
                        "WHERE status IN ('deferred', 'batched') GROUP BY status"
                    )
                )
            )
        assert "ix_deliveries_release" in plan and "Seq Scan" not in plan, plan


def test_queue_depth_is_a_gauge_per_queue(client: TestClient) -> None:
    import worker

    samples = scrape(client)
    depth = {dict(k[1])["queue"] for k in samples if k[0] == "notifier_queue_depth"}
    if worker.app.conf.broker_url.startswith("redis"):
        assert depth == {q.name for q in worker.app.conf.task_queues}
        assert all(name.startswith(os.environ["NOTIFIER_QUEUE_PREFIX"]) for name in depth)
    else:  # a queue is a Redis list; other brokers have no cheap depth
        assert depth == set()


@pytest.mark.usefixtures("celery_worker")
def test_a_retry_and_a_failure_are_counted_once_each(client: TestClient, scripted: Any) -> None:
    scripted.use("email")
    scripted.channel.reset("transient", "permanent")
    before = scrape(client)
    only_email = {"userId": "u1", "channels": ["email"]}
    publish(make_event("payment.success", eventId="m-fail", metadata=only_email))
    wait_for(lambda: [d.status for d in deliveries(channel="email")] == ["failed"])
    change = grew(before, wait_for(lambda: _counted_failure(client, before)))
    assert change == {
        ("notifier_events_total", (("status", "accepted"),)): 1,
        ("notifier_delivery_retries_total", (("channel", "email"),)): 1,
        ("notifier_deliveries_total", (("channel", "email"), ("status", "failed"))): 1,
    }


def _counted_failure(client: TestClient, before: Samples) -> Samples | None:
    """The scrape once the failure is counted (the hook runs just after the commit)."""
    after = scrape(client)
    key = ("notifier_deliveries_total", (("channel", "email"), ("status", "failed")))
    return after if after.get(key, 0) > before.get(key, 0) else None

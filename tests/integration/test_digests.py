"""Digests: batched deliveries become one message per person and channel, exactly once."""

from __future__ import annotations

import datetime as dt
import threading
from typing import Any

import pytest
from sqlalchemy import select, update

from notifier import notify
from notifier.db import session_scope
from notifier.digests import flush, send_digest
from notifier.directory import import_document
from notifier.models import Delivery, Digest, OutboxMessage
from notifier.pipeline import accept, plan
from tests.helpers import directory, event, person, wait_for
from tests.integration.conftest import count, deliveries, wait_settled

PREFS = {"priority": {"high": ["email"], "medium": ["email"], "low": ["email"]}}


def checked_in(i: int) -> dict[str, Any]:
    return event(
        "member.checked_in",
        eventId=f"ci-{i}",
        data={"memberName": "Amy", "checkedInAt": f"2026-11-22T09:{i % 60:02d}:00+08:00"},
        metadata={"userId": "u1", "channels": ["email"]},
    )


def buffer(n: int, now: dt.datetime) -> None:
    for i in range(n):
        accepted = accept(checked_in(i))
        assert accepted.event_pk is not None
        assert plan(accepted.event_pk, now=now).chunks == []  # nothing sent yet


def digests() -> list[Digest]:
    with session_scope() as session:
        return list(session.scalars(select(Digest).order_by(Digest.id)))


@pytest.fixture
def amy(db: None) -> None:
    import_document(directory(person("u1", preferences=PREFS)))


def test_250_items_become_3_messages_after_the_window(amy: None) -> None:
    now = dt.datetime.now(dt.UTC)
    buffer(250, now)
    assert {d.status for d in deliveries()} == {"batched"}
    # inside the window only full digests go: two of 100
    early = flush(now=now + dt.timedelta(seconds=5))
    assert [d.item_count for d in digests()] == [100, 100]
    later = flush(now=now + dt.timedelta(seconds=31))
    assert [d.item_count for d in digests()] == [100, 100, 50]
    assert len(later) == 1  # the first two are not handed out again while their tasks wait
    for digest_id in [*early, *later]:
        assert send_digest(digest_id).status == "sent"
    rows = deliveries()
    assert len(rows) == 250 and {r.status for r in rows} == {"sent"}
    with session_scope() as session:
        mails = list(session.scalars(select(OutboxMessage)))
    assert len(mails) == 3
    assert sorted(m.subject for m in mails) == sorted(
        [f"{n} updates from Kyo Gym A" for n in (100, 100, 50)]
    )
    assert "Check-in" in (mails[0].body_text or "") or "check" in (mails[0].body_text or "").lower()


def test_a_flush_that_runs_twice_sends_once(amy: None) -> None:
    now = dt.datetime.now(dt.UTC)
    buffer(3, now)
    later = now + dt.timedelta(seconds=40)
    [digest_id] = flush(now=later)
    assert send_digest(digest_id, now=later).status == "sent"
    assert send_digest(digest_id, now=later).status == "skipped"
    assert flush(now=later) == []
    assert count(OutboxMessage) == 1


def test_a_lost_or_killed_flush_resumes_without_loss_or_duplicate(amy: None) -> None:
    now = dt.datetime.now(dt.UTC)
    buffer(5, now)
    later = now + dt.timedelta(seconds=40)
    [digest_id] = flush(now=later)
    # its send task may just be waiting in the queue: not handed out again yet
    assert flush(now=later + dt.timedelta(seconds=5)) == []
    # the send task was lost: once the stale timeout has passed the flush hands it out again
    assert flush(now=later + dt.timedelta(seconds=400)) == [digest_id]
    # a worker claimed it and was killed mid-send: it stays claimed until the claim is stale
    with session_scope() as session:
        session.execute(update(Digest).values(status="sending", claimed_at=later))
    assert flush(now=later + dt.timedelta(seconds=10)) == []
    assert send_digest(digest_id, now=later + dt.timedelta(seconds=10)).status == "skipped"
    stale = later + dt.timedelta(hours=1)
    assert flush(now=stale) == [digest_id]
    assert send_digest(digest_id, now=stale).status == "sent"
    assert send_digest(digest_id, now=stale).status == "skipped"
    assert count(OutboxMessage) == 1
    assert {d.status for d in deliveries()} == {"sent"}


def test_concurrent_flushes_put_each_item_in_one_digest(amy: None) -> None:
    now = dt.datetime.now(dt.UTC)
    buffer(230, now)
    later = now + dt.timedelta(seconds=40)
    results: list[list[int]] = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(2)

    def run() -> None:
        try:
            barrier.wait()
            results.append(flush(now=later))
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    made = digests()
    assert sum(d.item_count for d in made) == 230
    with session_scope() as session:
        assigned = session.scalars(select(Delivery.digest_id)).all()
    assert None not in assigned and len(assigned) == 230
    for digest_id in {d for ids in results for d in ids}:
        send_digest(digest_id, now=later)
    assert count(OutboxMessage) == len(made) == 3


@pytest.mark.usefixtures("celery_worker")
def test_an_urgent_event_sends_the_waiting_digest_first(amy: None) -> None:
    for i in range(3):
        assert notify.delay(checked_in(i)).get(timeout=30)["status"] == "accepted"
    wait_for(lambda: len(deliveries()) == 3)
    assert {d.status for d in deliveries()} == {"batched"}
    failed = event("payment.failed", metadata={"userId": "u1", "channels": ["email"]})
    assert notify.delay(failed).get(timeout=30)["status"] == "accepted"

    # The digest and the urgent message are sent by two tasks at once: "batched" counts as
    # settled, so wait for the digest's items to be sent too.
    def all_out() -> list[Delivery] | None:
        rows = wait_settled(expected=4)
        return None if any(r.status == "batched" for r in rows) else rows

    rows = wait_for(all_out)
    assert {r.status for r in rows} == {"sent"}
    [digest] = digests()
    assert digest.item_count == 3 and digest.status == "sent"
    with session_scope() as session:
        subjects = [
            m.subject for m in session.scalars(select(OutboxMessage).order_by(OutboxMessage.id))
        ]
    assert "3 updates from Kyo Gym A" in subjects and len(subjects) == 2


@pytest.mark.usefixtures("celery_worker")
def test_beat_flush_task_sends_due_digests(amy: None) -> None:
    from tasks.digests import flush_digests

    for i in range(2):
        notify.delay(checked_in(i)).get(timeout=30)
    wait_for(lambda: len(deliveries()) == 2)
    with session_scope() as session:  # they have waited past the window
        session.execute(
            update(Delivery).values(created_at=dt.datetime.now(dt.UTC) - dt.timedelta(minutes=1))
        )
    flush_digests.delay()
    wait_for(lambda: {r.status for r in deliveries()} == {"sent"})
    assert count(OutboxMessage) == 1

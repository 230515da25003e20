"""send_chunk without a worker: calls in flight at once, claim renewal, the statements an
event costs, and pooled connections that died while idle."""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import create_engine, text, update
from sqlalchemy import event as sa_event
from sqlalchemy.pool import NullPool

from config import settings as settings_module
from notifier import db as db_module
from notifier.db import get_engine, session_scope
from notifier.directory import import_document
from notifier.models import Delivery, DeliveryStatus, utcnow
from notifier.pipeline import accept, plan, plan_page, resolve
from notifier.sending import send_chunk
from tests.helpers import directory, event, person
from tests.integration.conftest import deliveries

pytestmark = pytest.mark.usefixtures("db")


@pytest.fixture
def tuned(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """Override settings for one test: tuned(send_concurrency=3)."""
    original = settings_module.get_settings()

    def apply(**changes: Any) -> None:
        replaced = dataclasses.replace(original, **changes)
        monkeypatch.setattr(settings_module, "get_settings", lambda: replaced)
        for module in ("notifier.sending", "notifier.pipeline"):
            monkeypatch.setattr(f"{module}.get_settings", lambda: replaced)

    yield apply


def _broadcast_ids(people: int) -> list[int]:
    """A maintenance notice by email to `people` members, planned: its delivery ids."""
    prefs = {"priority": {"high": ["email"]}}
    users = [person(f"u{i:02d}", preferences=prefs) for i in range(people)]
    import_document(directory(*users))
    accepted = accept(event("system.maintenance", metadata={"channels": ["email"]}))
    assert accepted.event_pk is not None
    [(channel, ids)] = plan(accepted.event_pk).chunks
    assert channel == "email" and len(ids) == people
    return ids


class Gate:
    """Counts the scripted provider's calls in flight and holds each one until `width`
    of them are in flight together (or `hold` seconds: then the count shows the shortfall)."""

    def __init__(self, width: int, hold: float) -> None:
        self.width = width
        self.hold = hold
        self.lock = threading.Lock()
        self.in_flight = 0
        self.most = 0
        self.full = threading.Event()

    def __call__(self, original: Any) -> Any:
        def post(channel: Any, message: Any, payload: Any) -> Any:
            with self.lock:
                self.in_flight += 1
                self.most = max(self.most, self.in_flight)
                if self.in_flight >= self.width:
                    self.full.set()
            self.full.wait(timeout=self.hold)
            try:
                return original(channel, message, payload)
            finally:
                with self.lock:
                    self.in_flight -= 1
                    if self.in_flight == 0:
                        self.full.clear()

        return post


def _gated(
    scripted: Any, tuned: Any, monkeypatch: pytest.MonkeyPatch, concurrency: int, people: int
) -> tuple[list[int], Gate]:
    """An email broadcast to `people`, planned, its sends going through a Gate that holds
    each call until `concurrency` calls are in flight (two when it is 1: never reached)."""
    scripted.use("email")
    tuned(send_concurrency=concurrency)
    ids = _broadcast_ids(people)
    gate = Gate(width=concurrency if concurrency > 1 else 2, hold=2.0 if concurrency > 1 else 0.3)
    monkeypatch.setattr(scripted.channel, "post", gate(scripted.channel.post))
    return ids, gate


def test_per_message_sends_go_several_at_a_time_and_all_are_recorded(
    scripted: Any, tuned: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    ids, gate = _gated(scripted, tuned, monkeypatch, concurrency=3, people=12)
    scripted.channel.reset("ok", "transient", "ok", "permanent")

    outcome = send_chunk("email", ids)

    assert gate.most == 3  # never more than NOTIFIER_SEND_CONCURRENCY, and that many
    assert len(scripted.channel.calls) == 12
    assert (outcome.sent, outcome.failed, len(outcome.retry_ids)) == (10, 1, 1)
    statuses = sorted(str(row.status) for row in deliveries())
    assert statuses == ["failed"] + ["queued"] + ["sent"] * 10
    assert all(row.provider_message_id for row in deliveries(status=DeliveryStatus.SENT))


def test_one_message_at_a_time_when_concurrency_is_1(
    scripted: Any, tuned: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    ids, gate = _gated(scripted, tuned, monkeypatch, concurrency=1, people=4)

    assert send_chunk("email", ids).sent == 4
    assert gate.most == 1


def test_an_old_claim_is_renewed_and_rows_taken_over_meanwhile_are_skipped(
    scripted: Any, tuned: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    scripted.use("email")
    tuned(send_concurrency=1, stale_claim_seconds=60)
    first, second, third = _broadcast_ids(3)
    original = scripted.channel.post
    claimed = utcnow() - dt.timedelta(seconds=40)
    waiting_renewed: list[bool] = []

    def post(channel: Any, message: Any, payload: Any) -> Any:
        if message.delivery_id == first:
            with session_scope() as session:
                # The rows still waiting their turn were renewed with the first call's...
                waiting = session.get(Delivery, third)
                assert waiting is not None and waiting.claimed_at is not None
                waiting_renewed.append(waiting.claimed_at > claimed)
                # ...and another run takes the second one over (its claim lapsed: below).
                session.execute(
                    update(Delivery).where(Delivery.id == second).values(claimed_at=utcnow())
                )
            monkeypatch.setattr("notifier.sending.claim_may_lapse", lambda _at: True)
        return original(channel, message, payload)

    monkeypatch.setattr(scripted.channel, "post", post)
    # A claim 40 s old: past half of the 60 s timeout, so the first call renews it first.
    outcome = send_chunk("email", [first, second, third], now=claimed)

    assert waiting_renewed == [True]
    assert [m.delivery_id for m in scripted.channel.calls] == [first, third]
    assert outcome.sent == 2
    rows = {row.id: row for row in deliveries()}
    assert rows[second].status == DeliveryStatus.SENDING  # left to the run that holds it
    renewed = rows[first].claimed_at
    assert renewed is not None and renewed.replace(tzinfo=None) > claimed.replace(tzinfo=None)


def _count_statements() -> tuple[list[str], Any]:
    statements: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        statements.append(statement.split(None, 1)[0])

    sa_event.listen(get_engine(), "before_cursor_execute", record)
    return statements, record


def test_a_single_person_event_costs_a_bounded_number_of_statements(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    if get_engine().dialect.name != "postgresql":
        pytest.skip("the claim returns its send context in one statement on PostgreSQL only")
    # Counted up to the outcomes recorded: what status hooks do after that (webhooks look
    # up the tenant's endpoints) is theirs, and depends on which modules are loaded.
    monkeypatch.setattr("notifier.status_hooks._HOOKS", [])
    prefs = {"priority": {"medium": ["line", "email"]}}
    import_document(directory(person("u1", preferences=prefs)))
    statements, record = _count_statements()
    try:
        accepted = accept(
            event("payment.success", metadata={"userId": "u1", "channels": ["line", "email"]})
        )
        assert accepted.event_pk is not None
        accept_count = len(statements)
        resolution = resolve(accepted.event_pk)
        assert resolution is not None
        resolve_count = len(statements) - accept_count
        [page] = resolution.pages
        planned = plan_page(accepted.event_pk, resolution.audience, page)
        select_count = len(statements) - accept_count - resolve_count
        sent = sum(send_chunk(channel, ids).sent for channel, ids in planned.chunks)
        send_count = len(statements) - accept_count - resolve_count - select_count
    finally:
        sa_event.remove(get_engine(), "before_cursor_execute", record)
    assert sent == 2
    # accept: the insert that checks the tenant and the user. resolve: marking the event
    # planned returns what its pages need. select_channels: the page of people with their
    # tenant, suppressions and channels turned off; the insert returning the queued ids.
    # Each send: the claim returning its context, the outbox's row, the outcome.
    counts = (accept_count, resolve_count, select_count, send_count)
    assert counts == (1, 1, 2, 6), " ".join(statements)
    assert sum(counts) <= 10
    # Single statements need no transaction: no BEGIN, COMMIT or ping around them.
    assert not [s for s in statements if s.upper() in ("BEGIN", "COMMIT", "SELECT 1")]


def test_a_pooled_connection_that_died_while_idle_is_replaced_before_use(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    engine = get_engine()
    if engine.dialect.name != "postgresql":
        pytest.skip("needs a database server that can drop a connection")
    with engine.connect() as victim:
        dead = victim.scalar(text("SELECT pg_backend_pid()"))
        victim.commit()  # idle in the pool, no transaction open, when the server drops it
    killer = create_engine(engine.url, poolclass=NullPool)
    with killer.connect() as connection:
        connection.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": dead})
    killer.dispose()
    monkeypatch.setattr(db_module, "IDLE_PING_SECONDS", 0.05)
    time.sleep(0.1)

    # Every pooled connection is checked out at once, each pinged: the dead one is replaced.
    with contextlib.ExitStack() as stack:
        held = [stack.enter_context(engine.connect()) for _ in range(engine.pool.checkedin())]
        pids = {connection.scalar(text("SELECT pg_backend_pid()")) for connection in held}
    assert held and dead not in pids


def test_status_hooks_see_each_outcome_once_it_is_committed() -> None:
    from notifier.status_hooks import (
        StatusChange,
        on_delivery_status,
        remove_delivery_status_hook,
    )

    prefs = {"priority": {"medium": ["line", "email"]}}
    import_document(directory(person("u1", preferences=prefs)))
    accepted = accept(
        event("payment.success", metadata={"userId": "u1", "channels": ["line", "email"]})
    )
    assert accepted.event_pk is not None
    seen: list[tuple[StatusChange, str]] = []

    def record(changes: Any) -> None:
        with session_scope() as session:  # another connection: only committed rows show
            for change in changes:
                stored = session.get(Delivery, change.delivery_id)
                seen.append((change, stored.status if stored else "missing"))

    def broken(changes: Any) -> None:
        raise RuntimeError("a hook that fails changes nothing for the send")

    on_delivery_status(broken)
    on_delivery_status(record)
    try:
        chunks = plan(accepted.event_pk).chunks
        sent = sum(send_chunk(channel, ids).sent for channel, ids in chunks)
    finally:
        remove_delivery_status_hook(broken)
        remove_delivery_status_hook(record)
    assert sent == 2
    assert sorted((c.channel, c.status, stored) for c, stored in seen) == [
        ("email", "sent", "sent"),
        ("line", "sent", "sent"),
    ]
    assert {c.event_id for c, _ in seen} == {accepted.event_id}
    assert all(c.recipient == "u1" and c.provider_message_id for c, _ in seen)

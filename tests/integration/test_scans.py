"""Beat's scans against the real database (and, where deliveries are counted, the real
worker and broker): each reminder exactly once, on time or late, never for nothing; the
release of quiet-hours deliveries; retention. The clock is a parameter, never a sleep."""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import event as sa_event
from sqlalchemy import insert, select, text

from config.settings import get_settings
from notifier.db import get_engine, session_scope
from notifier.directory import import_document
from notifier.models import (
    DeadLetter,
    Delivery,
    DeliveryStatus,
    Event,
    Membership,
    OutboxMessage,
    Tenant,
    User,
)
from notifier.pipeline import accept, plan, release_deferred
from notifier.retention import cleanup, retention_cutoff
from notifier.scans import (
    ScanResult,
    expiry_candidates,
    expiry_window,
    parse_moment,
    reminder_window,
    scan_course_reminders,
    scan_membership_expiry,
)
from tasks import enqueue
from tasks.scheduled import run_scan
from tests.helpers import CELERY, event, person, wait_for
from tests.integration.conftest import count, deliveries, wait_settled

TPE, NYC = "gym-tpe", "gym-nyc"
TAIPEI, NEW_YORK = ZoneInfo("Asia/Taipei"), ZoneInfo("America/New_York")
DAY = dt.date(2026, 12, 1)  # a Tuesday
CLASS_START = dt.datetime(2026, 12, 1, 11, 0, tzinfo=dt.UTC)  # 19:00 in Taipei
ROOT = Path(__file__).resolve().parents[2]
ON_POSTGRES = get_settings().database_url.startswith("postgresql")


def local(day: dt.date, hour: int, minute: int = 0, tz: ZoneInfo = TAIPEI) -> dt.datetime:
    return dt.datetime.combine(day, dt.time(hour, minute), tzinfo=tz)


def days(n: int) -> dt.date:
    return DAY + dt.timedelta(days=n)


def hours(n: float) -> dt.timedelta:
    return dt.timedelta(hours=n)


def tenant(tenant_id: str, timezone: str) -> dict[str, Any]:
    return {"id": tenant_id, "name": f"Gym {tenant_id}", "timezone": timezone, "locale": "en"}


def membership(mid: str, uid: str, expires: dt.date, tenant_id: str = TPE) -> dict[str, Any]:
    return {
        "id": mid,
        "tenantId": tenant_id,
        "userId": uid,
        "membershipType": "Gold",
        "expiresAt": expires.isoformat(),
    }


def course(cid: str, start: dt.datetime, capacity: int = 10, **extra: Any) -> dict[str, Any]:
    return {
        "id": cid,
        "tenantId": TPE,
        "courseName": "Yoga",
        "instructorName": "Lin",
        "startTime": start.isoformat(),
        "location": "Room A",
        "capacity": capacity,
        **extra,
    }


def booking(bid: str, cid: str, uid: str, status: str = "confirmed") -> dict[str, Any]:
    return {"id": bid, "tenantId": TPE, "courseId": cid, "userId": uid, "status": status}


def seed(
    users: list[dict[str, Any]],
    tenants: list[dict[str, Any]] | None = None,
    **rows: list[dict[str, Any]],
) -> None:
    import_document({"tenants": tenants or [tenant(TPE, "Asia/Taipei")], "users": users, **rows})


def members(*uids: str, tenant_id: str = TPE) -> list[dict[str, Any]]:
    return [person(uid, tenant=tenant_id) for uid in uids]


def accepted() -> dict[str, dict[str, Any]]:
    """eventId -> wire payload of every accepted event."""
    with session_scope() as session:
        rows = session.scalars(select(Event).where(Event.status == "accepted"))
        return {row.event_id: row.payload for row in rows}


def tally(result: ScanResult) -> tuple[int, int, int]:
    return result.published, result.duplicates, result.skipped


# --- the window rules, as plain functions ------------------------------------------------


@pytest.mark.parametrize(
    ("expires_in", "at_hour", "expected"),
    [
        (7, 9, 7),  # the 7-day morning
        (7, 8, None),  # ... not before the tenant's morning
        (8, 23, None),  # no window has come yet
        (6, 10, 7),  # the 7-day reminder, a day late: still the 7-day window
        (3, 9, 3),  # the 3-day morning supersedes the 7-day window
        (2, 9, 3),  # the 3-day one, a day late
        (1, 9, 1),
        (0, 9, 1),  # expires today: the 1-day one, late
        (0, 3, 1),  # ... even before today's morning (yesterday's has come)
        (-1, 12, None),  # expired
    ],
)
def test_expiry_window(expires_in: int, at_hour: int, expected: int | None) -> None:
    now = local(DAY, at_hour)
    assert expiry_window(days(expires_in), now, (7, 3, 1), 9) == expected


@pytest.mark.parametrize(
    ("before_start", "expected"),
    [
        (hours(25), None),
        (hours(24), 24),
        (hours(23), 24),  # an hour late: the 24 h reminder still goes
        (hours(2), 2),  # the 2 h one is due too: only the nearest
        (hours(1.5), 2),
        (dt.timedelta(seconds=1), 2),
        (dt.timedelta(0), None),  # the class has started
        (-hours(1), None),
    ],
)
def test_reminder_window(before_start: dt.timedelta, expected: int | None) -> None:
    assert reminder_window(CLASS_START, CLASS_START - before_start, (24, 2)) == expected


def test_parse_moment_needs_an_offset() -> None:
    assert parse_moment("2026-12-01T09:00:00+08:00") == local(DAY, 9)
    with pytest.raises(ValueError, match="needs a UTC offset"):
        parse_moment("2026-12-01T09:00:00")
    with pytest.raises(ValueError, match="not an ISO 8601 time"):
        parse_moment("tomorrow")


def test_retention_never_drops_a_dedup_key_inside_its_window() -> None:
    now = local(DAY, 12)
    settings = get_settings()
    assert retention_cutoff(now, dataclasses.replace(settings, retention_days=90)) == (
        now - dt.timedelta(days=90)
    )
    # A 7-day expiry key is looked up for 8 days: one day of retention would resend it.
    short = dataclasses.replace(settings, retention_days=1, expiry_days=(7, 3, 1))
    assert retention_cutoff(now, short) == now - dt.timedelta(days=9)


# --- membership expiry -----------------------------------------------------------------


@pytest.mark.usefixtures("db")
def test_expiry_reminders_go_out_in_each_tenants_own_morning() -> None:
    seed(
        members("u1", tenant_id=TPE) + members("u2", tenant_id=NYC),
        tenants=[tenant(TPE, "Asia/Taipei"), tenant(NYC, "America/New_York")],
        memberships=[membership("m1", "u1", days(7), TPE), membership("m2", "u2", days(7), NYC)],
    )
    assert tally(scan_membership_expiry(local(DAY, 8, 59))) == (0, 0, 0)
    assert tally(scan_membership_expiry(local(DAY, 9, 0))) == (1, 0, 0)
    assert set(accepted()) == {"expiry:m1:7d:2026-12-08"}
    # 08:59 in New York is 21:59 in Taipei: Taipei's reminder is done, New York's not due.
    assert tally(scan_membership_expiry(local(DAY, 8, 59, NEW_YORK))) == (0, 1, 0)
    assert tally(scan_membership_expiry(local(DAY, 9, 0, NEW_YORK))) == (1, 1, 0)
    sent = accepted()
    assert set(sent) == {"expiry:m1:7d:2026-12-08", "expiry:m2:7d:2026-12-08"}
    assert sent["expiry:m2:7d:2026-12-08"]["tenantId"] == NYC
    assert sent["expiry:m2:7d:2026-12-08"]["data"]["daysLeft"] == 7


@pytest.mark.usefixtures("db")
def test_expiry_windows_fields_and_catch_up() -> None:
    offsets = {"m7": 7, "m3": 3, "m1": 1, "m0": 0, "m2": 2, "m5": 5, "m8": 8, "gone": -1}
    users = [*members(*(f"u-{mid}" for mid in offsets)), person("u-idle", tenant=TPE, active=False)]
    seed(
        users,
        memberships=[membership(mid, f"u-{mid}", days(n)) for mid, n in offsets.items()]
        + [membership("m-idle", "u-idle", days(7))],
    )
    result = scan_membership_expiry(local(DAY, 10))
    assert tally(result) == (6, 0, 0)
    assert len(result.event_pks) == 6
    sent = accepted()
    assert {key: ev["data"]["daysLeft"] for key, ev in sent.items()} == {
        "expiry:m7:7d:2026-12-08": 7,
        "expiry:m3:3d:2026-12-04": 3,
        "expiry:m1:1d:2026-12-02": 1,
        "expiry:m0:1d:2026-12-01": 0,  # expires today, its 1-day reminder was missed
        "expiry:m2:3d:2026-12-03": 2,  # the 3-day one, missed yesterday
        "expiry:m5:7d:2026-12-06": 5,  # the 7-day one, two days late
    }
    assert sent["expiry:m7:7d:2026-12-08"] == {
        "eventId": "expiry:m7:7d:2026-12-08",
        "eventType": "member.membership_expiring",
        "tenantId": TPE,
        "timestamp": local(DAY, 10).isoformat(),
        "source": "notifier.scans",
        "data": {
            "memberName": "Person u-m7",
            "membershipType": "Gold",
            "expiryDate": "2026-12-08",
            "daysLeft": 7,
        },
        "metadata": {"userId": "u-m7"},
    }


@pytest.mark.usefixtures("db")
def test_expiry_over_a_week_with_missed_mornings_sends_each_window_once() -> None:
    seed(members("u1"), memberships=[membership("m1", "u1", days(7))])
    down = {0, 6}  # Beat is down on the 7-day morning and on the 1-day morning
    published: dict[int, set[str]] = {}
    for day in range(9):
        if day in down:
            continue
        before = set(accepted())
        scan_membership_expiry(local(days(day), 9, 30))
        scan_membership_expiry(local(days(day), 18))  # scanned again later that day
        published[day] = {
            f"{key} daysLeft={accepted()[key]['data']['daysLeft']}"
            for key in set(accepted()) - before
        }
    assert published == {
        1: {"expiry:m1:7d:2026-12-08 daysLeft=6"},  # a day late, with the true days left
        2: set(),
        3: set(),
        4: {"expiry:m1:3d:2026-12-08 daysLeft=3"},
        5: set(),
        7: {"expiry:m1:1d:2026-12-08 daysLeft=0"},  # the 1-day morning was missed
        8: set(),  # expired: nothing more
    }
    # Before the 3-day morning the 7-day reminder is the due one, and it is already out.
    assert tally(scan_membership_expiry(local(days(4), 8))) == (0, 1, 0)


@pytest.mark.usefixtures("db")
def test_a_member_without_a_name_is_rejected_with_the_reason_then_retried() -> None:
    seed([person("u1", tenant=TPE, name="")], memberships=[membership("m1", "u1", days(3))])
    assert tally(scan_membership_expiry(local(DAY, 9))) == (0, 0, 1)
    with session_scope() as session:
        stored = session.scalars(select(Event)).one()
    assert stored.status == "rejected" and stored.event_id == "expiry:m1:3d:2026-12-04"
    assert [e["field"] for e in stored.errors] == ["data.memberName"]
    seed([person("u1", tenant=TPE, name="Amy")])
    assert tally(scan_membership_expiry(local(DAY, 10))) == (1, 0, 0)
    assert accepted()["expiry:m1:3d:2026-12-04"]["data"]["memberName"] == "Amy"


# --- course reminders ------------------------------------------------------------------


@pytest.mark.usefixtures("db")
def test_course_reminders_24h_and_2h_only_for_confirmed_bookings_of_scheduled_courses() -> None:
    seed(
        members("u1", "u2", "u3"),
        courses=[
            course("c1", CLASS_START),
            course("c2", CLASS_START, status="cancelled"),
            course("c3", CLASS_START, capacity=1),  # overbooked: no slots, never negative
        ],
        bookings=[
            booking("b1", "c1", "u1"),
            booking("b2", "c1", "u2"),
            booking("b3", "c1", "u3", status="cancelled"),
            booking("b5", "c2", "u1"),
            booking("b6", "c3", "u1"),
            booking("b7", "c3", "u2"),
        ],
    )
    due = {"b1", "b2", "b6", "b7"}
    assert tally(scan_course_reminders(CLASS_START - hours(25))) == (0, 0, 0)
    assert tally(scan_course_reminders(CLASS_START - hours(24))) == (4, 0, 0)
    assert tally(scan_course_reminders(CLASS_START - hours(23))) == (0, 4, 0)
    assert tally(scan_course_reminders(CLASS_START - hours(2))) == (4, 0, 0)
    assert tally(scan_course_reminders(CLASS_START - hours(1))) == (0, 4, 0)
    assert tally(scan_course_reminders(CLASS_START)) == (0, 0, 0)  # started: nothing
    sent = accepted()
    assert set(sent) == {f"reminder:{b}:{h}h:2026-12-01T11:00:00Z" for b in due for h in (24, 2)}
    reminder = sent["reminder:b1:24h:2026-12-01T11:00:00Z"]
    assert reminder["eventType"] == "course.reminder"
    assert reminder["metadata"] == {"userId": "u1"}
    assert reminder["data"] == {
        "courseId": "c1",
        "courseName": "Yoga",
        "instructorName": "Lin",
        "startTime": "2026-12-01T19:00:00+08:00",
        "location": "Room A",
        "remainingSlots": 8,  # capacity 10, two confirmed (the cancelled one frees its slot)
    }
    assert sent["reminder:b6:2h:2026-12-01T11:00:00Z"]["data"]["remainingSlots"] == 0


@pytest.mark.usefixtures("db")
def test_a_scan_after_an_hour_of_downtime_sends_what_still_means_something() -> None:
    now = CLASS_START - hours(23)  # Beat was down from the 24 h mark until now
    seed(
        members("u1", "u2", "u3"),
        courses=[
            course("tonight", CLASS_START),
            course("soon", now + hours(1.5)),  # its 24 h moment passed; the 2 h one is here
            course("started", now - dt.timedelta(minutes=1)),
        ],
        bookings=[
            booking("b-tonight", "tonight", "u1"),
            booking("b-soon", "soon", "u2"),
            booking("b-started", "started", "u3"),
        ],
    )
    assert tally(scan_course_reminders(now)) == (2, 0, 0)
    soon_start = (now + hours(1.5)).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert set(accepted()) == {
        "reminder:b-tonight:24h:2026-12-01T11:00:00Z",
        f"reminder:b-soon:2h:{soon_start}",
    }
    assert tally(scan_course_reminders(CLASS_START - hours(2))) == (1, 0, 0)
    assert "reminder:b-tonight:2h:2026-12-01T11:00:00Z" in accepted()
    assert count(Event) == 3


@pytest.mark.usefixtures("db")
def test_a_moved_class_is_reminded_again_for_its_new_time() -> None:
    seed(members("u1"), courses=[course("c1", CLASS_START)], bookings=[booking("b1", "c1", "u1")])
    assert tally(scan_course_reminders(CLASS_START - hours(3))) == (1, 0, 0)
    later = CLASS_START + hours(5)
    seed(members("u1"), courses=[course("c1", later)])
    assert tally(scan_course_reminders(CLASS_START - hours(2.5))) == (1, 0, 0)
    assert set(accepted()) == {
        "reminder:b1:24h:2026-12-01T11:00:00Z",
        "reminder:b1:24h:2026-12-01T16:00:00Z",
    }


# --- exactly once under concurrency, and through the whole pipeline -------------------


@pytest.mark.skipif(not ON_POSTGRES, reason="needs PostgreSQL: concurrent writers")
@pytest.mark.usefixtures("db", "celery_worker")
def test_two_concurrent_scans_publish_and_deliver_each_reminder_once() -> None:
    uids = [f"u{i:02d}" for i in range(40)]
    seed(
        members(*uids),
        memberships=[membership(f"m{i:02d}", uid, days(i % 8)) for i, uid in enumerate(uids)],
        courses=[course("c1", local(DAY, 11, 30), capacity=50)],
        bookings=[booking(f"b{i:02d}", "c1", uid) for i, uid in enumerate(uids)],
    )
    now = local(DAY, 9, 30)
    start = threading.Barrier(2)

    def both_scans() -> tuple[dict[str, int], dict[str, int]]:
        start.wait(timeout=10)
        return run_scan(scan_membership_expiry, now), run_scan(scan_course_reminders, now)

    with ThreadPoolExecutor(2) as pool:
        results = [f.result() for f in [pool.submit(both_scans) for _ in range(2)]]
    for scan in (0, 1):
        assert sum(r[scan]["published"] for r in results) == 40
        assert sum(r[scan]["duplicates"] for r in results) == 40
        assert sum(r[scan]["skipped"] for r in results) == 0
    assert count(Event) == 80
    # Each reminder: LINE and email to the member (their medium list) and the SNS topic.
    rows = wait_settled(expected=240)
    assert len(rows) == 240
    assert {r.status for r in rows} == {DeliveryStatus.SENT}
    with session_scope() as session:
        sent_for = list(session.scalars(select(OutboxMessage.delivery_id)))
    assert sorted(sent_for) == sorted(r.id for r in rows)  # one message per delivery


@pytest.mark.usefixtures("db")
def test_a_scan_overtaken_after_its_key_lookup_still_publishes_nothing_twice() -> None:
    """The worst interleaving, forced: scan B has looked up which keys are taken, then scan
    A publishes everything before B inserts. The unique key turns B's inserts into
    duplicates."""
    seed(
        members("u1", "u2", "u3"),
        memberships=[membership(f"m{i}", f"u{i}", days(3)) for i in (1, 2, 3)],
    )
    now = local(DAY, 9, 30)
    engine = get_engine()
    overtaken: list[ScanResult] = []

    def overtake(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        if "FROM events" in statement and not overtaken:
            overtaken.append(ScanResult())  # mark first: scan A's own lookups pass through
            with ThreadPoolExecutor(1) as other_process:
                overtaken[0] = other_process.submit(scan_membership_expiry, now).result()

    sa_event.listen(engine, "after_cursor_execute", overtake)
    try:
        late = scan_membership_expiry(now)
    finally:
        sa_event.remove(engine, "after_cursor_execute", overtake)
    assert tally(overtaken[0]) == (3, 0, 0)
    assert tally(late) == (0, 3, 0)
    assert count(Event) == 3


@pytest.mark.usefixtures("db", "celery_worker")
def test_scan_then_pipeline_delivers_the_reminder() -> None:
    seed(members("u1"), courses=[course("c1", CLASS_START)], bookings=[booking("b1", "c1", "u1")])
    # the 24 h reminder is medium priority: the person's medium list, line + email
    assert run_scan(scan_course_reminders, CLASS_START - hours(24)) == {
        "published": 1,
        "duplicates": 0,
        "skipped": 0,
    }
    rows = wait_settled(expected=3)
    assert sorted((r.channel, r.status) for r in rows) == [
        ("email", "sent"),
        ("line", "sent"),
        ("topic", "sent"),
    ]
    with session_scope() as session:
        email = session.scalars(select(OutboxMessage).where(OutboxMessage.channel == "email")).one()
    assert "Yoga" in (email.subject or "") and "Room A" in (email.body_text or "")


# --- cost ------------------------------------------------------------------------------


@pytest.mark.skipif(not ON_POSTGRES, reason="the planner check is PostgreSQL's")
@pytest.mark.usefixtures("db")
def test_expiry_scan_cost_follows_the_due_rows_not_the_table() -> None:
    seed([], tenants=[tenant(TPE, "Asia/Taipei")])
    total, due = 20_000, 50
    now = local(DAY, 9, 30)

    def expires(i: int) -> dt.date:
        if i < due:
            return days(i % 8)
        # The rest expired already or expire after the longest window, up to 3 years out.
        spread = 10 + i % 1000
        return days(spread) if i % 2 else days(-spread)

    engine = get_engine()
    with engine.begin() as conn:
        conn.execute(
            insert(User),
            [
                {"tenant_id": TPE, "id": f"u{i:05d}", "name": f"Member {i}", "role": "member"}
                for i in range(total)
            ],
        )
        conn.execute(
            insert(Membership),
            [
                {
                    "tenant_id": TPE,
                    "id": f"m{i:05d}",
                    "user_id": f"u{i:05d}",
                    "membership_type": "Gold",
                    "expires_at": expires(i),
                }
                for i in range(total)
            ],
        )
    with engine.begin() as conn:
        # The planner picks the index from statistics: give it fresh ones.
        for table in ("tenants", "users", "memberships"):
            conn.execute(text(f"ANALYZE {table}"))

    statements: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        statements.append(statement)

    sa_event.listen(engine, "before_cursor_execute", record)
    try:
        first = scan_membership_expiry(now)
        first_statements = list(statements)
        statements.clear()
        again = scan_membership_expiry(now)
    finally:
        sa_event.remove(engine, "before_cursor_execute", record)

    assert tally(first) == (due, 0, 0)
    assert tally(again) == (0, due, 0)
    # One read of memberships; then per published reminder, accept()'s few statements.
    assert sum("FROM memberships" in s for s in first_statements) == 1
    assert len(first_statements) <= 3 + due * 8
    # Nothing new: the timezones, the due memberships, the published keys. That's all.
    assert len(statements) == 3

    query = expiry_candidates("Asia/Taipei", DAY, days(7))
    sql = str(query.compile(dialect=engine.dialect, compile_kwargs={"literal_binds": True}))
    with engine.connect() as conn:
        plan_text = "\n".join(row[0] for row in conn.exec_driver_sql("EXPLAIN " + sql))
    assert "ix_memberships_expires_at" in plan_text, plan_text


# --- quiet hours: deferred deliveries released at the end of each person's window -------


def quiet_person(uid: str, tz: str = "Asia/Taipei", **schedule: Any) -> dict[str, Any]:
    doc = person(uid, tenant=TPE)
    doc["preferences"]["schedule"] = {
        "quietHours": {"start": "22:00", "end": "08:00"},
        "timezone": tz,
        **schedule,
    }
    return doc


def planned_at(moment: dt.datetime, priority: str | None = None) -> int:
    """Accept a payment event for u1 and plan it as if it were `moment`."""
    ev = event("payment.success", tenant=TPE, eventId=f"pay-{moment.isoformat()}-{priority}")
    if priority:
        ev["metadata"]["priority"] = priority
    outcome = accept(ev)
    assert outcome.event_pk is not None
    plan(outcome.event_pk, now=moment)
    return outcome.event_pk


def person_deliveries(event_pk: int) -> dict[str, Delivery]:
    return {d.channel: d for d in deliveries(event_pk=event_pk) if d.recipient == "u1"}


def released_ids(moment: dt.datetime) -> list[int]:
    return sorted(i for _, ids in release_deferred(now=moment) for i in ids)


@pytest.mark.usefixtures("db", "celery_worker")
def test_deferred_across_midnight_released_at_the_windows_end_and_sent() -> None:
    seed([quiet_person("u1")])
    pk = planned_at(local(DAY, 23, 30))
    held = person_deliveries(pk)
    assert {c: d.status for c, d in held.items()} == {"line": "deferred", "email": "deferred"}
    assert {d.not_before for d in held.values()} == {local(days(1), 8)}
    assert released_ids(local(days(1), 0, 30)) == []
    assert released_ids(local(days(1), 7, 59)) == []
    chunks = release_deferred(now=local(days(1), 8))
    assert sorted(i for _, ids in chunks for i in ids) == sorted(d.id for d in held.values())
    assert released_ids(local(days(1), 8, 1)) == []  # released once
    enqueue.send_deliveries(chunks)
    wait_for(lambda: {d.status for d in person_deliveries(pk).values()} == {"sent"})


@pytest.mark.usefixtures("db")
def test_deferred_over_a_weekend_released_on_monday_morning() -> None:
    seed([quiet_person("u1", workdays=[True, True, True, True, True, False, False])])
    friday = dt.date(2026, 12, 4)
    pk = planned_at(local(friday, 23))
    held = person_deliveries(pk)
    assert {d.not_before for d in held.values()} == {local(dt.date(2026, 12, 7), 8)}
    for moment in (
        local(dt.date(2026, 12, 5), 12),  # Saturday noon: outside the window, not a workday
        local(dt.date(2026, 12, 6), 23, 59),
        local(dt.date(2026, 12, 7), 7, 59),
    ):
        assert released_ids(moment) == []
    assert released_ids(local(dt.date(2026, 12, 7), 8)) == sorted(d.id for d in held.values())


@pytest.mark.parametrize(
    ("evening", "release_utc"),
    [
        # DST starts on 2026-03-08: 08:00 that morning is EDT, 12:00 UTC (not 13:00).
        (dt.date(2026, 3, 7), dt.datetime(2026, 3, 8, 12, 0, tzinfo=dt.UTC)),
        # DST ends on 2026-11-01: 08:00 that morning is EST, 13:00 UTC (not 12:00).
        (dt.date(2026, 10, 31), dt.datetime(2026, 11, 1, 13, 0, tzinfo=dt.UTC)),
    ],
)
@pytest.mark.usefixtures("db")
def test_deferred_across_a_dst_change_released_at_local_eight(
    evening: dt.date, release_utc: dt.datetime
) -> None:
    seed([quiet_person("u1", tz="America/New_York")])
    pk = planned_at(local(evening, 23, tz=NEW_YORK))
    held = person_deliveries(pk)
    assert {d.not_before for d in held.values()} == {release_utc}
    assert release_utc.astimezone(NEW_YORK).hour == 8
    assert released_ids(release_utc - dt.timedelta(minutes=1)) == []
    assert released_ids(release_utc) == sorted(d.id for d in held.values())


@pytest.mark.parametrize("priority", ["critical", "high"])
@pytest.mark.usefixtures("db")
def test_critical_and_high_never_wait_for_quiet_hours_or_weekends(priority: str) -> None:
    seed([quiet_person("u1", workdays=[True, True, True, True, True, False, False])])
    for moment in (local(DAY, 23, 30), local(dt.date(2026, 12, 5), 12)):  # night, Saturday
        held = person_deliveries(planned_at(moment, priority))
        assert held and all(d.not_before is None for d in held.values())
        assert DeliveryStatus.DEFERRED not in {d.status for d in held.values()}
        assert {"line", "sms"} <= {c for c, d in held.items() if d.status == "queued"}


# --- retention -------------------------------------------------------------------------


@pytest.mark.usefixtures("db")
def test_cleanup_deletes_old_rows_in_batches_and_keeps_what_may_be_replayed() -> None:
    now = local(DAY, 3)
    old, recent = now - dt.timedelta(days=91), now - dt.timedelta(days=89)
    seed([person("u1", tenant=TPE)])
    engine = get_engine()

    def add_event(name: str, created: dt.datetime) -> int:
        with engine.begin() as conn:
            pk = conn.execute(
                insert(Event)
                .values(
                    event_id=name,
                    tenant_id=TPE,
                    event_type="payment.success",
                    status="accepted",
                    errors=[],
                    payload={},
                    created_at=created,
                )
                .returning(Event.id)
            ).scalar_one()
            for channel in ("line", "email"):
                conn.execute(
                    insert(Delivery).values(
                        event_pk=pk,
                        tenant_id=TPE,
                        recipient="u1",
                        channel=channel,
                        created_at=created,
                        updated_at=created,
                    )
                )
        return pk

    old_events = [add_event(f"old-{i}", old) for i in range(5)]
    pinned = add_event("old-pinned", old)
    kept = add_event("recent", recent)
    with session_scope() as session:
        pinned_delivery = deliveries(event_pk=pinned)[0].id
        session.add_all(
            [
                DeadLetter(
                    tenant_id=TPE,
                    kind="send",
                    delivery_id=pinned_delivery,
                    error="x",
                    created_at=old,
                ),
                DeadLetter(tenant_id=TPE, kind="send", error="x", created_at=old, replayed_at=old),
                DeadLetter(
                    tenant_id=TPE, kind="send", error="x", created_at=recent, replayed_at=recent
                ),
            ]
            + [
                OutboxMessage(
                    delivery_id=i,
                    tenant_id=TPE,
                    event_type="payment.success",
                    channel="email",
                    recipient="u1",
                    created_at=created,
                )
                for i, created in enumerate([old, old, old, recent])
            ]
        )

    removed = cleanup(now, batch_size=2)
    assert removed == {"events": 5, "deliveries": 10, "outbox_messages": 3, "dead_letters": 1}
    with session_scope() as session:
        assert set(session.scalars(select(Event.id))) == {pinned, kept}
        assert {d.event_pk for d in session.scalars(select(Delivery))} == {pinned, kept}
        letters = list(session.scalars(select(DeadLetter)))
        assert sorted(str(d.replayed_at is not None) for d in letters) == ["False", "True"]
    assert count(OutboxMessage) == 1
    assert not set(old_events) & {d.event_pk for d in deliveries()}
    assert cleanup(now, batch_size=2) == dict.fromkeys(removed, 0)  # nothing left to do
    assert count(Tenant) == 1  # the directory is not retention's business


# --- Beat and the CLI, as they run in production ---------------------------------------


@pytest.fixture
def beat(tmp_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    env = {**os.environ, "NOTIFIER_REMINDER_SCAN_INTERVAL": "1"}
    with open(tmp_path / "beat.log", "wb") as log:
        proc = subprocess.Popen(
            [
                *CELERY,
                "beat",
                "--max-interval",
                "1",
                "--schedule",
                str(tmp_path / "schedule"),
                "--pidfile",
                str(tmp_path / "beat.pid"),
            ],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    yield proc
    proc.terminate()
    proc.wait(timeout=30)


@pytest.mark.usefixtures("db", "celery_worker")
def test_celery_beat_runs_the_reminder_scan(beat: subprocess.Popen[bytes]) -> None:
    start = (dt.datetime.now(dt.UTC) + hours(1.5)).replace(microsecond=0)
    seed(members("u1"), courses=[course("c1", start)], bookings=[booking("b1", "c1", "u1")])
    key = f"reminder:b1:2h:{start.strftime('%Y-%m-%dT%H:%M:%SZ')}"
    wait_for(lambda: key in accepted(), timeout=60)
    wait_settled(expected=3)
    assert beat.poll() is None


@pytest.mark.usefixtures("db", "celery_worker")
def test_cli_scan_publishes_and_prints_the_counts() -> None:
    seed(members("u1"), memberships=[membership("m1", "u1", days(7))])
    notifier = str(Path(sys.executable).parent / "notifier")

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [notifier, *args], capture_output=True, text=True, env=dict(os.environ), timeout=60
        )

    done = cli("scan", "expiry", "--now", "2026-12-01T09:00:00+08:00")
    assert done.returncode == 0, done.stderr
    assert '"published": 1' in done.stdout
    wait_settled(expected=3)
    again = cli("scan", "expiry", "--now", "2026-12-01T10:00:00+08:00")
    assert '"duplicates": 1' in again.stdout
    bad = cli("scan", "expiry", "--now", "2026-12-01T09:00:00")
    assert bad.returncode == 2 and "needs a UTC offset" in bad.stderr


def test_the_last_class_reminder_is_not_held_by_quiet_hours(db: None) -> None:
    """A 2 h reminder for a 07:00 class must not wait for quiet hours to end at 08:00."""
    import datetime as dt

    from notifier.directory import import_document
    from notifier.models import Event
    from notifier.scans import scan_course_reminders

    start = dt.datetime(2026, 11, 24, 7, 0, tzinfo=dt.timezone(dt.timedelta(hours=8)))
    import_document(
        {
            "tenants": [{"id": "gym-q", "name": "Q", "timezone": "Asia/Taipei"}],
            "users": [{"id": "u1", "tenantId": "gym-q", "name": "Amy", "email": "a@example.com"}],
            "courses": [
                {
                    "id": "c1",
                    "tenantId": "gym-q",
                    "courseName": "Dawn Yoga",
                    "instructorName": "Lin",
                    "startTime": start.isoformat(),
                    "location": "Room A",
                    "capacity": 10,
                }
            ],
            "bookings": [{"id": "b1", "tenantId": "gym-q", "courseId": "c1", "userId": "u1"}],
        }
    )
    scan_course_reminders(start - dt.timedelta(hours=24))
    scan_course_reminders(start - dt.timedelta(hours=2))
    with session_scope() as session:
        priorities = {
            e.event_id.split(":")[2]: e.payload["metadata"].get("priority")
            for e in session.scalars(select(Event))
        }
    assert priorities == {"24h": None, "2h": "high"}

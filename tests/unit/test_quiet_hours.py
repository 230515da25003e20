from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

from notifier.quiet_hours import QuietSchedule

TAIPEI = ZoneInfo("Asia/Taipei")
NEW_YORK = ZoneInfo("America/New_York")
WEEKDAYS = [True, True, True, True, True, False, False]


def schedule(
    start: str, end: str, tz: str = "Asia/Taipei", workdays: list[bool] | None = None
) -> QuietSchedule:
    prefs: dict[str, object] = {"quietHours": {"start": start, "end": end}, "timezone": tz}
    if workdays is not None:
        prefs["workdays"] = workdays
    return QuietSchedule.from_preferences(prefs, "UTC")


def at(y: int, mo: int, d: int, h: int, mi: int = 0, tz: ZoneInfo = TAIPEI) -> dt.datetime:
    return dt.datetime(y, mo, d, h, mi, tzinfo=tz)


def test_window_across_midnight() -> None:
    s = schedule("22:00", "08:00")
    assert s.is_quiet(at(2026, 11, 24, 23, 30))
    assert s.is_quiet(at(2026, 11, 24, 2, 0))
    assert not s.is_quiet(at(2026, 11, 24, 8, 0))
    assert not s.is_quiet(at(2026, 11, 24, 21, 59))
    assert s.quiet_until(at(2026, 11, 24, 23, 30)) == at(2026, 11, 25, 8, 0)
    assert s.quiet_until(at(2026, 11, 24, 2, 0)) == at(2026, 11, 24, 8, 0)


def test_same_day_window() -> None:
    s = schedule("12:00", "13:30")
    assert s.is_quiet(at(2026, 11, 24, 12, 15))
    assert s.quiet_until(at(2026, 11, 24, 12, 15)) == at(2026, 11, 24, 13, 30)
    moment = at(2026, 11, 24, 14, 0)
    assert s.quiet_until(moment) == moment


def test_the_timezone_is_the_persons() -> None:
    s = schedule("22:00", "08:00")
    # 15:00 UTC is 23:00 in Taipei
    assert s.is_quiet(dt.datetime(2026, 11, 24, 15, 0, tzinfo=dt.UTC))
    assert not s.is_quiet(dt.datetime(2026, 11, 24, 3, 0, tzinfo=dt.UTC))


def test_weekend_is_quiet_all_day_and_releases_monday_morning() -> None:
    s = schedule("22:00", "08:00", workdays=WEEKDAYS)
    friday_late = at(2026, 11, 27, 23, 0)  # Friday
    saturday_noon = at(2026, 11, 28, 12, 0)
    assert s.is_quiet(saturday_noon)
    assert s.quiet_until(friday_late) == at(2026, 11, 30, 8, 0)  # Monday 08:00
    assert s.quiet_until(saturday_noon) == at(2026, 11, 30, 8, 0)


def test_weekend_without_window_releases_at_monday_midnight() -> None:
    s = QuietSchedule.from_preferences({"workdays": WEEKDAYS, "timezone": "Asia/Taipei"}, "UTC")
    assert s.quiet_until(at(2026, 11, 28, 12, 0)) == at(2026, 11, 30, 0, 0)


def test_dst_spring_forward_end_of_window() -> None:
    # 2026-03-08 02:00 America/New_York jumps to 03:00; a window ending at 02:30 ends at 03:30 EDT
    s = schedule("01:00", "02:30", tz="America/New_York")
    moment = dt.datetime(2026, 3, 8, 1, 30, tzinfo=NEW_YORK)
    until = s.quiet_until(moment)
    assert until > moment
    assert not s.is_quiet(until)
    assert until - moment <= dt.timedelta(hours=1)


def test_dst_fall_back_keeps_local_wall_clock() -> None:
    # 2026-11-01: clocks go back at 02:00 in New York; the 08:00 end is still 08:00 local
    s = schedule("22:00", "08:00", tz="America/New_York")
    moment = dt.datetime(2026, 10, 31, 23, 0, tzinfo=NEW_YORK)
    until = s.quiet_until(moment)
    assert until.astimezone(NEW_YORK).hour == 8
    assert until - moment == dt.timedelta(hours=10)  # 9 wall-clock hours + the repeated one


def test_no_window_means_never_quiet() -> None:
    s = QuietSchedule.from_preferences({"timezone": "Asia/Taipei"}, "UTC")
    assert not s.is_quiet(at(2026, 11, 24, 3, 0))

"""Quiet hours: a daily window (which may cross midnight) plus non-workdays, in the
person's timezone."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from zoneinfo import ZoneInfo


def _parse_hhmm(value: str) -> dt.time:
    hours, minutes = value.split(":")
    return dt.time(int(hours), int(minutes))


@dataclass(frozen=True)
class QuietSchedule:
    start: dt.time | None
    end: dt.time | None
    timezone: ZoneInfo
    workdays: tuple[bool, ...]
    """Monday first, as Python's weekday(); a False day is quiet all day."""

    @classmethod
    def from_preferences(cls, schedule: dict[str, object], default_tz: str) -> QuietSchedule:
        window = schedule.get("quietHours") or {}
        start = end = None
        if isinstance(window, dict) and window.get("start") and window.get("end"):
            start, end = _parse_hhmm(str(window["start"])), _parse_hhmm(str(window["end"]))
        workdays = schedule.get("workdays")
        days = tuple(bool(d) for d in workdays) if isinstance(workdays, list) else ()
        if len(days) != 7:
            days = (True,) * 7
        tz = ZoneInfo(str(schedule.get("timezone") or default_tz))
        return cls(start, end, tz, days)

    def _in_window(self, local_time: dt.time) -> bool:
        if self.start is None or self.end is None or self.start == self.end:
            return False
        if self.start < self.end:
            return self.start <= local_time < self.end
        return local_time >= self.start or local_time < self.end  # crosses midnight

    def is_quiet(self, moment: dt.datetime) -> bool:
        local = moment.astimezone(self.timezone)
        if not self.workdays[local.weekday()]:
            return True
        return self._in_window(local.time().replace(tzinfo=None))

    def quiet_until(self, moment: dt.datetime) -> dt.datetime:
        """The first instant at or after `moment` that is not quiet (moment itself if it
        is not). Candidates are each day's midnight and window end, in local time."""
        if not self.is_quiet(moment):
            return moment
        local_day = moment.astimezone(self.timezone).date()
        boundaries = [dt.time(0, 0)] + ([self.end] if self.end else [])
        for offset in range(0, 9):
            day = local_day + dt.timedelta(days=offset)
            for boundary in sorted(boundaries):
                candidate = dt.datetime.combine(day, boundary, tzinfo=self.timezone)
                # Round-trip through UTC so a time skipped by a DST change lands on a real one.
                candidate = candidate.astimezone(dt.UTC)
                if candidate > moment and not self.is_quiet(candidate):
                    return candidate
        raise ValueError("quiet schedule leaves no time to send (no workday)")

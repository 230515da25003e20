from __future__ import annotations

import datetime as dt
from typing import Any

from notifier.models import DeliveryStatus
from notifier.selection import Person, fallback_channel, select_channels

NOON_TAIPEI = dt.datetime(2026, 11, 24, 4, 0, tzinfo=dt.UTC)  # Tuesday 12:00 in Taipei
NIGHT_TAIPEI = dt.datetime(2026, 11, 24, 15, 0, tzinfo=dt.UTC)  # Tuesday 23:00 in Taipei
PRIORITY_LISTS = {"high": ["line", "sms"], "medium": ["line", "email"], "low": ["web_push"]}


ADDRESSES = {"email": "a@example.com", "sms": "+886912345678", "line": "U1", "web_push": "subs"}


def make(
    preferences: dict[str, Any] | None = None, *, role: str = "member", **addresses: str | None
) -> Person:
    """A person reached on every channel but Slack; `sms=None` takes one away."""
    reached = {c: a for c, a in {**ADDRESSES, **addresses}.items() if a is not None}
    return Person(
        id="u1",
        role=role,
        addresses=reached,
        timezone="Asia/Taipei",
        preferences={"priority": PRIORITY_LISTS} if preferences is None else preferences,
        is_staff=role != "member",
    )


def summary(choices: list[Any]) -> dict[str, str]:
    return {c.channel: c.status.value for c in choices}


def queued(choices: list[Any]) -> list[str]:
    return [c.channel for c in choices if c.status == DeliveryStatus.QUEUED]


def test_priority_lists_follow_the_person() -> None:
    assert queued(select_channels(make(), "high", NOON_TAIPEI)) == ["line", "sms"]
    assert queued(select_channels(make(), "medium", NOON_TAIPEI)) == ["line", "email"]
    assert queued(select_channels(make(), "low", NOON_TAIPEI)) == ["web_push"]


def test_critical_goes_to_every_reachable_channel() -> None:
    assert set(queued(select_channels(make(), "critical", NOON_TAIPEI))) == {
        "line",
        "sms",
        "email",
        "web_push",
    }
    staff = make(role="admin", slack="https://hooks.example/x")
    assert "slack" in queued(select_channels(staff, "critical", NOON_TAIPEI))


def test_default_is_web_push_without_a_list() -> None:
    assert queued(select_channels(make(preferences={}), "medium", NOON_TAIPEI)) == ["web_push"]


def test_metadata_channels_narrow_with_a_reason() -> None:
    choices = select_channels(make(), "medium", NOON_TAIPEI, narrowed_to=("email",))
    assert summary(choices) == {"line": "skipped", "email": "queued"}
    assert choices[0].reason == "narrowed by metadata.channels"


def test_opt_out_no_address_and_suppression_are_recorded() -> None:
    prefs = {"priority": {"high": ["line", "sms", "email"]}, "channels": {"line": False}}
    choices = select_channels(
        make(prefs, sms=None), "high", NOON_TAIPEI, suppressed=frozenset({"email"})
    )
    reasons = {c.channel: (c.status.value, c.reason) for c in choices}
    assert reasons == {
        "line": ("skipped", "opted out"),
        "sms": ("skipped", "no address"),
        "email": ("suppressed", "address suppressed"),
    }


def test_quiet_hours_defer_low_and_medium_to_the_window_end() -> None:
    prefs = {
        "priority": PRIORITY_LISTS,
        "schedule": {"quietHours": {"start": "22:00", "end": "08:00"}, "timezone": "Asia/Taipei"},
    }
    choices = select_channels(make(prefs), "medium", NIGHT_TAIPEI)
    assert {c.status for c in choices} == {DeliveryStatus.DEFERRED}
    # Wednesday 08:00 in Taipei
    assert all(c.not_before == dt.datetime(2026, 11, 25, 0, 0, tzinfo=dt.UTC) for c in choices)
    # high and critical go out at night
    assert queued(select_channels(make(prefs), "high", NIGHT_TAIPEI)) == ["line", "sms"]
    assert len(queued(select_channels(make(prefs), "critical", NIGHT_TAIPEI))) == 4


def test_quiet_hours_drop_policy() -> None:
    prefs = {
        "priority": PRIORITY_LISTS,
        "schedule": {"quietHours": {"start": "22:00", "end": "08:00"}},
    }
    choices = select_channels(make(prefs), "low", NIGHT_TAIPEI, quiet_policy="drop")
    assert summary(choices) == {"web_push": "skipped"}
    assert choices[0].reason == "quiet hours (dropped)"


def test_fallback_is_the_next_reachable_channel_in_the_list() -> None:
    person = make({"priority": {"high": ["line", "sms", "email"]}}, sms=None)
    assert fallback_channel(person, "high", "line", {"line"}) == "email"
    assert fallback_channel(person, "high", "email", {"line", "email"}) is None


def test_fallback_moves_on_to_the_persons_other_lists() -> None:
    # medium uses line and email together; when line fails for good, sms (high list) is next
    person = make()
    assert fallback_channel(person, "medium", "line", {"line", "email"}) == "sms"
    opted_out = make({"priority": PRIORITY_LISTS, "channels": {"sms": False}})
    assert fallback_channel(opted_out, "medium", "line", {"line", "email"}) == "web_push"

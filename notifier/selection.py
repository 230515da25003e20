"""Channel selection for one person: priority x preferences x quiet hours x suppressions.

Pure functions over a `Person` snapshot, so every rule is testable without a database.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from typing import Any

from pydantic.alias_generators import to_camel

from channels.registry import declaration, person_channels
from notifier.models import DeliveryStatus
from notifier.quiet_hours import QuietSchedule

DEFAULT_CHANNELS = ("web_push",)


@cache
def _critical(channels: tuple[str, ...], staff: bool) -> tuple[str, ...]:
    """The seed's "critical -> every channel": every channel of the person's own, then the
    tenant's (Slack) for staff, who are on them."""
    own = tuple(c for c in channels if declaration(c).audience != "staff")
    return own + tuple(c for c in channels if staff and c not in own)


def preference_keys() -> dict[str, str]:
    """Channel -> its key in the seed's NotificationPreference.channels map, for every
    channel that reaches people (camelCase: web_push is "webPush")."""
    return _keys(person_channels())


@cache
def _keys(channels: tuple[str, ...]) -> dict[str, str]:
    return {channel: to_camel(channel) for channel in channels}


@dataclass(frozen=True)
class Person:
    id: str
    role: str
    addresses: Mapping[str, str]
    """Channel -> where this person is reached on it, for the channels that reach them."""
    timezone: str
    preferences: dict[str, Any]
    is_staff: bool = False

    def address(self, channel: str) -> str | None:
        return self.addresses.get(channel)


@dataclass(frozen=True)
class Choice:
    channel: str
    status: DeliveryStatus
    reason: str | None = None
    not_before: dt.datetime | None = None


def topic_opt_out(
    preferences: dict[str, Any], channel: str, event_type: str | None, category: str | None
) -> str | None:
    """Why the person's `eventTypes` or `categories` switches turn `channel` off for this
    event, or None. The event type's switch decides when it is set, else the category's."""
    key = preference_keys().get(channel)
    if key is None:
        return None
    if event_type:
        by_type = preferences.get("eventTypes")
        switches = by_type.get(event_type) if isinstance(by_type, dict) else None
        value = switches.get(key) if isinstance(switches, dict) else None
        if value is False:
            return f"preference: {event_type} off on {channel}"
        if value is True:
            return None
    if category:
        by_category = preferences.get("categories")
        switches = by_category.get(category) if isinstance(by_category, dict) else None
        if isinstance(switches, dict) and switches.get(key) is False:
            return f"preference: {category} off on {channel}"
    return None


def candidate_channels(person: Person, priority: str) -> tuple[str, ...]:
    if priority == "critical":
        return _critical(person_channels(), person.is_staff)
    lists = person.preferences.get("priority") or {}
    chosen = lists.get(priority) if isinstance(lists, dict) else None
    if isinstance(chosen, list) and chosen:
        # Keep the person's order; drop duplicates and unknown names.
        return tuple(dict.fromkeys(c for c in chosen if c in person_channels()))
    return DEFAULT_CHANNELS


def select_channels(
    person: Person,
    priority: str,
    now: dt.datetime,
    *,
    narrowed_to: tuple[str, ...] | None = None,
    suppressed: frozenset[str] = frozenset(),
    quiet_policy: str = "defer",
    unavailable: dict[str, str] | None = None,
    batch: bool = False,
    event_type: str | None = None,
    category: str | None = None,
    topic_opt_outs: bool = True,
) -> list[Choice]:
    """One Choice per candidate channel, each queued, deferred, or skipped with a reason.

    `event_type` and `category` are the event's, for the person's per-type and per-category
    switches; `topic_opt_outs` False ignores those switches (a critical event of a tenant
    whose critical events ignore opt-outs). The `channels` switches always hold."""
    opted = person.preferences.get("channels") or {}
    topics = topic_opt_outs and bool(
        person.preferences.get("eventTypes") or person.preferences.get("categories")
    )
    schedule = person.preferences.get("schedule") or {}
    quiet = QuietSchedule.from_preferences(schedule, person.timezone) if schedule else None
    quiet_now = quiet is not None and priority in ("low", "medium") and quiet.is_quiet(now)
    choices: list[Choice] = []
    for channel in candidate_channels(person, priority):
        if narrowed_to is not None and channel not in narrowed_to:
            choices.append(Choice(channel, DeliveryStatus.SKIPPED, "narrowed by metadata.channels"))
        elif unavailable and channel in unavailable:
            choices.append(Choice(channel, DeliveryStatus.SKIPPED, unavailable[channel]))
        elif isinstance(opted, dict) and opted.get(preference_keys()[channel]) is False:
            choices.append(Choice(channel, DeliveryStatus.SKIPPED, "opted out"))
        elif topics and (why := topic_opt_out(person.preferences, channel, event_type, category)):
            choices.append(Choice(channel, DeliveryStatus.SKIPPED, why))
        elif not person.address(channel):
            choices.append(Choice(channel, DeliveryStatus.SKIPPED, "no address"))
        elif channel in suppressed:
            choices.append(Choice(channel, DeliveryStatus.SUPPRESSED, "address suppressed"))
        elif quiet_now and quiet is not None:
            if quiet_policy == "drop":
                choices.append(Choice(channel, DeliveryStatus.SKIPPED, "quiet hours (dropped)"))
            else:
                until = quiet.quiet_until(now)
                choices.append(Choice(channel, DeliveryStatus.DEFERRED, "quiet hours", until))
        elif batch:
            choices.append(Choice(channel, DeliveryStatus.BATCHED, "waiting for a digest"))
        else:
            choices.append(Choice(channel, DeliveryStatus.QUEUED))
    return choices


def fallback_channel(
    person: Person,
    priority: str,
    failed: str,
    taken: set[str],
    *,
    event_type: str | None = None,
    category: str | None = None,
    topic_opt_outs: bool = True,
) -> str | None:
    """Where to try once more after `failed` failed for good: the rest of the person's list
    for the priority, then their other lists (high, medium, low), skipping channels this
    event already used, opted-out channels (for this event's type and category too, as
    select_channels decides them) and channels without an address."""
    lists = person.preferences.get("priority") or {}
    order = list(candidate_channels(person, priority))
    for level in ("high", "medium", "low"):
        extra = lists.get(level) if isinstance(lists, dict) else None
        order.extend(c for c in (extra or []) if c in person_channels())
    opted = person.preferences.get("channels") or {}
    start = order.index(failed) + 1 if failed in order else 0
    for channel in dict.fromkeys(order[start:] + order[:start]):
        if channel in taken or channel == failed or not person.address(channel):
            continue
        if isinstance(opted, dict) and opted.get(preference_keys()[channel]) is False:
            continue
        if topic_opt_outs and topic_opt_out(person.preferences, channel, event_type, category):
            continue
        return channel
    return None

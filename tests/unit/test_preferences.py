"""Preferences by event type and category: their shape (the seed's still valid), how stored
JSON of any age is read, and how selection follows them, with the reason recorded."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from notifier.models import DeliveryStatus
from notifier.preferences import CATEGORIES, Preferences, change_of, clean
from notifier.selection import fallback_channel, select_channels, topic_opt_out
from tests.unit.test_selection import NOON_TAIPEI, PRIORITY_LISTS, make

SEED = {
    "userId": "u1",
    "tenantId": "gym-a",
    "channels": {"line": True, "email": True, "sms": False, "webPush": True},
    "schedule": {
        "quietHours": {"start": "22:00", "end": "08:00"},
        "timezone": "Asia/Taipei",
        "workdays": [True, True, True, True, True, False, False],
    },
    "priority": {"high": ["line", "sms"], "medium": ["line", "email"], "low": ["web_push"]},
}


def reasons(choices: list[Any]) -> dict[str, tuple[str, str | None]]:
    return {c.channel: (c.status.value, c.reason) for c in choices}


def test_the_seeds_preferences_are_valid_and_stored_without_the_ids() -> None:
    stored = Preferences.model_validate(SEED).stored()
    assert stored == {k: v for k, v in SEED.items() if k not in ("userId", "tenantId")}


def test_categories_and_event_types_are_stored_camel_case() -> None:
    raw = {
        "categories": {"MemberActivity": {"webPush": False}},
        "eventTypes": {"member.checked_in": {"line": False}, "payment.failed": {"line": True}},
    }
    assert Preferences.model_validate(raw).stored() == raw


@pytest.mark.parametrize(
    "bad",
    [
        {"categories": {"Marketing": {"line": False}}},
        {"eventTypes": {"member.unknown": {"line": False}}},
        {"eventTypes": {"payment.failed": {"fax": False}}},
        {"channels": {"line": "no"}},
        {"channels": {"web_push": False}},  # camelCase only, as the seed writes it
        {"priority": {"high": ["pigeon"]}},
        {"schedule": {"quietHours": {"start": "25:00", "end": "08:00"}}},
        {"schedule": {"timezone": "Mars/Olympus"}},
        {"schedule": {"workdays": [True, False]}},
        {"colour": "blue"},
    ],
)
def test_invalid_preferences_are_refused(bad: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        Preferences.model_validate(bad)


def test_clean_keeps_what_validates_of_old_free_form_json() -> None:
    old = {"channels": {"sms": False}, "priority": {"high": ["pigeon"]}, "colour": "blue"}
    assert clean(old) == {"channels": {"sms": False}}
    assert clean(None) == {} and clean(["x"]) == {}


def test_five_topic_categories() -> None:
    assert CATEGORIES == (
        "FileProcessing",
        "MemberActivity",
        "CourseManagement",
        "PaymentUpdates",
        "SystemAlerts",
    )


def test_an_event_type_off_on_one_channel_is_skipped_with_the_reason() -> None:
    # The example: no member.checked_in on LINE, payment.failed everywhere.
    prefs = {
        "priority": {"high": ["line", "sms"], "medium": ["line", "email"]},
        "eventTypes": {"member.checked_in": {"line": False}},
    }
    person = make(prefs)
    checked_in = select_channels(
        person, "medium", NOON_TAIPEI, event_type="member.checked_in", category="MemberActivity"
    )
    assert reasons(checked_in) == {
        "line": ("skipped", "preference: member.checked_in off on line"),
        "email": ("queued", None),
    }
    failed = select_channels(
        person, "high", NOON_TAIPEI, event_type="payment.failed", category="PaymentUpdates"
    )
    assert reasons(failed) == {"line": ("queued", None), "sms": ("queued", None)}


def test_a_category_off_and_an_event_type_of_it_back_on() -> None:
    prefs = {
        "priority": PRIORITY_LISTS,
        "categories": {"PaymentUpdates": {"line": False, "email": False}},
        "eventTypes": {"payment.failed": {"line": True}},
    }
    person = make(prefs)
    success = select_channels(
        person, "medium", NOON_TAIPEI, event_type="payment.success", category="PaymentUpdates"
    )
    assert reasons(success) == {
        "line": ("skipped", "preference: PaymentUpdates off on line"),
        "email": ("skipped", "preference: PaymentUpdates off on email"),
    }
    failed = select_channels(
        person, "medium", NOON_TAIPEI, event_type="payment.failed", category="PaymentUpdates"
    )
    assert reasons(failed) == {
        "line": ("queued", None),
        "email": ("skipped", "preference: PaymentUpdates off on email"),
    }
    # Other categories are not touched.
    course = select_channels(
        person, "medium", NOON_TAIPEI, event_type="course.reminder", category="CourseManagement"
    )
    assert {c.status for c in course} == {DeliveryStatus.QUEUED}


def test_the_channel_switch_holds_over_an_event_type_switched_on() -> None:
    prefs = {
        "priority": PRIORITY_LISTS,
        "channels": {"line": False},
        "eventTypes": {"payment.success": {"line": True}},
    }
    choices = select_channels(
        make(prefs), "medium", NOON_TAIPEI, event_type="payment.success", category="PaymentUpdates"
    )
    assert reasons(choices)["line"] == ("skipped", "opted out")


def test_critical_ignores_topic_opt_outs_unless_told_not_to() -> None:
    prefs = {
        "priority": PRIORITY_LISTS,
        "categories": {"FileProcessing": {"email": False}},
        "channels": {"sms": False},
    }
    person = make(prefs)
    args: dict[str, Any] = {"event_type": "file.virus_detected", "category": "FileProcessing"}
    # What the pipeline passes for a critical event of a tenant whose critical events
    # ignore opt-outs (the default)...
    ignoring = reasons(
        select_channels(person, "critical", NOON_TAIPEI, topic_opt_outs=False, **args)
    )
    assert ignoring["email"] == ("queued", None)
    assert ignoring["sms"] == ("skipped", "opted out")  # the channel switch still holds
    # ...and for one whose tenant set criticalIgnoresOptOuts to false.
    respecting = reasons(
        select_channels(person, "critical", NOON_TAIPEI, topic_opt_outs=True, **args)
    )
    assert respecting["email"] == ("skipped", "preference: FileProcessing off on email")


def test_fallback_skips_a_channel_turned_off_for_the_event() -> None:
    prefs = {
        "priority": {"high": ["line", "email", "sms"]},
        "eventTypes": {"payment.failed": {"email": False}},
    }
    person = make(prefs)
    kwargs: dict[str, Any] = {"event_type": "payment.failed", "category": "PaymentUpdates"}
    assert fallback_channel(person, "high", "line", {"line"}, **kwargs) == "sms"
    assert fallback_channel(person, "high", "line", {"line"}) == "email"


def test_topic_opt_out_ignores_unknown_shapes() -> None:
    assert topic_opt_out({"eventTypes": ["x"]}, "line", "payment.failed", "PaymentUpdates") is None
    assert (
        topic_opt_out({"categories": {"PaymentUpdates": 1}}, "line", None, "PaymentUpdates") is None
    )
    assert topic_opt_out({}, "topic", "payment.failed", "PaymentUpdates") is None


def test_a_change_is_only_a_change_when_the_preferences_differ() -> None:
    assert (
        change_of("t", "u", {"channels": {"sms": False}}, {"channels": {"sms": False}}, "api")
        is None
    )
    change = change_of("t", "u", {}, {"channels": {"sms": False}}, "api")
    assert change is not None and change.preferences == {"channels": {"sms": False}}


def test_a_cut_sms_keeps_the_preference_line_whole() -> None:
    from channels.sms import fit_sms, sms_parts

    keep = "\nNotification settings: https://n.example/p/WyJneW0tYSIsInUxIiwyMDg0OV0.1wpYM2j"
    cut = fit_sms("x" * 1000, 2, keep)
    assert cut.endswith("..." + keep) and sms_parts(cut) <= 2
    assert fit_sms("short", 2, keep) == "short" + keep
    zh = fit_sms("會" * 500, 3, "\n通知設定：https://n.example/p/abc")
    assert zh.endswith("…\n通知設定：https://n.example/p/abc") and sms_parts(zh) <= 3


def test_preference_tokens_are_short_signed_and_carry_their_expiry() -> None:
    from notifier.signing import BadSignature, preference_token, verify_preference_token

    token = preference_token("gym-taipei-01", "u-123", 20500)
    assert len(token) < 80
    assert verify_preference_token(token) == ("gym-taipei-01", "u-123", 20500)
    body, mac = token.split(".")
    for bad in (f"{body}.{mac[:-1]}", f"{body}x.{mac}", token.replace(".", ""), "", "a.b"):
        with pytest.raises(BadSignature):
            verify_preference_token(bad)
    from notifier.signing import sign

    with pytest.raises(BadSignature):  # a token signed for another purpose
        verify_preference_token(sign({"t": "gym-a"}, "unsubscribe"))

"""The message templates: every (event type, channel, locale) renders, escapes and falls back."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from channels.registry import channel_names, declaration
from notifier import rendering
from tests.unit.samples import SAMPLE_DATA

EVENT_TYPES = (
    "file.uploaded",
    "file.processed",
    "file.virus_detected",
    "member.registered",
    "member.checked_in",
    "member.membership_expiring",
    "course.booking_confirmed",
    "course.cancelled",
    "course.reminder",
    "payment.success",
    "payment.failed",
    "invoice.generated",
    "system.backup_completed",
    "system.maintenance",
)
LOCALES = ("en", "zh-TW")
CHANNELS = channel_names()
# The optional data fields (docs/events.md), per event type.
OPTIONAL_FIELDS: dict[str, str] = {
    "file.processed": "downloadUrl",
    "member.checked_in": "location",
    "course.cancelled": "reason",
    "payment.success": "description",
    "payment.failed": "retryUrl",
}
BRAND = "Kyo Gym"
SCRIPT = "<script>alert(1)</script>"

# A value from the sample data that every rendered message (subject + text) must mention.
KEY_VALUES: dict[str, str] = {
    "file.uploaded": SAMPLE_DATA["file.uploaded"]["fileName"],
    "file.processed": SAMPLE_DATA["file.processed"]["fileName"],
    "file.virus_detected": SAMPLE_DATA["file.virus_detected"]["fileName"],
    "member.registered": SAMPLE_DATA["member.registered"]["memberName"],
    "member.checked_in": SAMPLE_DATA["member.checked_in"]["memberName"],
    "member.membership_expiring": SAMPLE_DATA["member.membership_expiring"]["membershipType"],
    "course.booking_confirmed": SAMPLE_DATA["course.booking_confirmed"]["courseName"],
    "course.cancelled": SAMPLE_DATA["course.cancelled"]["courseName"],
    "course.reminder": SAMPLE_DATA["course.reminder"]["courseName"],
    "payment.success": "1,200",  # amount "1200.00" TWD, formatted by the money filter
    "payment.failed": "1,200",
    "invoice.generated": SAMPLE_DATA["invoice.generated"]["invoiceNumber"],
    "system.backup_completed": SAMPLE_DATA["system.backup_completed"]["backupId"],
    "system.maintenance": "02:00",  # startsAt 18:00 UTC shown in Asia/Taipei
}


def context(
    event_type: str,
    locale: str = "en",
    data: dict[str, Any] | None = None,
    *,
    name: str | None = "Amy",
    timezone: str = "Asia/Taipei",
    branding: dict[str, Any] | None = None,
    unsubscribe: str | None = "https://kyo.app/unsubscribe?token=abc&u=u-123",
) -> dict[str, Any]:
    return {
        "data": copy.deepcopy(SAMPLE_DATA[event_type]) if data is None else data,
        "event": {
            "id": "evt-1",
            "type": event_type,
            "priority": "medium",
            "timestamp": "2026-11-22T09:00:00+08:00",
            "source": "kyo.tests",
        },
        "recipient": {"id": "u-123", "name": name, "locale": locale, "timezone": timezone},
        "tenant": {
            "id": "gym-a",
            "name": "Kyo Gym A",
            "locale": "zh-TW",
            "timezone": "Asia/Taipei",
        },
        "brand": rendering.brand(branding),
        "links": {"unsubscribe": unsubscribe},
    }


def render(event_type: str, channel: str, locale: str, **kwargs: Any) -> rendering.Rendered:
    return rendering.render(event_type, channel, [locale], context(event_type, locale, **kwargs))


def test_samples_cover_the_fourteen_event_types() -> None:
    assert set(SAMPLE_DATA) == set(EVENT_TYPES)
    assert set(KEY_VALUES) == set(EVENT_TYPES)


def test_every_template_file_exists() -> None:
    missing = [
        name
        for locale in LOCALES
        for event_type in EVENT_TYPES
        for channel in CHANNELS
        for part in declaration(channel).template_parts
        if not (
            rendering.TEMPLATE_DIR
            / (name := rendering.template_name(locale, event_type, channel, part))
        ).is_file()
    ]
    assert missing == []


@pytest.mark.parametrize("locale", LOCALES)
@pytest.mark.parametrize("channel", CHANNELS)
@pytest.mark.parametrize("event_type", EVENT_TYPES)
def test_renders_every_part(event_type: str, channel: str, locale: str) -> None:
    rendered = render(event_type, channel, locale)

    assert rendered.locale == locale
    assert rendered.text
    if {"subject", "title"} & set(declaration(channel).template_parts):
        assert rendered.subject
    assert "\n" not in rendered.subject
    assert KEY_VALUES[event_type] in rendered.subject + "\n" + rendered.text
    assert "None" not in rendered.subject + rendered.text

    if channel == "email":
        assert rendered.html is not None
        assert rendered.html.startswith("<!DOCTYPE html>")
        assert BRAND in rendered.html
        assert "max-width:600px" in rendered.html
        assert KEY_VALUES[event_type] in rendered.html
        assert "support@kyo.app" in rendered.html and "support@kyo.app" in rendered.text
        assert 'href="https://kyo.app/unsubscribe?token=abc&amp;u=u-123"' in rendered.html
    else:
        assert rendered.html is None
    if channel == "line":
        assert len(rendered.text) <= 5000
    if channel == "sms":
        assert BRAND in rendered.text
        assert "\n" not in rendered.text
        assert len(rendered.text) <= (70 if locale == "zh-TW" else 160), rendered.text
    if channel == "topic":
        assert len(rendered.subject) <= 100
        assert "\n" not in rendered.text
        if locale == "en":
            assert rendered.subject.isascii(), rendered.subject


@pytest.mark.parametrize(
    "event_type", ["member.membership_expiring", "course.reminder", "payment.failed"]
)
def test_zh_tw_sms_fits_one_segment(event_type: str) -> None:
    text = render(event_type, "sms", "zh-TW").text
    assert len(text) <= 70, text
    assert all(ord(ch) <= 0xFFFF for ch in text)  # UCS-2: no emoji in SMS
    assert f"【{BRAND}】" in text


@pytest.mark.parametrize("channel", CHANNELS)
@pytest.mark.parametrize("event_type", EVENT_TYPES)
def test_zh_tw_and_en_differ(event_type: str, channel: str) -> None:
    en = render(event_type, channel, "en")
    zh = render(event_type, channel, "zh-TW")
    assert (en.subject, en.text) != (zh.subject, zh.text)
    assert en.text != zh.text
    if channel == "email":
        assert en.html != zh.html
        assert '<html lang="en">' in (en.html or "")
        assert '<html lang="zh-TW">' in (zh.html or "")


@pytest.mark.parametrize("locale", LOCALES)
@pytest.mark.parametrize(
    "event_type", ["member.registered", "member.checked_in", "member.membership_expiring"]
)
def test_member_name_is_escaped_in_email_html(event_type: str, locale: str) -> None:
    data = {**SAMPLE_DATA[event_type], "memberName": SCRIPT}
    rendered = render(event_type, "email", locale, data=data)
    assert rendered.html is not None
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in rendered.html
    assert "<script" not in rendered.html
    assert SCRIPT in rendered.text  # plain text is not HTML: shown as is


@pytest.mark.parametrize("locale", LOCALES)
@pytest.mark.parametrize("event_type", EVENT_TYPES)
def test_no_data_field_or_brand_value_reaches_html_unescaped(event_type: str, locale: str) -> None:
    hostile = {
        key: SCRIPT if isinstance(value, str) else value
        for key, value in SAMPLE_DATA[event_type].items()
    }
    if event_type == "file.processed":
        hostile["status"] = "completed"
    branding = {
        "name": SCRIPT,
        "color": "red;background:url(javascript:alert(1))",
        "logo_url": 'javascript:alert(1)"',
        "support_email": SCRIPT,
        "website_url": 'https://kyo.app/"><script>',
    }
    rendered = render(
        event_type,
        "email",
        locale,
        data=hostile,
        branding=branding,
        unsubscribe='https://kyo.app/u?"><script>',
    )
    html = rendered.html or ""
    assert "<script" not in html
    assert "javascript:" not in html
    assert "&lt;script&gt;" in html
    assert "background-color:#1DBF73" in html  # an invalid brand colour falls back


def test_unsubscribe_link_and_logo_only_when_set() -> None:
    plain = render("member.registered", "email", "en", unsubscribe=None)
    assert plain.html is not None
    assert "Unsubscribe" not in plain.html and "Unsubscribe" not in plain.text
    assert "<img" not in plain.html

    branded = render(
        "member.registered",
        "email",
        "zh-TW",
        branding={"name": "鐵人健身", "color": "#FF6600", "logo_url": "https://cdn.kyo.app/l.png"},
    )
    assert branded.html is not None
    assert "取消訂閱" in branded.html and "取消訂閱" in branded.text
    assert '<img src="https://cdn.kyo.app/l.png"' in branded.html
    assert "background-color:#FF6600" in branded.html
    assert "鐵人健身" in branded.html


@pytest.mark.parametrize("channel", CHANNELS)
@pytest.mark.parametrize("locale", LOCALES)
@pytest.mark.parametrize("event_type", sorted(OPTIONAL_FIELDS))
def test_optional_fields_may_be_absent_or_none(event_type: str, locale: str, channel: str) -> None:
    field = OPTIONAL_FIELDS[event_type]
    absent = {k: v for k, v in SAMPLE_DATA[event_type].items() if k != field}
    for data in (absent, {**absent, field: None}):
        rendered = render(event_type, channel, locale, data=copy.deepcopy(data))
        assert rendered.text
        assert KEY_VALUES[event_type] in rendered.subject + rendered.text
        assert "None" not in rendered.subject + rendered.text + (rendered.html or "")


@pytest.mark.parametrize("channel", CHANNELS)
def test_file_processed_failure_reads_as_a_failure(channel: str) -> None:
    data = {**SAMPLE_DATA["file.processed"], "status": "failed", "downloadUrl": None}
    en = render("file.processed", channel, "en", data=data)
    zh = render("file.processed", channel, "zh-TW", data=data)
    assert "fail" in (en.subject + en.text).lower()
    assert "失敗" in zh.subject + zh.text


def test_membership_days_left_wording() -> None:
    def text(days: int, locale: str) -> str:
        data = {**SAMPLE_DATA["member.membership_expiring"], "daysLeft": days}
        return render("member.membership_expiring", "line", locale, data=data).text

    assert "expires in 7 days" in text(7, "en")
    assert "expires tomorrow" in text(1, "en")
    assert "expires today" in text(0, "en")
    assert "將於 7 天後到期" in text(7, "zh-TW")
    assert "將於明天到期" in text(1, "zh-TW")
    assert "將於今天到期" in text(0, "zh-TW")
    assert "到期日期：2026/11/29" in text(7, "zh-TW")


def test_times_are_shown_in_the_recipients_timezone() -> None:
    taipei = render("course.reminder", "line", "zh-TW").text
    assert "2026/11/23（一）19:00" in taipei
    london = render("course.reminder", "line", "en", timezone="Europe/London").text
    assert "Mon 23 Nov 2026, 11:00" in london


def test_slack_text_escapes_control_characters() -> None:
    data = {**SAMPLE_DATA["member.registered"], "memberName": "<!channel> & Co"}
    rendered = render("member.registered", "slack", "en", data=data)
    assert "&lt;!channel&gt; &amp; Co" in rendered.text
    assert "<!channel>" not in rendered.text


def test_greeting_without_a_recipient_name() -> None:
    assert render("payment.success", "email", "en", name=None).text.startswith("Hello,")
    assert render("payment.success", "email", "zh-TW", name=None).text.startswith("您好：")


@pytest.mark.parametrize("channel", CHANNELS)
def test_locale_fallback(channel: str) -> None:
    ctx = context("course.reminder", "zh_tw")
    assert rendering.render("course.reminder", channel, ["zh_tw"], ctx).locale == "zh-TW"
    assert rendering.render("course.reminder", channel, ["fr"], ctx).locale == "en"
    assert rendering.render("course.reminder", channel, [None, "fr"], ctx).locale == "en"
    # the person's locale first, then the tenant's
    assert rendering.render("course.reminder", channel, ["fr", "zh-TW"], ctx).locale == "zh-TW"


def test_missing_event_type_names_the_template() -> None:
    ctx = context("member.registered", "zh-TW")
    with pytest.raises(rendering.TemplateProblem) as exc:
        rendering.render("member.no_such_event", "email", ["zh-TW"], ctx)
    assert exc.value.template == "zh-TW/member.no_such_event/email.subject.j2"
    assert "zh-TW/member.no_such_event/email.subject.j2" in str(exc.value)


def test_missing_data_field_names_the_template() -> None:
    data = {k: v for k, v in SAMPLE_DATA["course.reminder"].items() if k != "courseName"}
    with pytest.raises(rendering.TemplateProblem) as exc:
        render("course.reminder", "sms", "en", data=data)
    assert "en/course.reminder/sms.txt.j2" in str(exc.value)


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("zh_tw", "zh-TW"),
        ("zh-Hant-TW", "zh-TW"),
        ("zh_TW.UTF-8", "zh-TW"),
        ("zh-HK", "zh-TW"),
        ("EN", "en"),
        ("en-us", "en-US"),
        ("", None),
        (None, None),
    ],
)
def test_locale_spellings_are_normalized(given: str | None, expected: str | None) -> None:
    assert rendering.normalize_locale(given) == expected


@pytest.mark.parametrize("channel", CHANNELS)
def test_digest_counts_read_as_english_plurals(channel: str) -> None:
    if "digest" not in {p.parent.name for p in rendering.TEMPLATE_DIR.glob(f"en/*/{channel}.*")}:
        pytest.skip(f"no digest template for {channel}")

    def words(count: int) -> str:
        ctx = context("member.checked_in")
        item = {"summary": "Checked in", "type": "member.checked_in", "timestamp": None}
        ctx.update(items=[item] * count, count=count)
        rendered = rendering.render("digest", channel, ["en"], ctx)
        return " ".join([rendered.subject, rendered.text, rendered.html or ""])

    assert "1 updates" not in words(1)
    assert "1 update" in words(1)
    assert "3 updates" in words(3)


def test_spots_left_reads_as_an_english_plural() -> None:
    one = {**SAMPLE_DATA["course.reminder"], "remainingSlots": 1}
    assert "1 spot left" in render("course.reminder", "slack", "en", data=one).text
    assert "1 spots" not in render("course.reminder", "topic", "en", data=one).text
    two = {**SAMPLE_DATA["course.reminder"], "remainingSlots": 2}
    assert "2 spots left" in render("course.reminder", "slack", "en", data=two).text

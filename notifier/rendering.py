"""Jinja2 rendering of one message per (event type, channel, locale).

Templates live in notifier/templates/<locale>/<event_type>/<channel>.<part>.j2, with the
parts the channel declares (`Channel.template_parts`, `optional_parts`). HTML parts are
autoescaped; a missing or broken template raises TemplateProblem naming the file.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from functools import lru_cache
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import jinja2

from channels.registry import declaration

TEMPLATE_DIR = Path(__file__).parent / "templates"
DEFAULT_LOCALE = "en"
DEFAULT_BRAND = {
    "name": "Kyo Gym",
    "color": "#1DBF73",
    "logo_url": "",
    "support_email": "support@kyo.app",
    "website_url": "https://kyo.app",
}


class TemplateProblem(Exception):
    """A template is missing or cannot be rendered; `template` names it."""

    def __init__(self, template: str, message: str):
        self.template = template
        super().__init__(f"template {template}: {message}")


@dataclass(frozen=True)
class Rendered:
    """A rendered message: subject/title, plain text, optional HTML."""

    locale: str
    subject: str = ""
    text: str = ""
    html: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def normalize_locale(value: str | None) -> str | None:
    """'zh_tw', 'zh-Hant-TW', 'zh-HK', 'zh_TW.UTF-8' -> 'zh-TW'; 'EN' -> 'en'."""
    if not value:
        return None
    parts = value.split(".", 1)[0].replace("_", "-").split("-")
    language = parts[0].lower()
    if len(parts) == 1:
        return language
    if language == "zh" and parts[1].lower() in ("hant", "tw", "hk", "mo"):
        return "zh-TW"  # the Traditional Chinese templates
    return f"{language}-{parts[1].upper()}"


def _parse_dt(value: Any) -> dt.datetime:
    if isinstance(value, dt.datetime):
        return value
    return dt.datetime.fromisoformat(str(value))


def _localdt(value: Any, tz: str = "UTC", fmt: str = "%Y-%m-%d %H:%M") -> str:
    try:
        moment = _parse_dt(value)
    except ValueError:
        return str(value)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return moment.astimezone(ZoneInfo(tz)).strftime(fmt)


def _localdate(value: Any, fmt: str = "%Y-%m-%d") -> str:
    try:
        return dt.date.fromisoformat(str(value)[:10]).strftime(fmt)
    except ValueError:
        return str(value)


def _money(amount: Any, currency: str = "") -> str:
    try:
        number = Decimal(str(amount))
    except InvalidOperation:
        return f"{amount} {currency}".strip()
    text = f"{number:,.0f}" if number == number.to_integral_value() else f"{number:,.2f}"
    return f"{currency} {text}".strip()


def _filesize(value: Any) -> str:
    try:
        size = float(value)
    except (TypeError, ValueError):
        return str(value)
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return str(value)


LINK_TRACKER = "track_link"
"""Context key of the callable that turns a link the template prints into a tracked one."""


@jinja2.pass_context
def _track(context: jinja2.runtime.Context, url: Any) -> Any:
    """`track(url)` in templates: the message's link tracker applied to a link the template
    produces (the message is sent on a channel that tracks clicks), else `url` unchanged."""
    tracker = context.get(LINK_TRACKER)
    return tracker(url) if tracker is not None and isinstance(url, str) else url


@lru_cache(maxsize=1)
def environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(TEMPLATE_DIR)),
        autoescape=jinja2.select_autoescape(
            enabled_extensions=("html", "html.j2"), default_for_string=False, default=False
        ),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=False,
        # The templates ship with the code and change only with a deploy (which restarts
        # the workers): no stat() of every template file on every message.
        auto_reload=False,
    )
    env.filters.update(localdt=_localdt, localdate=_localdate, money=_money, filesize=_filesize)
    env.globals["track"] = _track
    return env


def template_name(locale: str, event_type: str, channel: str, part: str) -> str:
    extension = "html.j2" if part == "html" else f"{part}.j2"
    return f"{locale}/{event_type}/{channel}.{extension}"


def choose_locale(event_type: str, channel: str, candidates: list[str | None]) -> str:
    """The first of the person's, the tenant's and the default locale that has templates."""
    env = environment()
    first_part = declaration(channel).template_parts[0]
    tried: list[str] = []
    for candidate in [*candidates, DEFAULT_LOCALE]:
        locale = normalize_locale(candidate)
        if not locale or locale in tried:
            continue
        tried.append(locale)
        try:
            env.get_template(template_name(locale, event_type, channel, first_part))
        except jinja2.TemplateNotFound:
            continue
        except jinja2.TemplateError:
            return locale  # exists but broken: render() reports it with its name
        return locale
    name = template_name(tried[0] if tried else DEFAULT_LOCALE, event_type, channel, first_part)
    raise TemplateProblem(name, f"not found (locales tried: {', '.join(tried)})")


def _problem(exc: Exception) -> str:
    """What went wrong, short: the message may quote data, and it ends up in a status."""
    return f"{type(exc).__name__}: {str(exc)[:200]}"


def render(
    event_type: str, channel: str, locales: list[str | None], context: dict[str, Any]
) -> Rendered:
    """Render every part the channel needs, in the first locale that has them."""
    locale = choose_locale(event_type, channel, locales)
    env = environment()
    declared = declaration(channel)
    parts: dict[str, str] = {}
    for part in declared.template_parts:
        name = template_name(locale, event_type, channel, part)
        try:
            parts[part] = env.get_template(name).render(context).strip()
        except jinja2.TemplateNotFound as exc:
            raise TemplateProblem(name, "not found") from exc
        except Exception as exc:  # any error, OverflowError too: it fails this message only
            raise TemplateProblem(name, _problem(exc)) from exc
    extra: dict[str, Any] = {}
    for part in declared.optional_parts:
        name = template_name(locale, event_type, channel, part)
        try:
            source = env.get_template(name).render(context)
        except jinja2.TemplateNotFound:
            continue
        except Exception as exc:
            raise TemplateProblem(name, _problem(exc)) from exc
        try:
            extra[part] = json.loads(source)
        except ValueError as exc:
            raise TemplateProblem(name, f"renders invalid JSON: {exc}") from exc
    return Rendered(
        locale=locale,
        subject=parts.get("subject") or parts.get("title", ""),
        text=parts.get("txt", ""),
        html=parts.get("html"),
        extra=extra,
    )


def brand(branding: dict[str, Any] | None) -> dict[str, Any]:
    return {**DEFAULT_BRAND, **(branding or {})}

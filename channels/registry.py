"""Which Channel object sends for a channel name, by the configured backend."""

from __future__ import annotations

import importlib
import os
from functools import cache

from channels.base import Channel, PermanentChannelError
from channels.outbox import OutboxChannel
from config.settings import get_settings

# (channel, backend) -> "module:Class" of the real backends; the outbox serves every channel.
REAL_BACKENDS: dict[tuple[str, str], str] = {
    ("line", "line"): "channels.line:LineChannel",
    ("email", "ses"): "channels.email:SesEmailChannel",
    ("email", "smtp"): "channels.email:SmtpEmailChannel",
    ("sms", "sns"): "channels.sms:SnsSmsChannel",
    ("web_push", "webpush"): "channels.web_push:WebPushChannel",
    ("slack", "slack"): "channels.slack:SlackChannel",
    ("topic", "sns"): "channels.topic:SnsTopicChannel",
}
# What a real backend cannot work without (tenant-level credentials are checked apart).
REQUIRED_SETTINGS: dict[tuple[str, str], tuple[str, ...]] = {
    ("email", "smtp"): ("SMTP_HOST",),
    ("web_push", "webpush"): ("VAPID_PRIVATE_KEY",),
}


@cache
def _build(channel: str, backend: str) -> Channel:
    if backend == "outbox":
        return OutboxChannel(channel)
    target = REAL_BACKENDS.get((channel, backend))
    if target is None:
        raise PermanentChannelError(
            f"no backend {backend!r} for channel {channel!r}", channel=channel
        )
    module_name, class_name = target.split(":")
    cls = getattr(importlib.import_module(module_name), class_name)
    instance: Channel = cls()
    return instance


def get_channel(channel: str) -> Channel:
    return _build(channel, get_settings().backends.get(channel, "outbox"))


def not_configured(channel: str, tenant_line_token: str | None, category: str) -> str | None:
    """Why `channel` cannot send for this tenant with its configured backend, or None.

    Channel selection skips such a channel instead of failing every delivery on it."""
    backend = get_settings().backends.get(channel, "outbox")
    if backend == "outbox":
        return None
    if (channel, backend) not in REAL_BACKENDS:
        return f"channel not configured: no backend {backend!r} for {channel}"
    missing = [
        name for name in REQUIRED_SETTINGS.get((channel, backend), ()) if not os.environ.get(name)
    ]
    if (channel, backend) == ("line", "line") and not (
        tenant_line_token or os.environ.get("LINE_CHANNEL_ACCESS_TOKEN")
    ):
        missing.append("LINE_CHANNEL_ACCESS_TOKEN")
    topic_arn = f"NOTIFIER_TOPIC_ARN_{category.upper()}"
    if (channel, backend) == ("topic", "sns") and not os.environ.get(topic_arn):
        missing.append(topic_arn)
    return f"channel not configured: {', '.join(missing)} unset" if missing else None


def available_backends() -> dict[str, str]:
    """The backend each channel will use, as shown by `notifier dev` at start-up."""
    return dict(get_settings().backends)


def reset_channels() -> None:
    _build.cache_clear()

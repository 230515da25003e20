"""Which Channel object sends for a channel name, by the configured backend."""

from __future__ import annotations

import importlib
from functools import cache

from channels.base import Channel, PermanentChannelError
from channels.outbox import OutboxChannel
from config.settings import get_settings

# (channel, backend) -> "module:Class" of the real backends; the outbox serves every channel.
REAL_BACKENDS: dict[tuple[str, str], str] = {}


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


def available_backends() -> dict[str, str]:
    """The backend each channel will use, as shown by `notifier dev` at start-up."""
    return dict(get_settings().backends)


def reset_channels() -> None:
    _build.cache_clear()

"""The channels: one module per channel in this package, found by name, and the Channel
object that sends for a channel with its configured backend.

Each module `channels/<name>.py` declares the channel `<name>` (a Channel subclass with that
name) and its backends (subclasses of it with a `backend`), so adding a channel is adding
its module (docs/adding-a-channel.md): CHANNELS, the event schema's channel list, the send
tasks and the configuration page all come from here. The names are read from the package's
files, without importing the modules (their provider SDKs load when a channel is used).
"""

from __future__ import annotations

import importlib
import os
import pkgutil
from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING

import channels
from channels.base import Channel, PermanentChannelError

if TYPE_CHECKING:
    from notifier.models import Tenant

SUPPORT_MODULES = frozenset({"aws", "base", "outbox", "registry"})
"""Modules of this package that are not a channel."""
OUTBOX = "outbox"


@dataclass(frozen=True)
class Declared:
    """A channel module's declarations: the channel class and its backends, in the order
    the module defines them (the first whose credentials are set is the default)."""

    channel: type[Channel]
    backends: dict[str, type[Channel]]


_registered: dict[str, Declared] = {}


@cache
def _package_channels() -> tuple[str, ...]:
    """The channel modules of this package, listed once per process (the send path asks for
    every message: listing the directory each time cost more than rendering the message)."""
    return tuple(
        sorted(
            module.name
            for module in pkgutil.iter_modules(channels.__path__)
            if module.name not in SUPPORT_MODULES and not module.name.startswith("_")
        )
    )


def channel_names() -> tuple[str, ...]:
    """Every channel: the channel modules of this package, then any registered ones."""
    found = _package_channels()
    if not _registered:
        return found
    return (*found, *(name for name in _registered if name not in found))


@cache
def person_channels() -> tuple[str, ...]:
    """The channels that reach people (every channel but the topics)."""
    return tuple(name for name, _ in person_declarations())


@cache
def person_declarations() -> tuple[tuple[str, type[Channel]], ...]:
    """(name, declaring class) of every channel that reaches people, looked up once (the
    planner asks for each person of a page)."""
    found = ((name, declaration(name)) for name in channel_names())
    return tuple((name, cls) for name, cls in found if cls.audience != "topic")


@cache
def _module_declarations(name: str) -> Declared:
    module = importlib.import_module(f"channels.{name}")
    mine = [
        value
        for value in vars(module).values()
        if isinstance(value, type)
        and issubclass(value, Channel)
        and value.__module__ == module.__name__
        and value.name == name
    ]
    roots = [cls for cls in mine if not any(base in mine for base in cls.__mro__[1:])]
    if len(roots) != 1:
        raise LookupError(f"channels/{name}.py must declare the {name!r} channel in one class")
    return Declared(roots[0], {cls.backend: cls for cls in mine if cls.backend})


def declared(name: str) -> Declared:
    if name in _registered:
        return _registered[name]
    if name not in channel_names():
        raise LookupError(f"no channel {name!r}")
    return _module_declarations(name)


def declaration(name: str) -> type[Channel]:
    """The class that declares channel `name`: its facts, whatever backend sends it."""
    return declared(name).channel


def register(channel: type[Channel], *backends: type[Channel]) -> None:
    """Add a channel declared outside this package (a plugin, a test)."""
    _registered[channel.name] = Declared(channel, {cls.backend: cls for cls in backends})
    _forget()


def unregister(name: str) -> None:
    _registered.pop(name, None)
    _forget()


def _forget() -> None:
    person_channels.cache_clear()
    person_declarations.cache_clear()
    reset_channels()


def default_backend(name: str) -> str:
    """The first backend of the channel whose credentials the environment holds, else the
    outbox."""
    environ = dict(os.environ)
    for backend, cls in declared(name).backends.items():
        if cls.uses_credentials_of(environ):
            return backend
    return OUTBOX


def backend_name(channel: str) -> str:
    from config.settings import get_settings

    return get_settings().backends.get(channel, OUTBOX)


@cache
def _build(channel: str, backend: str) -> Channel:
    if backend == OUTBOX:
        from channels.outbox import OutboxChannel

        return OutboxChannel(declaration(channel))
    cls = declared(channel).backends.get(backend)
    if cls is None:
        raise PermanentChannelError(
            f"no backend {backend!r} for channel {channel!r}", channel=channel
        )
    return cls()


def get_channel(channel: str) -> Channel:
    """The channel's backend object, built once with its settings (reset_channels()
    builds it again, after the environment changed)."""
    return _build(channel, backend_name(channel))


def not_configured(channel: str, tenant: Tenant, category: str) -> str | None:
    """Why `channel` cannot send for this tenant with its configured backend, or None.

    Channel selection skips such a channel instead of failing every delivery on it."""
    backend = backend_name(channel)
    if backend != OUTBOX and backend not in declared(channel).backends:
        return f"channel not configured: no backend {backend!r} for {channel}"
    return get_channel(channel).unavailable(tenant, category)


def available_backends() -> dict[str, str]:
    """The backend each channel will use, as shown by `notifier dev` at start-up."""
    return {name: backend_name(name) for name in channel_names()}


def reset_channels() -> None:
    _build.cache_clear()

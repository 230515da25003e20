"""channels/registry.py: every module of channels/ but the support modules is a channel that
declares itself, and reading the channels' facts loads no provider SDK."""

from __future__ import annotations

import subprocess
import sys

import pytest

from channels.base import Channel
from channels.registry import channel_names, declared
from config.settings import CHANNELS


@pytest.mark.parametrize("name", channel_names())
def test_each_channel_module_declares_its_channel_and_backends(name: str) -> None:
    found = declared(name)
    assert found.channel.name == name
    assert all(issubclass(cls, found.channel) for cls in found.backends.values())
    assert all(cls.backend == backend for backend, cls in found.backends.items())
    assert issubclass(found.channel, Channel) and found.channel.template_parts


def test_channels_are_the_registry_s() -> None:
    assert channel_names() == CHANNELS
    assert set(CHANNELS) == {"email", "line", "sms", "web_push", "slack", "topic"}


def test_the_channels_facts_load_no_provider_sdk() -> None:
    """The web app, the CLI and `publish()` read the channel list, the settings (the default
    backends), the configuration page and every channel's facts; LINE's SDK (the slowest
    import of all), pywebpush and phonenumbers load when a channel first sends."""
    probe = (
        "import sys\n"
        "import notifier, notifier.directory\n"
        "from config import settings\n"
        "from channels.registry import channel_names, declaration\n"
        "settings.get_settings().backends, settings.VARIABLES\n"
        "[declaration(name).template_parts for name in channel_names()]\n"
        "heavy = ('linebot', 'pywebpush', 'py_vapid', 'phonenumbers')\n"
        "print(sorted({m.split('.')[0] for m in sys.modules if m.startswith(heavy)}))\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "[]"

"""Every channel's local peer at once, and the real backends pointed at them: LINE at the
LINE stand-in, email over SMTP, SMS and the topics at moto's SNS, Web Push at a push service
that decrypts, Slack at the Slack stand-in."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import boto3
import pytest

from channels import registry
from config.settings import TOPIC_CATEGORIES, get_settings
from tests.peers.line import LinePeer
from tests.peers.moto import MotoPeer
from tests.peers.push import PushService, vapid_keys
from tests.peers.slack import SlackWebhook
from tests.peers.smtp import SmtpPeer

VAPID_SUBJECT = "mailto:ops@example.com"
VAPID_PRIVATE, VAPID_PUBLIC, _ = vapid_keys()
REAL_BACKENDS = {
    "line": "line",
    "email": "smtp",
    "sms": "sns",
    "web_push": "webpush",
    "slack": "slack",
    "topic": "sns",
}


@contextmanager
def every_peer(line_token: str) -> Iterator[dict[str, Any]]:
    """The running peers by name: line, smtp, moto, push, slack."""
    line = LinePeer(tokens={line_token}).start()
    smtp = SmtpPeer().start()
    moto = MotoPeer().start()
    push = PushService(subject=VAPID_SUBJECT, vapid_public_key=VAPID_PUBLIC).start()
    slack = SlackWebhook().start()
    try:
        yield {"line": line, "smtp": smtp, "moto": moto, "push": push, "slack": slack}
    finally:
        for peer in (line, smtp, moto, push, slack):
            peer.stop()


def use_real_backends(
    peers: dict[str, Any], monkeypatch: pytest.MonkeyPatch, line_token: str
) -> dict[str, str]:
    """Reset the peers and send every channel through its real backend to them; the
    topic ARN of each category."""
    for name in ("smtp", "moto", "push", "slack"):
        peers[name].reset()
    peers["line"].reset(tokens={line_token})
    for name, value in {**peers["moto"].env(), **peers["smtp"].env()}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("LINE_API_BASE_URL", peers["line"].url)
    monkeypatch.setenv("VAPID_PRIVATE_KEY", VAPID_PRIVATE)
    monkeypatch.setenv("VAPID_SUBJECT", VAPID_SUBJECT)
    sns = boto3.client("sns")
    arns: dict[str, str] = {}
    for category in TOPIC_CATEGORIES:
        arns[category] = sns.create_topic(Name=f"notifier-{category}")["TopicArn"]
        monkeypatch.setenv(f"NOTIFIER_TOPIC_ARN_{category.upper()}", arns[category])
    for channel, backend in REAL_BACKENDS.items():
        monkeypatch.setitem(get_settings().backends, channel, backend)
    registry.reset_channels()
    return arns

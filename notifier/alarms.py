"""Alarms for the operators: an SNS alarm topic and/or the ops Slack webhook, rate limited.

The seed's AlarmService (severity INFO / WARNING / ERROR / CRITICAL, a source, a message,
details), with what an outage needs: the same alarm key is published at most once per
NOTIFIER_ALARM_WINDOW seconds across every worker (Redis SET NX EX on the broker's Redis),
and the repeats held back are counted, so the next alarm of that key says "and N more".

Targets, each optional: NOTIFIER_ALARM_TOPIC_ARN (SNS publish) and
NOTIFIER_ALARM_SLACK_WEBHOOK_URL (the ops channel's incoming webhook). An alarm carries ids,
counts and reasons, never a message body or an address: details are scrubbed of e-mail
addresses, phone numbers, LINE user ids and URLs. Publishing failures are logged and never
raised into the caller.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import re
import socket
import threading
import time
from functools import lru_cache
from typing import Any

import redis
from slack_sdk.webhook import WebhookClient

from config.settings import get_settings
from notifier.ratelimit import redis_client

log = logging.getLogger("notifier.alarms")
# The SDK logs the request URL (a secret) at DEBUG: it gets a logger that never does.
_SLACK_SDK_LOG = logging.getLogger("notifier.alarms.slack_sdk")
_SLACK_SDK_LOG.setLevel(logging.WARNING)

SEVERITIES = ("INFO", "WARNING", "ERROR", "CRITICAL")
LOG_LEVELS = {
    "INFO": logging.INFO,
    "WARNING": logging.WARNING,
    "ERROR": logging.ERROR,
    "CRITICAL": logging.CRITICAL,
}
SOURCE = "notifier"
HELD_COUNT_TTL = 86400
"""How long repeats held back are remembered for the next alarm of their key."""
TEXT_MAX = 500

# Returns -1 when the key is inside its window (and counts the repeat), else the number of
# repeats held back since the last published alarm of the key.
_GATE = """
if redis.call('SET', KEYS[1], '1', 'NX', 'EX', ARGV[1]) then
  local held = tonumber(redis.call('GET', KEYS[2]) or '0')
  redis.call('DEL', KEYS[2])
  return held
end
redis.call('INCR', KEYS[2])
redis.call('EXPIRE', KEYS[2], ARGV[2])
return -1
"""

# A details key made of one of these words names a body, an address or a secret: dropped.
_SENSITIVE_WORDS = frozenset(
    {
        "address",
        "auth",
        "body",
        "content",
        "email",
        "endpoint",
        "html",
        "mail",
        "message",
        "password",
        "phone",
        "secret",
        "subject",
        "text",
        "token",
        "uri",
        "url",
        "webhook",
    }
)
_SENSITIVE_NAMES = frozenset({"lineuserid", "p256dh", "to", "cc", "bcc"})
_SCRUB = (
    (re.compile(r"\b[a-z][a-z0-9+.-]*://\S+", re.IGNORECASE), "[url]"),
    (re.compile(r"[^\s@<>\"'(),;:]+@[^\s@<>\"'(),;:]+\.[a-z]{2,}", re.IGNORECASE), "[email]"),
    (re.compile(r"\+\d[\d\s-]{6,}\d"), "[phone]"),
    (re.compile(r"(?<![\w-])0\d{8,10}(?![\w-])"), "[phone]"),
    (re.compile(r"\bU[0-9a-f]{32}\b"), "[line-user]"),
)


def scrub(text: str) -> str:
    """The text without addresses or URLs, cut to TEXT_MAX characters."""
    for pattern, replacement in _SCRUB:
        text = pattern.sub(replacement, text)
    return text if len(text) <= TEXT_MAX else text[: TEXT_MAX - 1] + "…"


def _sensitive_key(key: str) -> bool:
    words = {w.lower() for w in re.findall(r"[A-Z]?[a-z]+|[A-Z]+(?![a-z])", key)}
    return bool(words & _SENSITIVE_WORDS) or re.sub(r"[^a-z0-9]", "", key.lower()) in (
        _SENSITIVE_NAMES
    )


def clean_details(details: Any, depth: int = 0) -> Any:
    """Details safe to publish: keys naming bodies, addresses or secrets are dropped, strings
    scrubbed, nesting bounded."""
    if isinstance(details, dict):
        if depth >= 3:
            return "[nested]"
        return {
            str(k): clean_details(v, depth + 1)
            for k, v in details.items()
            if not _sensitive_key(str(k))
        }
    if isinstance(details, list | tuple):
        return [clean_details(v, depth + 1) for v in details[:20]]
    if details is None or isinstance(details, bool | int | float):
        return details
    return scrub(str(details))


def normalize_severity(severity: str) -> str:
    upper = severity.upper() if isinstance(severity, str) else ""
    if upper not in SEVERITIES:
        raise ValueError(f"severity must be one of {', '.join(SEVERITIES)}, not {severity!r}")
    return upper


class AlarmService:
    """Publishes alarms to the configured targets, at most once per window per key."""

    def __init__(
        self,
        topic_arn: str = "",
        slack_webhook_url: str = "",
        window_seconds: int = 300,
        key_prefix: str = "",
    ):
        self.topic_arn = topic_arn
        self.slack_webhook_url = slack_webhook_url
        self.window_seconds = max(1, int(window_seconds))
        self.key_prefix = key_prefix
        # Used only while Redis cannot be reached: one alarm per key per window per process.
        self._local_until: dict[str, float] = {}
        self._local_held: dict[str, int] = {}
        self._local_lock = threading.Lock()

    @property
    def has_target(self) -> bool:
        return bool(self.topic_arn or self.slack_webhook_url)

    def raise_alarm(
        self,
        severity: str,
        title: str,
        *,
        key: str,
        tenant_id: str = "",
        channel: str = "",
        details: dict[str, Any] | None = None,
    ) -> bool:
        """Publish the alarm unless its key was published within the window. True when it
        went to at least one target; False when held back, with no target, or on failure.
        Raises ValueError only for an unknown severity."""
        severity = normalize_severity(severity)
        title, key = scrub(title), scrub(key)
        context = {"tenant": tenant_id, "channel": channel, "status": severity}
        held = self._admit(key)
        if held < 0:
            log.debug("alarm %s held back by its window", key, extra=context)
            return False
        # Logged once per window as well: an outage without alarm targets floods no log.
        log.log(LOG_LEVELS[severity], "alarm %s: %s", key, title, extra={**context, "count": held})
        if not self.has_target:
            return False
        alarm = {
            "severity": severity,
            "source": SOURCE,
            "title": title,
            "key": key,
            "tenantId": tenant_id,
            "channel": channel,
            "details": clean_details(details or {}),
            "heldBack": held,
            "windowSeconds": self.window_seconds,
            "timestamp": dt.datetime.now(dt.UTC).isoformat(),
            "host": socket.gethostname(),
        }
        published = [self._publish_sns(alarm), self._publish_slack(alarm)]
        return any(published)

    def critical(self, title: str, *, key: str, **kw: Any) -> bool:
        return self.raise_alarm("CRITICAL", title, key=key, **kw)

    def error(self, title: str, *, key: str, **kw: Any) -> bool:
        return self.raise_alarm("ERROR", title, key=key, **kw)

    def warning(self, title: str, *, key: str, **kw: Any) -> bool:
        return self.raise_alarm("WARNING", title, key=key, **kw)

    def info(self, title: str, *, key: str, **kw: Any) -> bool:
        return self.raise_alarm("INFO", title, key=key, **kw)

    # -- the window ---------------------------------------------------------------------

    def _redis_key(self, key: str) -> str:
        if len(key) > 200:
            key = hashlib.sha256(key.encode()).hexdigest()
        return f"notifier:{self.key_prefix}alarm:{key}"

    def _admit(self, key: str) -> int:
        """-1 when held back; else the repeats held back since the last alarm of `key`."""
        gate = self._redis_key(key)
        try:
            return int(
                redis_client().eval(
                    _GATE, 2, gate, f"{gate}:held", self.window_seconds, HELD_COUNT_TTL
                )
            )
        except redis.RedisError as exc:
            log.warning("alarm window unavailable", extra={"error": type(exc).__name__})
            return self._admit_locally(key)

    def _admit_locally(self, key: str) -> int:
        now = time.monotonic()
        with self._local_lock:
            if self._local_until.get(key, 0.0) > now:
                self._local_held[key] = self._local_held.get(key, 0) + 1
                return -1
            self._local_until[key] = now + self.window_seconds
            return self._local_held.pop(key, 0)

    # -- the targets --------------------------------------------------------------------

    @staticmethod
    def headline(alarm: dict[str, Any]) -> str:
        more = f" (and {alarm['heldBack']} more)" if alarm["heldBack"] else ""
        return f"[{alarm['severity']}] {alarm['source']}: {alarm['title']}{more}"

    def _publish_sns(self, alarm: dict[str, Any]) -> bool:
        if not self.topic_arn:
            return False
        from channels.aws import AwsSettings
        from channels.sms import sns_client
        from channels.topic import sanitize_subject

        request: dict[str, Any] = {
            "TopicArn": self.topic_arn,
            "Subject": sanitize_subject(self.headline(alarm)) or "notifier alarm",
            "Message": json.dumps(alarm, ensure_ascii=False, indent=2),
        }
        if self.topic_arn.endswith(".fifo"):
            request["MessageGroupId"] = "alarms"
            request["MessageDeduplicationId"] = hashlib.sha256(
                f"{alarm['key']}:{alarm['timestamp']}".encode()
            ).hexdigest()
        try:
            sns_client(AwsSettings.from_env(), 3.0, 5.0).publish(**request)
        except Exception as exc:  # an alarm must never break the code that raised it
            log.warning("alarm not published to SNS", extra={"error": type(exc).__name__})
            return False
        return True

    def _publish_slack(self, alarm: dict[str, Any]) -> bool:
        if not self.slack_webhook_url:
            return False
        headline = self.headline(alarm)
        facts = [f"*key* `{alarm['key']}`"]
        facts += [f"*{name}* {alarm[field]}" for name, field in _SLACK_FACTS if alarm[field]]
        details = json.dumps(alarm["details"], ensure_ascii=False, indent=1)[:2500]
        blocks: list[dict[str, Any]] = [
            {"type": "header", "text": {"type": "plain_text", "text": headline[:150]}},
            {"type": "section", "text": {"type": "mrkdwn", "text": "\n".join(facts)}},
        ]
        if alarm["details"]:
            blocks.append(
                {"type": "section", "text": {"type": "mrkdwn", "text": f"```{details}```"}}
            )
        blocks.append(
            {
                "type": "context",
                "elements": [{"type": "mrkdwn", "text": f"{alarm['host']} · {alarm['timestamp']}"}],
            }
        )
        try:
            client = WebhookClient(self.slack_webhook_url, timeout=5, logger=_SLACK_SDK_LOG)
            response = client.send(text=headline, blocks=blocks)
        except Exception as exc:  # an alarm must never break the code that raised it
            log.warning("alarm not posted to Slack", extra={"error": type(exc).__name__})
            return False
        if not 200 <= response.status_code < 300:
            log.warning(
                "alarm not posted to Slack", extra={"error": f"HTTP {response.status_code}"}
            )
            return False
        return True


_SLACK_FACTS = (("tenant", "tenantId"), ("channel", "channel"), ("held back", "heldBack"))


@lru_cache(maxsize=4)
def _service(topic_arn: str, webhook_url: str, window: int, prefix: str) -> AlarmService:
    return AlarmService(topic_arn, webhook_url, window, prefix)


def default_service() -> AlarmService:
    """The service configured by the environment (NOTIFIER_ALARM_*)."""
    settings = get_settings()
    return _service(
        settings.alarm_topic_arn,
        settings.alarm_slack_webhook_url,
        settings.alarm_window_seconds,
        settings.queue_prefix,
    )


def raise_alarm(
    severity: str,
    title: str,
    *,
    key: str,
    tenant_id: str = "",
    channel: str = "",
    details: dict[str, Any] | None = None,
) -> bool:
    """Raise an alarm through the configured targets (see AlarmService.raise_alarm): True if
    published, False if held back by the window, with no target configured, or on failure."""
    return default_service().raise_alarm(
        severity, title, key=key, tenant_id=tenant_id, channel=channel, details=details
    )

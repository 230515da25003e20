"""Issue 7.7: no access token, API key, phone number, email address or message body in the
logs at INFO and above.

Runs last (marker `logscan`) and reads every line the log capture (logcapture.py) kept for
the whole session, in this process and in every worker, Beat and publisher subprocess the
reliability tests started: the values those tests registered as secret, the tokens and
passwords the rest of the suite uses, and anything shaped like a phone number, an address
or an API key.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from typing import Any

import pytest

from channels import registry
from config.settings import CHANNELS, get_settings
from notifier.directory import import_document
from notifier.pipeline import accept, plan
from notifier.sending import send_chunk
from tests.helpers import directory, event, person
from tests.reliability import logcapture
from tests.unit.samples import SAMPLE_DATA

pytestmark = pytest.mark.logscan

# Credentials and bodies the other test modules use (they do not register them).
SUITE_SECRETS = (
    "test-line-token",
    "tenant-line-token",
    "env-line-token",
    "tenant-a-line-token",
    "line-channel-secret-for-tests",
    "s3cret",
    SAMPLE_DATA["system.maintenance"]["message"],
    SAMPLE_DATA["payment.success"]["description"],
)
PATTERNS = {
    # A Taiwanese mobile number as people and the directory write it (+886912345678,
    # 0912345678, +886 912-345-678), standing alone: digits inside a longer number
    # ("succeeded in 0.0488690880...s") or a word are not a phone number. Identifiers are
    # blanked out first (IDENTIFIERS).
    "phone number": re.compile(
        r"(?<![\w.+])(?:\+?886[- ]?|0)9\d{2}[- ]?\d{3}[- ]?\d{3}(?![\w.]\d|\w)"
    ),
    "email address": re.compile(
        r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}"
    ),
    "API key": re.compile(r"\bnk\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]{16,}"),
}
IDENTIFIERS = re.compile(
    r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"  # UUIDs
    r"|\b[0-9a-fA-F]{16,}\b"  # hashes, trace ids
)
"""Task ids and other generated identifiers: their digits can look like a phone number."""
NOT_PERSONAL = {"ops@example.com", "notifications@kyo.app"}
"""The operator's VAPID contact and the default sender: the service's own addresses."""
BODY = "SECRET-BODY-5d0c2a71"
PHONE, EMAIL = "+886987654321", "secret.member@example.com"


def problems(lines: Iterable[tuple[str, str]], secrets: set[str]) -> list[str]:
    """ "<source>: <what>: <excerpt>" for each line showing a secret or a personal value."""
    found = []
    for source, line in lines:
        for value in secrets:
            if value in line:
                found.append(f"{source}: secret {value[:6]}...: {_excerpt(line, value)}")
        scanned = IDENTIFIERS.sub("<id>", line)
        for what, pattern in PATTERNS.items():
            for match in pattern.finditer(scanned):
                if match.group(0) not in NOT_PERSONAL:
                    found.append(f"{source}: {what}: {_excerpt(scanned, match.group(0))}")
    return found


def _excerpt(line: str, value: str) -> str:
    at = line.find(value)
    return line[max(0, at - 80) : at + len(value) + 40]


def session_lines() -> Iterator[tuple[str, str]]:
    for line in logcapture.captured_lines():
        yield "test process", line
    for path in logcapture.log_files():
        for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
            yield path.name, line


def test_the_scanner_finds_what_it_looks_for() -> None:
    planted = [
        ("a", '{"msg": "sent to +886912345678"}'),
        ("b", '{"msg": "to amy@example.com", "error": "x"}'),
        ("c", "token nk.Z3ltLWE.abcdefghijklmnopqrstuvwxyz"),
        ("d", f"body {BODY}"),
        ("e", "celery@vm ready. mailto:ops@example.com, delivery 9123456789"),
    ]
    assert [p.split(":")[0:2] for p in problems(planted, {BODY})] == [
        ["a", " phone number"],
        ["b", " email address"],
        ["c", " API key"],
        ["d", " secret SECRET..."],
    ]


def test_the_scanner_finds_the_suites_secrets_and_real_phone_shapes() -> None:
    planted = [
        ("phone", f'{{"to": "{PHONE}"}}'),
        ("national", "sms to=0912345678 failed"),
        ("spaced", "call +886 912 345 678 now"),
        ("dashed", "tel 0912-345-678."),
        ("after id", "Task notifier.notify[4db9e749-09ba-43f3-9765-0911038004ee] to 0987654321"),
    ] + [(f"suite {i}", f"error: bad token {value}") for i, value in enumerate(SUITE_SECRETS)]
    found = problems(planted, set(SUITE_SECRETS))
    assert sorted({p.split(":")[0] for p in found}) == sorted(source for source, _ in planted)


@pytest.mark.parametrize(
    "line",
    [
        "Task notifier.notify[4db9e749-09ba-43f3-9765-0911038004ee] received",
        "Task notifier.send_sms[4db9e749-09ba-43f3-9765-886912345678] succeeded in 0.05s",
        "Task notifier.plan[0912345678ab-09ba-43f3-9765-0911038004ee] received",
        "root 0912345678abcdef0912345678abcdef retry key 886912345678aa",
        "succeeded in 0.0912345678s; delivery 90912345678; port 50912345678",
        "event h-0912345678deadbeef0912345678deadbeef0912 accepted",
    ],
)
def test_the_scanner_never_reads_an_identifier_as_a_phone_number(line: str) -> None:
    assert problems([("worker", line)], set()) == []


@pytest.fixture
def outbox(db: None, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for channel in CHANNELS:
        monkeypatch.setitem(get_settings().backends, channel, "outbox")
    registry.reset_channels()
    yield
    registry.reset_channels()


@pytest.mark.usefixtures("outbox")
def test_no_secret_reaches_a_log_line() -> None:
    # This session's own traffic through the product's logging, whatever else ran.
    logcapture.secret(BODY, PHONE, EMAIL)
    import_document(directory(person("s1", phone=PHONE, email=EMAIL)))
    sent: dict[str, Any] = event("payment.failed", user="s1", eventId="secret-1")
    sent["data"]["reason"] = BODY
    accepted = accept(sent)
    assert accepted.event_pk is not None
    for channel, ids in plan(accepted.event_pk).chunks:
        send_chunk(channel, ids)
    rejected = event("payment.failed", user="s1", eventId="secret-2")
    rejected["data"]["amount"] = {"phone": PHONE, "note": BODY}
    assert str(accept(rejected).status) == "rejected"

    assert logcapture.is_installed()
    lines = list(session_lines())
    assert any('"delivery sent"' in line for _, line in lines)  # the capture saw sends
    assert any('"event rejected"' in line for _, line in lines)
    secrets = logcapture.secrets() | set(SUITE_SECRETS)
    found = problems(lines, secrets)
    assert found == [], "\n".join(found[:20])

"""The CLI as a user drives it, in subprocesses: import a directory, send all 14 event
types, read their status; and `notifier dev` on the embedded defaults of a fresh machine."""

from __future__ import annotations

import datetime as dt
import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from notifier import demo
from tests.helpers import CELERY, wait_for

BIN = Path(sys.executable).parent
SETTLED = {"sent", "failed", "suppressed", "skipped", "deferred", "batched"}


def cli(
    *args: str, stdin: str | None = None, env: dict[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "notifier"), *args],
        input=stdin,
        capture_output=True,
        text=True,
        env=env or dict(os.environ),
        timeout=timeout,
    )


@pytest.fixture
def worker_process(db: None, tmp_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    log = open(tmp_path / "worker.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen(
        [
            *CELERY,
            "worker",
            "-c",
            "2",
            "-n",
            f"e2e-{os.getpid()}@%h",
            "--loglevel",
            "INFO",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    yield proc
    proc.terminate()
    proc.wait(timeout=30)
    log.close()


def test_import_send_status_for_all_event_types(worker_process: Any, tmp_path: Path) -> None:
    now = dt.datetime.now(dt.UTC)
    assert cli("db", "upgrade").returncode == 0
    directory_file = tmp_path / "directory.json"
    directory_file.write_text(json.dumps(demo.directory(now)))
    first = cli("import", str(directory_file))
    assert first.returncode == 0, first.stderr
    assert json.loads(first.stdout)["changed"]["users"] == 3
    again = cli("import", str(directory_file))
    assert set(json.loads(again.stdout)["changed"].values()) == {0}  # idempotent

    events = demo.events(now, "e2e")
    events_file = tmp_path / "events.json"
    events_file.write_text(json.dumps(events))
    sent = cli("send", str(events_file))
    assert sent.returncode == 0, sent.stdout + sent.stderr
    lines = [json.loads(line) for line in sent.stdout.splitlines()]
    assert [line["eventId"] for line in lines] == [e["eventId"] for e in events]

    def settled(event_id: str) -> dict[str, Any] | None:
        result = cli("status", event_id, "--json")
        if result.returncode != 0:
            return None
        doc = json.loads(result.stdout)
        done = doc["deliveries"] and all(d["status"] in SETTLED for d in doc["deliveries"])
        return doc if done else None

    seen_types = set()
    for ev in events:
        doc = wait_for(lambda ev=ev: settled(ev["eventId"]), timeout=90, interval=0.5)
        assert doc["event"]["status"] == "accepted"
        assert doc["event"]["eventType"] == ev["eventType"]
        statuses = {d["status"] for d in doc["deliveries"]}
        assert "failed" not in statuses, doc
        assert "sent" in statuses
        seen_types.add(doc["event"]["eventType"])
    assert len(seen_types) == 14

    human = cli("status", events[0]["eventId"])
    assert human.returncode == 0 and events[0]["eventType"] in human.stdout
    unknown = cli("status", "no-such-event", "--json")
    assert unknown.returncode == 1


def test_send_reports_every_error_and_exits_1(db: None, tmp_path: Path) -> None:
    bad = {"eventType": "payment.failed", "tenantId": "kyo-demo", "data": {"amount": "x"}}
    result = cli("send", "-", stdin=json.dumps(bad))
    assert result.returncode == 1
    [line] = [json.loads(x) for x in result.stdout.splitlines()]
    fields = {e["field"] for e in line["errors"]}
    assert {"data.amount", "data.currency", "data.paymentId", "data.reason"} <= fields
    malformed = cli("send", "-", stdin="{not json")
    assert malformed.returncode == 1 and "malformed JSON" in malformed.stdout


def test_every_command_has_help() -> None:
    for command in (
        [],
        ["dev"],
        ["send"],
        ["status"],
        ["import"],
        ["db", "upgrade"],
        ["demo"],
        ["outbox"],
        ["web"],
        ["tenant", "api-key"],
        ["scan", "expiry"],
        ["ingest", "sqs"],
        ["report"],
        ["dlq", "list"],
        ["dlq", "replay"],
    ):
        result = cli(*command, "--help")
        assert result.returncode == 0 and "Usage:" in result.stdout, command


def test_dev_runs_the_demo_on_embedded_defaults(tmp_path: Path) -> None:
    env = {
        k: v
        for k, v in os.environ.items()
        # As a user runs it: no key (dev makes one), the URL policy on.
        if k
        not in (
            "REDIS_URL",
            "CELERY_BROKER_URL",
            "DATABASE_URL",
            "NOTIFIER_SECRET_KEY",
            "NOTIFIER_ALLOW_PRIVATE_URLS",
        )
    }
    env["NOTIFIER_HOME"] = str(tmp_path / "home")
    with socket.socket() as sock:  # a free port for the web app, whatever else runs here
        sock.bind(("127.0.0.1", 0))
        web_port = str(sock.getsockname()[1])
    result = cli("dev", "--once", "--no-flower", "--web-port", web_port, env=env, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "(embedded)" in out and "sqlite:///" in out
    assert "channel line      -> outbox" in out
    rows = [
        line.split() for line in out.splitlines() if line.startswith("  ") and "accepted" in line
    ]
    assert len(rows) == 14, out
    assert not [r for r in rows if any(part.startswith("failed=") for part in r)], out
    assert (tmp_path / "home" / "notifier.db").exists()
    assert (tmp_path / "home" / "secret_key").stat().st_mode & 0o077 == 0
    assert not (tmp_path / "home" / "redis.url").exists()  # the embedded Redis was stopped

"""The pipeline on a RabbitMQ broker (results in the database)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from notifier.directory import import_document
from tests import services
from tests.helpers import CELERY, directory, event, person
from tests.integration.conftest import wait_settled

AMQP = services.local_rabbitmq_url()
pytestmark = pytest.mark.skipif(AMQP is None, reason="no RabbitMQ on 127.0.0.1:5672")


def test_events_flow_over_rabbitmq(db: None, tmp_path: Path) -> None:
    assert AMQP is not None
    env = {**os.environ, "CELERY_BROKER_URL": AMQP}
    env.pop("REDIS_URL", None)
    python = sys.executable
    subprocess.run(
        [*CELERY, "purge", "-f"],
        env=env,
        check=True,
        capture_output=True,
        timeout=60,
    )
    import_document(directory(person("u1")))
    log = open(tmp_path / "worker.log", "wb")  # noqa: SIM115
    worker = subprocess.Popen(
        [
            *CELERY,
            "worker",
            "-c",
            "2",
            "-n",
            f"amqp-{os.getpid()}@%h",
        ],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        script = (
            "import json, sys; from notifier import notify; "
            "print(json.dumps(notify.delay(json.loads(sys.argv[1])).get(timeout=60)))"
        )
        ev = event("payment.failed", eventId="amqp-1")
        result = subprocess.run(
            [python, "-c", script, json.dumps(ev)],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert result.returncode == 0, result.stderr
        assert json.loads(result.stdout.strip().splitlines()[-1]) == {
            "event_id": "amqp-1",
            "status": "accepted",
            "errors": [],
        }
        rows = wait_settled(expected=3, timeout=60)
        assert sorted((r.channel, r.status) for r in rows) == [
            ("line", "sent"),
            ("sms", "sent"),
            ("topic", "sent"),
        ]
    finally:
        worker.terminate()
        worker.wait(timeout=30)
        log.close()

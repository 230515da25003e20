"""Flower starts against the project's Celery app and sees the worker."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import urllib.request
from pathlib import Path

from tests.helpers import CELERY, wait_for


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _get(url: str) -> str | None:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.read().decode()
    except OSError:
        return None


def test_celery_flower_starts_and_lists_the_worker(tmp_path: Path) -> None:
    port = _free_port()
    name = f"flower-e2e-{os.getpid()}"
    logs = [open(tmp_path / f"{n}.log", "wb") for n in ("worker", "flower")]  # noqa: SIM115
    worker = subprocess.Popen(
        [*CELERY, "worker", "-c", "1", "-n", f"{name}@%h"],
        stdout=logs[0],
        stderr=subprocess.STDOUT,
    )
    flower = subprocess.Popen(
        [
            *CELERY,
            "flower",
            f"--port={port}",
            "--address=127.0.0.1",
        ],
        # Flower 2 serves its JSON API only when told it may go without authentication.
        env={**os.environ, "FLOWER_UNAUTHENTICATED_API": "true"},
        stdout=logs[1],
        stderr=subprocess.STDOUT,
    )
    try:
        page = wait_for(lambda: _get(f"http://127.0.0.1:{port}/"), timeout=60, interval=0.5)
        assert "Flower" in page

        def worker_listed() -> bool:
            body = _get(f"http://127.0.0.1:{port}/api/workers?refresh=1")
            return bool(body) and any(key.startswith(name) for key in json.loads(body or "{}"))

        wait_for(worker_listed, timeout=60, interval=1.0)
    finally:
        for proc in (flower, worker):
            proc.terminate()
        for proc in (flower, worker):
            proc.wait(timeout=30)
        for log in logs:
            log.close()

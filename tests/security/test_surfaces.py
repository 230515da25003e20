"""Issue 11.6: closed surfaces. /docs and the OpenAPI document off unless enabled, /metrics
behind its token, the dev pages on this machine's names only, request bodies capped before
they are read whole or parsed."""

from __future__ import annotations

import http.client
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
from fastapi.testclient import TestClient

from notifier.web.app import create_app
from tests.helpers import environment
from tests.security.conftest import Gyms

ROOT = Path(__file__).resolve().parents[2]


def test_docs_and_openapi_are_off_by_default(gyms: Gyms) -> None:
    for path in ("/docs", "/openapi.json", "/redoc"):
        assert gyms.client.get(path).status_code == 404
    with environment({"NOTIFIER_API_DOCS": "1"}), TestClient(create_app()) as client:
        assert client.get("/openapi.json").status_code == 200
        assert client.get("/docs").status_code == 200


@pytest.mark.usefixtures("db")
def test_metrics_need_the_token_when_one_is_set() -> None:
    token = "m" + "0123456789abcdef" * 2
    with environment({"NOTIFIER_METRICS_TOKEN": token}), TestClient(create_app()) as client:
        assert client.get("/metrics").status_code == 401
        wrong = client.get("/metrics", headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401
        right = client.get("/metrics", headers={"Authorization": f"Bearer {token}"})
        assert right.status_code == 200
        assert "notifier" in right.text


@pytest.mark.usefixtures("db")
@pytest.mark.parametrize(
    ("host", "status"),
    [
        ("localhost:8000", 200),
        ("127.0.0.1:8000", 200),
        ("[::1]:8000", 200),
        ("attacker.example", 400),
        ("localhost.attacker.example", 400),
        ("", 400),
    ],
)
def test_the_outbox_page_answers_to_local_names_only(host: str, status: int) -> None:
    with TestClient(create_app(outbox_page=True)) as client:
        assert client.get("/outbox", headers={"Host": host}).status_code == status


def test_a_body_over_the_cap_is_refused_declared_or_streamed(gyms: Gyms) -> None:
    auth = {"Authorization": f"Bearer {gyms.key_a}"}
    with environment({"NOTIFIER_MAX_REQUEST_BYTES": "65536"}), TestClient(create_app()) as client:
        declared = client.post("/events", content=b"[" + b" " * 70_000 + b"]", headers=auth)
        assert declared.status_code == 413

        def chunks() -> Iterator[bytes]:  # no Content-Length: chunked
            for _ in range(20):
                yield b" " * 8192

        streamed = client.post("/events", content=chunks(), headers=auth)
        assert streamed.status_code == 413
        ses = client.post("/webhooks/ses", content=b"x" * 70_000)
        assert ses.status_code == 413


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def served(gyms: Gyms) -> Iterator[tuple[int, psutil.Process]]:
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "notifier.cli", "web", "--port", str(port)],
        cwd=ROOT,
        env=os.environ.copy(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 60
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            if time.monotonic() > deadline or proc.poll() is not None:
                proc.kill()
                raise AssertionError("the web app did not start") from None
            time.sleep(0.2)
    yield port, psutil.Process(proc.pid)
    proc.terminate()
    proc.wait(timeout=20)


def _post_streamed(port: int, key: str, total: int, declare: bool) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.putrequest("POST", "/events")
    conn.putheader("Content-Type", "application/json")
    conn.putheader("Authorization", f"Bearer {key}")
    if declare:
        conn.putheader("Content-Length", str(total))
    else:
        conn.putheader("Transfer-Encoding", "chunked")
    conn.endheaders()
    chunk = b" " * 65536
    sent = 0
    try:
        while sent < total:
            piece = chunk[: total - sent]
            conn.send(piece if declare else f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
            sent += len(piece)
        if not declare:
            conn.send(b"0\r\n\r\n")
    except (BrokenPipeError, ConnectionResetError):
        pass  # the server answered 413 and closed: what we want
    try:
        return conn.getresponse().status
    finally:
        conn.close()


def test_a_26_mb_body_does_not_grow_the_web_process(
    gyms: Gyms, served: tuple[int, psutil.Process]
) -> None:
    """The reported finding: 26 MB grew the process from 110 MB to 710 MB before its 413."""
    port, process = served
    before = process.memory_info().rss
    for declare in (True, False):
        assert _post_streamed(port, gyms.key_a, 26 * 1024 * 1024, declare) == 413
    grown = process.memory_info().rss - before
    # About 14 MB here (the first requests' imports included); 40 MB with a 40 MB cap.
    assert grown < 25 * 1024 * 1024, f"grew by {grown / 1e6:.0f} MB"

"""moto's server in a thread, for tests of the AWS channels (SES, SNS SMS, SNS topics).

Start one per test session or module with `MotoPeer.start()`; point boto3 at `peer.url`
(AWS_ENDPOINT_URL). `data()` returns what moto recorded (sent SES mail, SNS messages) and
`reset()` forgets every resource, so tests that share a server start clean.
"""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Self

import pytest
from moto.server import ThreadedMotoServer

FAKE_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}


class MotoPeer:
    """A running ThreadedMotoServer on 127.0.0.1 and an ephemeral port."""

    def __init__(self) -> None:
        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        self.url = ""

    def start(self) -> Self:
        self._server.start()
        host, port = self._server.get_host_and_port()
        self.url = f"http://{host}:{port}"
        return self

    def stop(self) -> None:
        self._server.stop()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def env(self) -> dict[str, str]:
        """The environment that routes boto3 to this server with fake credentials."""
        return {**FAKE_CREDENTIALS, "AWS_ENDPOINT_URL": self.url}

    def _request(self, method: str, path: str) -> bytes:
        request = urllib.request.Request(
            self.url + path, method=method, data=b"" if method == "POST" else None
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            body: bytes = response.read()
            return body

    def data(self) -> dict[str, Any]:
        """GET /moto-api/data.json: every backend's recorded state (ses.RawMessage, sns.SMS...)."""
        result: dict[str, Any] = json.loads(self._request("GET", "/moto-api/data.json"))
        return result

    def reset(self) -> None:
        """POST /moto-api/reset: drop every resource and every recorded message."""
        self._request("POST", "/moto-api/reset")

    def ses_raw_messages(self) -> list[dict[str, Any]]:
        """Mail sent as SES raw content: [{"id", "source", "destinations", "raw_data"}]."""
        messages: list[dict[str, Any]] = self.data().get("ses", {}).get("RawMessage", [])
        return messages


@pytest.fixture(scope="session")
def moto_peer() -> Iterator[MotoPeer]:
    """One moto server for the test session. To use it from a test module, import it
    (`from tests.peers.moto import moto_peer  # noqa: F401`) or register this module as a
    plugin in a conftest; call `reset()` between tests."""
    with moto_server() as peer:
        yield peer


@contextmanager
def moto_server() -> Iterator[MotoPeer]:
    """A started MotoPeer, stopped on exit (wrap it in a session or module fixture)."""
    peer = MotoPeer().start()
    try:
        yield peer
    finally:
        peer.stop()

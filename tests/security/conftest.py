"""Two gyms for the security tests: A (whose API key the attacker holds) and B."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from fastapi.testclient import TestClient

from notifier.directory import import_document
from notifier.web.app import create_app
from notifier.web.auth import issue_api_key
from tests.helpers import directory, person

A, B = "sec-gym-a", "sec-gym-b"


@dataclass
class Gyms:
    client: TestClient
    key_a: str

    def post(self, body: object) -> object:
        return self.client.post(
            "/events", json=body, headers={"Authorization": f"Bearer {self.key_a}"}
        )


@pytest.fixture
def gyms(db: None) -> Iterator[Gyms]:
    import_document(directory(person("u1", tenant=A), person("a-only", tenant=A), tenant=A))
    import_document(directory(person("u1", tenant=B), person("b-only", tenant=B), tenant=B))
    with TestClient(create_app(), base_url="http://localhost") as client:
        yield Gyms(client, issue_api_key(A))

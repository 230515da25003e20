"""Helpers for the console tests: log in through the real login form, read CSRF tokens."""

from __future__ import annotations

import re

from fastapi.testclient import TestClient

CSRF = re.compile(r'name="csrf" value="([^"]+)"')


def csrf_of(page: str) -> str:
    found = CSRF.search(page)
    assert found, "no CSRF token on the page"
    return found.group(1)


def log_in(client: TestClient, key: str) -> TestClient:
    form = client.get("/console/login")
    response = client.post(
        "/console/login",
        data={"csrf": csrf_of(form.text), "key": key, "next": "/console/"},
        follow_redirects=False,
    )
    assert response.status_code == 303, response.text
    return client

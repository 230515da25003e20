"""GET/PUT /users/{userId}/preferences against the real database: read, replace, refuse,
another tenant's person is a 404; the next event follows the preferences (a channel
skipped with the preference's reason, shown by GET /events/{eventId}); critical events and
the tenant's setting; every change is a signed `preferences.updated` webhook."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from notifier.directory import import_document
from notifier.pipeline import accept, plan
from notifier.web.app import create_app
from notifier.web.auth import issue_api_key
from tests.helpers import TENANT, directory, event, person, wait_for
from tests.integration.test_outbound_webhooks import Receiver, receiver, register

__all__ = ["receiver"]  # a fixture used by name below

OTHER = "gym-b"
PRIORITY = {"high": ["line", "sms"], "medium": ["line", "email"], "low": ["web_push"]}


class Api:
    def __init__(self, client: TestClient, key: str, other_key: str):
        self.client, self.key, self.other_key = client, key, other_key

    def call(self, method: str, path: str, body: Any = None, *, key: str | None = None) -> Any:
        headers = {"Authorization": f"Bearer {key or self.key}"}
        return self.client.request(method, path, json=body, headers=headers)


@pytest.fixture
def api(db: None) -> Iterator[Api]:
    import_document(directory(person("u1"), person("u2")))
    import_document(directory(person("u1", tenant=OTHER), tenant=OTHER))
    with TestClient(create_app()) as client:
        yield Api(client, issue_api_key(TENANT), issue_api_key(OTHER))


def outcome(api: Api, raw: dict[str, Any]) -> dict[str, tuple[str, str | None]]:
    """Accept and plan `raw` here (no worker), then read its deliveries over HTTP."""
    accepted = accept(raw)
    assert accepted.event_pk is not None, accepted.errors
    plan(accepted.event_pk)
    report = api.call("GET", f"/events/{accepted.event_id}")
    assert report.status_code == 200, report.text
    return {
        d["channel"]: (d["status"], d["reason"])
        for d in report.json()["deliveries"]
        if d["recipient"] == "u1"
    }


def test_get_and_put_preferences(api: Api) -> None:
    got = api.call("GET", "/users/u1/preferences")
    assert got.status_code == 200
    assert got.json() == {"priority": PRIORITY}
    new = {
        "channels": {"sms": False},
        "priority": PRIORITY,
        "categories": {"MemberActivity": {"webPush": False}},
        "eventTypes": {"member.checked_in": {"line": False}},
    }
    put = api.call("PUT", "/users/u1/preferences", new)
    assert put.status_code == 200, put.text
    assert put.json() == new
    assert api.call("GET", "/users/u1/preferences").json() == new
    assert api.call("GET", "/users/u1").json()["preferences"] == new
    # PUT replaces the whole: what the body leaves out is gone.
    assert api.call("PUT", "/users/u1/preferences", {}).json() == {}
    # The person in the other tenant is untouched.
    assert api.call("GET", "/users/u1/preferences", key=api.other_key).json() == {
        "priority": PRIORITY
    }


def test_invalid_preferences_are_refused_with_every_error(api: Api) -> None:
    response = api.call(
        "PUT",
        "/users/u1/preferences",
        {"categories": {"Marketing": {"line": False}}, "channels": {"line": "off"}, "x": 1},
    )
    assert response.status_code == 422
    fields = {e["field"] for e in response.json()["errors"]}
    assert {"body.categories.Marketing.[key]", "body.channels.line", "body.x"} <= fields, fields
    bad_json = api.client.put(
        "/users/u1/preferences",
        content=b"{",
        headers={"Authorization": f"Bearer {api.key}", "Content-Type": "application/json"},
    )
    assert bad_json.status_code in (400, 422)
    assert api.call("GET", "/users/u1/preferences").json() == {"priority": PRIORITY}


def test_another_tenants_person_and_no_person_are_404(api: Api) -> None:
    assert api.call("GET", "/users/u2/preferences", key=api.other_key).status_code == 404
    put = api.call("PUT", "/users/u2/preferences", {}, key=api.other_key)
    assert put.status_code == 404
    assert api.call("GET", "/users/u2/preferences").json() == {"priority": PRIORITY}
    assert api.call("GET", "/users/nobody/preferences").status_code == 404
    assert api.call("PUT", "/users/nobody/preferences", {}).status_code == 404
    assert api.client.get("/users/u1/preferences").status_code == 401


def test_the_next_event_follows_the_preferences_with_the_reason(api: Api) -> None:
    prefs = {
        "priority": PRIORITY,
        "eventTypes": {"member.registered": {"line": False}},
        "categories": {"PaymentUpdates": {"email": False}},
    }
    assert api.call("PUT", "/users/u1/preferences", prefs).status_code == 200
    registered = outcome(api, event("member.registered", eventId="pref-registered"))
    assert registered == {
        "line": ("skipped", "preference: member.registered off on line"),
        "email": ("queued", None),
    }
    paid = outcome(api, event("payment.success", eventId="pref-paid"))
    assert paid == {
        "line": ("queued", None),
        "email": ("skipped", "preference: PaymentUpdates off on email"),
    }
    # payment.failed is high priority here: line and sms, both on.
    failed = outcome(api, event("payment.failed", eventId="pref-failed"))
    assert failed == {"line": ("queued", None), "sms": ("queued", None)}


def test_critical_events_ignore_topic_opt_outs_unless_the_tenant_says_otherwise(
    api: Api,
) -> None:
    prefs = {"priority": PRIORITY, "categories": {"PaymentUpdates": {"email": False}}}
    assert api.call("PUT", "/users/u1/preferences", prefs).status_code == 200
    critical = {"userId": "u1", "priority": "critical"}
    ignored = outcome(api, event("payment.failed", eventId="crit-1", metadata=critical))
    assert ignored["email"] == ("queued", None)
    import_document(directory(person("u1", preferences=prefs), criticalIgnoresOptOuts=False))
    followed = outcome(api, event("payment.failed", eventId="crit-2", metadata=critical))
    assert followed["email"] == ("skipped", "preference: PaymentUpdates off on email")


@pytest.mark.usefixtures("celery_worker")
def test_every_change_is_a_preferences_updated_webhook(api: Api, receiver: Receiver) -> None:
    register(api.client, receiver, api.key, "a-prefs", eventTypes=["preferences.updated"])
    register(api.client, receiver, api.key, "a-sent", eventTypes=["delivery.sent"])
    register(api.client, receiver, api.other_key, "b-all")
    prefs = {"priority": PRIORITY, "eventTypes": {"member.checked_in": {"line": False}}}
    assert api.call("PUT", "/users/u1/preferences", prefs).status_code == 200
    assert api.call("PUT", "/users/u1/preferences", prefs).status_code == 200  # no change
    patched = api.client.patch(
        "/users/u1",
        content=b'{"preferences": {"channels": {"sms": false}}}',
        headers={
            "Authorization": f"Bearer {api.key}",
            "Content-Type": "application/merge-patch+json",
        },
    )
    assert patched.status_code == 200, patched.text
    wait_for(lambda: len(receiver.messages) >= 2 or None, timeout=60)
    first, second = (payload for _, payload, _ in receiver.messages[:2])
    assert {name for name, _, _ in receiver.messages} == {"a-prefs"}
    assert first["type"] == "preferences.updated"
    assert first["data"] == {"userId": "u1", "source": "api", "preferences": prefs}
    assert second["data"]["source"] == "directory"
    assert second["data"]["preferences"]["channels"] == {"sms": False}
    ids = {headers["webhook-id"] for _, _, headers in receiver.messages}
    assert len(ids) == 2
    # Nothing more arrives: the unchanged PUT sent nothing, tenant B heard nothing.
    import time

    time.sleep(1.0)
    assert len(receiver.messages) == 2

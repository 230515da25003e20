"""Issue 11.1: with tenant A's API key nothing is stored, queued or delivered as tenant B,
whatever the body says, and the answers say nothing about B."""

from __future__ import annotations

import re
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select

from notifier.db import session_scope
from notifier.models import Delivery, Event, OutboxMessage
from notifier.web.auth import issue_api_key
from tests.helpers import event, wait_for
from tests.security.conftest import A, B, Gyms


def stored_tenants() -> set[str]:
    with session_scope() as session:
        return set(session.scalars(select(Event.tenant_id).distinct()))


def test_a_snake_case_tenant_is_no_way_around_the_key(gyms: Gyms) -> None:
    """The reported attack: `tenant_id` instead of `tenantId` was accepted as B's event."""
    attack = event("payment.failed", tenant=A, eventId="attack-1")
    del attack["tenantId"]
    attack["tenant_id"] = B
    both = {**event("payment.failed", tenant=A, eventId="attack-2"), "tenant_id": B}

    response = gyms.post([attack, both])

    assert response.status_code == 422
    results = response.json()["results"]
    assert [r["status"] for r in results] == ["rejected", "rejected"]
    assert {"field": "tenant_id", "message": "Extra inputs are not permitted"} in results[0][
        "errors"
    ]
    assert any(e["field"] == "tenantId" for e in results[0]["errors"])  # missing
    assert [e["field"] for e in results[1]["errors"]] == ["tenant_id"]
    assert stored_tenants() == set()


def test_snake_case_names_are_not_wire_names_anywhere(gyms: Gyms) -> None:
    ev = event("payment.failed", tenant=A)
    ev["metadata"] = {"user_id": "u1"}  # metadata.userId is the wire name
    ev["data"] = {**ev["data"], "payment_id": "p-9"}
    body = gyms.post(ev).json()
    # metadata keeps unknown keys, so user_id is no user: the event addresses nobody.
    assert body["results"][0]["status"] == "rejected"
    assert body["results"][0]["errors"][0]["field"] == "metadata.userId"


def test_answers_about_other_tenants_are_all_alike(gyms: Gyms) -> None:
    """B exists, `nope` does not; b-only is a user of B only: one answer for all."""
    probes = [
        event("payment.failed", tenant=B, user="b-only", eventId="p1"),
        event("payment.failed", tenant=B, user="nobody", eventId="p2"),
        event("payment.failed", tenant="nope", user="b-only", eventId="p3"),
    ]
    results = gyms.post(probes).json()["results"]
    assert {r["eventId"] for r in results} == {"p1", "p2", "p3"}
    answers = [(r["status"], r["errors"]) for r in results]
    assert answers == [answers[0]] * 3
    assert answers[0] == (
        "rejected",
        [{"field": "tenantId", "message": "this API key sends its own tenant's events only"}],
    )
    assert stored_tenants() == set()


def test_event_ids_belong_to_their_tenant(gyms: Gyms) -> None:
    """A cannot take B's future event ids: the same id is B's own event later."""
    assert gyms.post(event("payment.failed", tenant=A, eventId="evt-77")).status_code == 200
    key_b = issue_api_key(B)
    response = gyms.client.post(
        "/events",
        json=event("payment.failed", tenant=B, eventId="evt-77"),
        headers={"X-API-Key": key_b},
    )
    assert response.status_code == 200
    assert response.json()["results"][0]["status"] == "queued"
    assert stored_tenants() == {A, B}


def test_a_resent_event_id_is_a_duplicate_and_a_changed_one_a_conflict(gyms: Gyms) -> None:
    original = event("payment.failed", tenant=A, eventId="pay-1")
    assert gyms.post(original).json()["results"][0]["status"] == "queued"

    again = gyms.post(original)
    assert again.status_code == 200
    assert again.json()["results"] == [{"eventId": "pay-1", "status": "duplicate", "errors": []}]
    # A retrying sender may stamp its resend anew: still the same event.
    restamped = gyms.post({**original, "timestamp": "2026-11-22T10:00:00+08:00"})
    assert restamped.status_code == 200

    changed = {**original, "data": {**original["data"], "amount": "9999"}}
    conflict = gyms.post(changed)
    assert conflict.status_code == 409
    body = conflict.json()
    assert (body["queued"], body["duplicate"], body["rejected"]) == (0, 1, 0)
    assert body["results"][0]["status"] == "duplicate"
    assert body["results"][0]["errors"][0]["field"] == "eventId"
    with session_scope() as session:
        payloads = list(session.scalars(select(Event.payload)))
    assert [p["data"]["amount"] for p in payloads] == [original["data"]["amount"]]


@pytest.mark.usefixtures("celery_worker")
def test_nothing_reaches_the_other_tenants_people(gyms: Gyms) -> None:
    """End to end through a real worker: the attack next to a real event of A."""
    attack = event("system.maintenance", tenant=A, user=None, eventId="maint-x")
    del attack["tenantId"]
    attack["tenant_id"] = B
    own = event("payment.failed", tenant=A, eventId="own-1")
    assert gyms.post([attack, own]).status_code == 422

    def settled() -> bool:
        with session_scope() as session:
            pending = session.scalar(
                select(func.count()).select_from(Delivery).where(Delivery.status == "queued")
            )
            total = session.scalar(select(func.count()).select_from(Delivery))
        return bool(total) and pending == 0

    wait_for(settled)
    with session_scope() as session:
        delivery_tenants = set(session.scalars(select(Delivery.tenant_id).distinct()))
        outbox_tenants = set(session.scalars(select(OutboxMessage.tenant_id).distinct()))
    assert delivery_tenants == {A}
    assert outbox_tenants <= {A}


# -- a property: arbitrary bodies with A's key -----------------------------------------

_TENANT_KEYS = ["tenantId", "tenant_id", "TenantId", "tenantID", "tenant", " tenantId"]
_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=20),
    st.sampled_from([A, B, "nope", "u1", "b-only", "payment.failed", "system.maintenance"]),
)
_json = st.recursive(
    _scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(st.text(max_size=10) | st.sampled_from(_TENANT_KEYS), inner, max_size=5),
    ),
    max_leaves=12,
)


@st.composite
def hostile_events(draw: st.DrawFn) -> Any:
    """Mostly near-valid events of A with B spliced in somewhere, sometimes plain noise."""
    if draw(st.integers(0, 9)) == 0:
        return draw(_json)
    ev: dict[str, Any] = event(
        draw(st.sampled_from(["payment.failed", "system.maintenance", "member.registered"])),
        tenant=draw(st.sampled_from([A, B, "nope"])),
        user=draw(st.sampled_from(["u1", "b-only", None])),
    )
    for key in draw(st.lists(st.sampled_from(_TENANT_KEYS), max_size=3)):
        ev[key] = draw(st.sampled_from([A, B, "nope"]))
    if draw(st.booleans()):
        ev["metadata"] = {**ev["metadata"], draw(st.sampled_from(_TENANT_KEYS)): B}
    if draw(st.booleans()):
        ev["data"] = {**ev["data"], draw(st.sampled_from(_TENANT_KEYS)): B}
    if draw(st.booleans()):
        ev[draw(st.text(max_size=8))] = draw(_json)
    return ev


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(body=st.one_of(hostile_events(), st.lists(hostile_events(), min_size=1, max_size=5)))
def test_any_body_with_a_key_stays_in_the_keys_tenant(gyms: Gyms, body: Any) -> None:
    response = gyms.post(body)
    assert response.status_code in (200, 400, 403, 409, 422), response.text
    assert B not in response.text.replace(f'"{B}"', "")  # B is echoed back, never described
    with session_scope() as session:
        stored = session.execute(select(Event.tenant_id, Event.payload)).all()
    assert all(tenant == A and payload["tenantId"] == A for tenant, payload in stored)


def _key_routes() -> list[tuple[str, str]]:
    """Every (method, path) of the app that takes a tenant's API key."""
    from fastapi.routing import APIRoute

    from notifier.web import directory_api, events_api, status_api, webhook_endpoints_api
    from notifier.web.events_api import api_tenant

    found = []
    modules = (events_api, directory_api, status_api, webhook_endpoints_api)
    routers = [module.router for module in modules]
    for route in (r for router in routers for r in router.routes):
        if isinstance(route, APIRoute) and any(
            d.call is api_tenant for d in route.dependant.dependencies
        ):
            path = re.sub(r"\{[^}]+\}", "x", route.path)
            found += [(method, path) for method in sorted(route.methods)]
    return found


def test_every_key_route_refuses_no_key_and_a_wrong_key(gyms: Gyms) -> None:
    routes = _key_routes()
    assert ("POST", "/events") in routes and ("GET", "/users/x") in routes
    assert any(path.startswith("/webhook-endpoints") for _, path in routes)
    assert ("GET", "/events/x") in routes
    wrong = {"Authorization": "Bearer nk.c2VjLWd5bS1i.wrong"}  # names tenant B, wrong secret
    for method, path in routes:
        for headers in ({}, wrong, {"X-API-Key": "garbage"}):
            response = gyms.client.request(method, path, json={}, headers=headers)
            assert response.status_code == 401, (method, path, headers, response.text)
            assert B not in response.text

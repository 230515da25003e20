"""Issue 14.8 for preferences: with tenant A's API key, B's people's preferences are never
read or changed, the answers about B's people are those about nobody, and B's webhook
endpoints never hear of A's changes."""

from __future__ import annotations

from sqlalchemy import select

from notifier.db import session_scope
from notifier.models import User
from notifier.outbound_webhooks import create_endpoint
from notifier.preferences import Change, webhook_messages
from tests.security.conftest import A, B, Gyms


def _stored(tenant: str, user: str) -> dict[str, object]:
    with session_scope() as session:
        row = session.scalars(select(User).where(User.tenant_id == tenant, User.id == user)).one()
        return dict(row.preferences or {})


def test_a_key_never_reads_or_changes_another_tenants_preferences(gyms: Gyms) -> None:
    headers = {"Authorization": f"Bearer {gyms.key_a}"}
    before = _stored(B, "b-only")
    answers = []
    for user in ("b-only", "nobody"):
        got = gyms.client.get(f"/users/{user}/preferences", headers=headers)
        put = gyms.client.put(
            f"/users/{user}/preferences", json={"channels": {"line": False}}, headers=headers
        )
        answers.append((got.status_code, got.text, put.status_code, put.text))
    assert answers[0] == answers[1]  # B's person answers as nobody does
    assert answers[0][0] == answers[0][2] == 404
    assert B not in "".join(str(a) for a in answers)
    assert _stored(B, "b-only") == before
    # The same id in both tenants: A's key changes A's person only.
    assert (
        gyms.client.put(
            "/users/u1/preferences", json={"channels": {"line": False}}, headers=headers
        ).status_code
        == 200
    )
    assert _stored(A, "u1")["channels"] == {"line": False}
    assert "channels" not in _stored(B, "u1")


def test_a_change_is_announced_to_its_own_tenants_endpoints_only(gyms: Gyms) -> None:
    mine = create_endpoint(A, "https://hooks.example/a", None)
    create_endpoint(B, "https://hooks.example/b", None)
    import datetime as dt

    change = Change(A, "u1", {"channels": {"line": False}}, "api", dt.datetime.now(dt.UTC))
    messages = webhook_messages([change])
    assert [endpoint for endpoint, _ in messages] == [mine["id"]]
    assert B not in str(messages)


def test_a_preference_link_is_bound_to_its_tenant_and_person(gyms: Gyms) -> None:
    import re

    from notifier.signing import _b64, epoch_day, preference_token, preference_url

    base = "http://localhost:8000"
    url = preference_url(A, "u1").removeprefix(base)
    page = gyms.client.get(url)
    assert page.status_code == 200 and B not in page.text
    csrf = re.search(r'name="csrf" value="([^"]+)"', page.text).group(1)  # type: ignore[union-attr]
    before_b = _stored(B, "u1")
    saved = gyms.client.post(url, data={"csrf": csrf}, follow_redirects=False)  # all unticked
    assert saved.status_code == 303
    assert _stored(A, "u1")["channels"] == {"line": False, "email": False, "sms": False}
    assert _stored(B, "u1") == before_b
    # Another tenant's name put into A's token breaks its signature: a link shaped right
    # that we did not sign is not found.
    _, mac = preference_token(A, "u1", epoch_day() + 3).split(".")
    forged = _b64(f'["{B}","u1",{epoch_day() + 3}]'.encode())
    assert gyms.client.get(f"/p/{forged}.{mac}").status_code == 404
    assert gyms.client.post(f"/p/{forged}.{mac}", data={"csrf": csrf}).status_code == 404
    assert _stored(B, "u1") == before_b

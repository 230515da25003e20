"""The directory import against the real database: bulk upserts in batches, streamed input
(one document or JSON Lines), idempotence, all-or-nothing on bad input, and the CLI."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from sqlalchemy import select

from notifier.cli import main
from notifier.db import session_scope
from notifier.directory import import_items, import_stream
from notifier.events import InvalidEvent
from notifier.jsonstream import document_items, json_lines_items
from notifier.models import Booking, Membership, User, WebPushSubscription
from tests.helpers import TENANT
from tests.integration.conftest import count

TENANTS = [{"id": TENANT, "name": "Kyo Gym A", "timezone": "Asia/Taipei"}]


def member(i: int, **extra: Any) -> dict[str, Any]:
    return {
        "id": f"u{i:05}",
        "tenantId": TENANT,
        "name": f"Member {i}",
        "email": f"m{i}@example.com",
        "preferences": {"channels": {"sms": i % 2 == 0}},
        "webPushSubscriptions": [
            {"endpoint": f"https://push.example/{i}", "keys": {"p256dh": "p", "auth": "a"}}
        ],
        **extra,
    }


def membership(i: int) -> dict[str, Any]:
    return {
        "id": f"m{i:05}",
        "tenantId": TENANT,
        "userId": f"u{i:05}",
        "membershipType": "Gold",
        "expiresAt": "2026-11-29",
    }


def document(n: int) -> dict[str, Any]:
    return {
        "tenants": TENANTS,
        "users": [member(i) for i in range(n)],
        "memberships": [membership(i) for i in range(n)],
    }


def as_bytes(doc: dict[str, Any]) -> io.BytesIO:
    return io.BytesIO(json.dumps(doc).encode())


def test_batches_write_parents_first_and_the_same_document_changes_nothing(db: None) -> None:
    # A batch of 7 interleaves many user and membership batches in one import.
    first = import_items(document_items(as_bytes(document(50))), batch_size=7)
    assert (
        first.read
        == first.changed
        == {
            "tenants": 1,
            "users": 50,
            "webPushSubscriptions": 50,
            "courses": 0,
            "memberships": 50,
            "bookings": 0,
        }
    )
    again = import_items(document_items(as_bytes(document(50))), batch_size=7)
    assert set(again.changed.values()) == {0} and again.read["users"] == 50
    changed = document(50)
    changed["users"][3]["preferences"] = {"channels": {"sms": True, "line": False}}
    changed["users"][9]["webPushSubscriptions"][0]["keys"]["auth"] = "new"
    third = import_items(document_items(as_bytes(changed)), batch_size=7)
    assert (third.changed["users"], third.changed["webPushSubscriptions"]) == (1, 1)
    assert sum(third.changed.values()) == 2
    with session_scope() as session:
        user = session.get(User, (TENANT, "u00003"))
        assert user is not None and user.preferences == {"channels": {"sms": True, "line": False}}


def test_json_lines_and_one_document_import_the_same(db: None, tmp_path: Path) -> None:
    doc = document(20)
    lines = [json.dumps({"tenants": TENANTS})]
    lines += [json.dumps({"users": [u]}) for u in doc["users"]]
    lines += ["", json.dumps({"memberships": doc["memberships"]})]
    summary = import_stream(io.BytesIO("\n".join(lines).encode()), json_lines=True)
    assert summary.changed["users"] == summary.changed["memberships"] == 20
    assert set(import_stream(as_bytes(doc)).changed.values()) == {0}
    assert list(json_lines_items(lines)) == list(document_items(as_bytes(doc)))


def test_the_document_is_read_as_it_is_parsed() -> None:
    """The first item comes out when a small part of a large document has been read."""
    doc = as_bytes(document(5_000))
    size = len(doc.getvalue())
    items = document_items(doc)
    assert next(items)[0] == "tenants"
    assert next(items)[1]["id"] == "u00000"
    assert doc.tell() < size / 10


def test_an_invalid_item_imports_nothing_and_lists_every_error(db: None) -> None:
    doc = document(30)
    doc["users"][4]["email"] = 5
    doc["users"][17]["active"] = "sometimes"
    doc["memberships"][2]["expiresAt"] = "soon"
    with pytest.raises(InvalidEvent) as caught:
        import_items(document_items(as_bytes(doc)), batch_size=5)
    assert [e["field"] for e in caught.value.errors] == [
        "users.4.email",
        "users.17.active",
        "memberships.2.expiresAt",
    ]
    assert count(User) == count(Membership) == count(WebPushSubscription) == 0


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ({"users": [member(1, tenantId="no-such-gym")]}, "refers to a tenant, user or course"),
        ({"tenants": TENANTS, "bookings": [{"id": "b", "tenantId": TENANT}]}, "Field required"),
        ({"tenants": TENANTS, "members": [{"id": "x"}]}, "unknown section"),
        ({"tenants": "all"}, "tenants: expected a list"),
        ({"users": [{"id": "u\x00", "tenantId": TENANT}]}, "NUL character"),
    ],
)
def test_bad_documents_are_refused_with_a_clear_error(
    db: None, doc: dict[str, Any], message: str
) -> None:
    with pytest.raises(InvalidEvent) as caught:
        import_stream(as_bytes(doc))
    assert message in str(caught.value)
    assert count(User) == count(Booking) == 0


def test_truncated_json_is_refused(db: None) -> None:
    with pytest.raises(InvalidEvent, match="malformed JSON"):
        import_stream(io.BytesIO(json.dumps(document(3)).encode()[:-40]))
    assert count(User) == 0


def test_cli_import_of_json_lines_prints_counts_and_a_summary(db: None, tmp_path: Path) -> None:
    path = tmp_path / "directory.jsonl"
    doc = document(12)
    path.write_text(
        "\n".join(json.dumps({key: value}) for key, value in doc.items()), encoding="utf-8"
    )
    result = CliRunner().invoke(main, ["import", str(path)])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["changed"]["users"] == 12
    assert "imported 37 rows" in result.stderr and "users/s" in result.stderr
    again = CliRunner().invoke(main, ["import", str(path), "--progress"])
    assert set(json.loads(again.stdout)["changed"].values()) == {0}
    assert "\rread tenants 1, users 12" in again.stderr
    bad = CliRunner().invoke(main, ["import", "--document", str(path)])
    assert bad.exit_code == 1 and "malformed JSON" in bad.stdout
    with session_scope() as session:
        assert len(session.scalars(select(User.id)).all()) == 12

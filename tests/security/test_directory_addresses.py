"""Email addresses are checked by a real parser at import: one address per field."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from notifier.db import session_scope
from notifier.directory import import_document
from notifier.events import InvalidEvent
from notifier.models import User
from tests.helpers import directory, person

pytestmark = pytest.mark.usefixtures("db")


def stored_emails() -> dict[str, str | None]:
    with session_scope() as session:
        return {user.id: user.addresses.get("email") for user in session.scalars(select(User))}


@pytest.mark.parametrize(
    "address",
    [
        "a@b.com, evil@x.com",
        "a@b.com; evil@x.com",
        "a@b.com evil@x.com",
        "Amy <amy@example.com>",
        "amy@example.com\r\nBcc: evil@x.example",
        "undisclosed-recipients:;",
        "amy",
        "amy@",
        "@example.com",
        "amy@localhost",
    ],
)
def test_anything_but_one_address_is_refused_and_nothing_is_imported(address: str) -> None:
    doc = directory(person("u1"), person("u2", email=address))
    with pytest.raises(InvalidEvent) as exc:
        import_document(doc)
    [error] = exc.value.errors
    assert error["field"] == "users.1.email"
    assert "must be one email address" in error["message"]
    assert stored_emails() == {}  # the whole document is refused, the valid user too


def test_the_error_says_what_is_wrong() -> None:
    with pytest.raises(InvalidEvent) as exc:
        import_document(directory(person("u1", email="a@b.com, evil@x.com")))
    assert "invalid characters" in str(exc.value) and "','" in str(exc.value)


@pytest.mark.parametrize(
    "address", ["amy@example.com", "Amy.Lin+gym@Example.com", "王小明@例子.台灣", "o'neil@kyo.app"]
)
def test_one_address_is_imported_as_written(address: str) -> None:
    import_document(directory(person("u1", email=address)))
    assert stored_emails() == {"u1": address}


def test_no_address_is_allowed() -> None:
    import_document(directory(person("u1", email=None), person("u2", email="")))
    assert stored_emails() == {"u1": None, "u2": None}

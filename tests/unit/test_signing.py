from __future__ import annotations

import pytest

from notifier import signing


def test_round_trip_and_purpose_binding() -> None:
    token = signing.sign({"t": "gym-a", "u": "u1"}, "unsubscribe")
    assert signing.verify(token, "unsubscribe") == {"t": "gym-a", "u": "u1"}
    with pytest.raises(signing.BadSignature):
        signing.verify(token, "click")


@pytest.mark.parametrize(
    "mangle",
    [
        lambda t: t[:-2] + ("AA" if not t.endswith("AA") else "BB"),
        lambda t: "x" + t,
        lambda t: t.split(".")[0],
        lambda t: "",
    ],
)
def test_tampered_tokens_are_rejected(mangle) -> None:  # type: ignore[no-untyped-def]
    token = signing.sign({"t": "gym-a", "u": "u1"}, "unsubscribe")
    with pytest.raises(signing.BadSignature):
        signing.verify(mangle(token), "unsubscribe")


def test_unsubscribe_url_is_signed() -> None:
    url = signing.unsubscribe_url("gym-a", "u1", "email")
    token = url.rsplit("/u/", 1)[1]
    assert signing.verify(token, "unsubscribe") == {"t": "gym-a", "u": "u1", "c": "email"}

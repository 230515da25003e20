"""The outcome recorder (notifier.outcomes) without a worker: a digest turns a channel off
as a send does, and gone Web Push subscriptions are removed after the outcome commits, by
the recorder, whether a send or a digest met them."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import select

from channels import registry
from config.settings import get_settings
from notifier import directory as directory_module
from notifier import outcomes
from notifier.db import session_scope
from notifier.digests import flush, send_digest
from notifier.directory import import_document
from notifier.models import ChannelState, DeadLetter, Delivery, WebPushSubscription
from notifier.pipeline import accept, plan
from notifier.sending import send_chunk
from tests.helpers import directory, event, person
from tests.integration.conftest import deliveries
from tests.peers.push import PushService, vapid_keys

pytestmark = pytest.mark.usefixtures("db")

SUBJECT = "mailto:ops@example.com"
VAPID_PRIVATE, VAPID_PUBLIC, _ = vapid_keys()


def _digest_of_three(channel: str, now: dt.datetime) -> int:
    """Three check-ins batched for u1 on `channel`, flushed into one digest: its id."""
    for i in range(3):
        accepted = accept(
            event(
                "member.checked_in",
                eventId=f"ci-{i}",
                data={"memberName": "Amy", "checkedInAt": f"2026-11-22T09:0{i}:00+08:00"},
                metadata={"userId": "u1", "channels": [channel]},
            )
        )
        assert accepted.event_pk is not None
        assert plan(accepted.event_pk, now=now).chunks == []  # batched, not sent
    [digest_id] = flush(now=now + dt.timedelta(seconds=40))
    return digest_id


def _committed_channel_state() -> ChannelState | None:
    with session_scope() as session:  # another connection: only what is committed shows
        return session.scalars(select(ChannelState)).one_or_none()


@pytest.mark.parametrize("outcome", ["disable", "park"])
def test_a_digest_on_revoked_credentials_or_a_reached_quota_turns_the_channel_off(
    scripted: Any, outcome: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    alarms: list[tuple[str, str, bool]] = []

    def alarm(severity: str, title: str, **kw: Any) -> None:
        # Raised after the commit: the channel's new state is already in the database.
        alarms.append((severity, kw["key"], _committed_channel_state() is not None))

    monkeypatch.setattr(outcomes, "raise_alarm", alarm)
    scripted.use("email")
    scripted.channel.reset(outcome)
    import_document(directory(person("u1", preferences={"priority": {"low": ["email"]}})))
    now = dt.datetime.now(dt.UTC)
    digest_id = _digest_of_three("email", now)

    later = now + dt.timedelta(seconds=40)
    assert send_digest(digest_id, now=later).status == "failed"

    assert {r.status for r in deliveries()} == {"failed"}
    state = _committed_channel_state()
    assert state is not None and (state.tenant_id, state.channel) == ("gym-a", "email")
    if outcome == "disable":
        assert (state.state, state.until) == ("disabled", None)
        assert alarms == [("CRITICAL", "channel_disabled:gym-a:email", True)]
    else:
        assert state.state == "parked"
        assert state.until == later + dt.timedelta(seconds=3600)
        assert alarms == [("ERROR", "quota:gym-a:email", True)]
    with session_scope() as session:
        [letter] = session.scalars(select(DeadLetter))
    assert letter.payload["digestId"] == digest_id and len(letter.payload["deliveries"]) == 3
    assert len(scripted.channel.calls) == 1


@pytest.fixture(scope="module")
def push_service() -> Iterator[PushService]:
    with PushService(subject=SUBJECT, vapid_public_key=VAPID_PUBLIC) as service:
        yield service


@pytest.fixture
def push(push_service: PushService, monkeypatch: pytest.MonkeyPatch) -> Iterator[PushService]:
    """The real Web Push channel, sending to the local push service."""
    push_service.reset()
    monkeypatch.setenv("VAPID_PRIVATE_KEY", VAPID_PRIVATE)
    monkeypatch.setenv("VAPID_SUBJECT", SUBJECT)
    monkeypatch.setenv("NOTIFIER_WEB_PUSH_TIMEOUT", "2")
    monkeypatch.setitem(get_settings().backends, "web_push", "webpush")
    registry.reset_channels()
    yield push_service
    push_service.reset()
    registry.reset_channels()


class Removals:
    """Wraps the directory's removal: what it was asked to remove, and the status of every
    delivery as committed at that moment (read on another connection)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, fail: bool = False) -> None:
        self.calls: list[tuple[str, list[str], set[str]]] = []
        self.original = directory_module.delete_push_subscriptions
        self.fail = fail
        monkeypatch.setattr(directory_module, "delete_push_subscriptions", self)

    def __call__(self, tenant_id: str, endpoints: list[str]) -> None:
        with session_scope() as session:
            committed = set(session.scalars(select(Delivery.status)))
        self.calls.append((tenant_id, list(endpoints), committed))
        if self.fail:
            raise RuntimeError("database down")
        self.original(tenant_id, endpoints)


def _subscribed(push: PushService, gone: int, alive: int, low: bool = False) -> list[Any]:
    subscriptions = [push.subscribe() for _ in range(gone + alive)]
    for sub in subscriptions[:gone]:
        push.script(sub.id, 410)
    prefs = {"priority": {"low" if low else "medium": ["web_push"]}}
    import_document(
        directory(
            person("u1", preferences=prefs, webPushSubscriptions=[s.info for s in subscriptions])
        )
    )
    return subscriptions


def _endpoints_left() -> set[str]:
    with session_scope() as session:
        return set(session.scalars(select(WebPushSubscription.endpoint)))


@pytest.mark.parametrize("alive", [1, 0])
def test_a_send_removes_gone_subscriptions_after_its_outcome_commits(
    push: PushService, monkeypatch: pytest.MonkeyPatch, alive: int
) -> None:
    subs = _subscribed(push, gone=1, alive=alive)
    removals = Removals(monkeypatch)
    accepted = accept(event("payment.success", metadata={"userId": "u1", "channels": ["web_push"]}))
    assert accepted.event_pk is not None
    [(channel, ids)] = plan(accepted.event_pk).chunks

    outcome = send_chunk(channel, ids)

    status = "sent" if alive else "failed"
    assert (outcome.sent, outcome.failed) == ((1, 0) if alive else (0, 1))
    # Removed once, by the recorder, when the outcome was already committed.
    assert removals.calls == [("gym-a", [subs[0].endpoint], {status})]
    assert _endpoints_left() == {s.endpoint for s in subs[1:]}


def test_a_removal_that_fails_changes_no_outcome(
    push: PushService, monkeypatch: pytest.MonkeyPatch
) -> None:
    subs = _subscribed(push, gone=1, alive=1)
    removals = Removals(monkeypatch, fail=True)
    accepted = accept(event("payment.success", metadata={"userId": "u1", "channels": ["web_push"]}))
    assert accepted.event_pk is not None
    [(channel, ids)] = plan(accepted.event_pk).chunks

    assert send_chunk(channel, ids).sent == 1

    assert [r.status for r in deliveries()] == ["sent"]
    assert len(removals.calls) == 1
    # Still there: the next 404/410 reports it gone again.
    assert _endpoints_left() == {s.endpoint for s in subs}


def test_a_digest_removes_gone_subscriptions_after_its_outcome_commits(
    push: PushService, monkeypatch: pytest.MonkeyPatch
) -> None:
    subs = _subscribed(push, gone=1, alive=1, low=True)
    removals = Removals(monkeypatch)
    now = dt.datetime.now(dt.UTC)
    digest_id = _digest_of_three("web_push", now)

    assert send_digest(digest_id, now=now + dt.timedelta(seconds=40)).status == "sent"

    assert removals.calls == [("gym-a", [subs[0].endpoint], {"sent"})]
    assert _endpoints_left() == {subs[1].endpoint}
    assert len(push.for_subscription(subs[1].id)) == 1

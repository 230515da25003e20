"""Issue 7.5: generated bad events through every way in: `publish`, `notify.delay`,
POST /events and SQS. Each one is accepted or rejected with a clear error (a list of
field/message pairs); nothing crashes a worker, the web app never answers 500, and the SQS
consumer deletes every message only once its event or its dead letter is stored."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from notifier import InvalidEvent, notify, publish
from notifier.directory import import_document
from notifier.events import EVENT_TYPES
from tests.helpers import TENANT, directory, event, person
from tests.peers.moto import MotoPeer, moto_peer  # noqa: F401  (the session's moto server)
from tests.reliability.badinput import events
from tests.reliability.conftest import FULL

pytestmark = pytest.mark.usefixtures("db")


def examples(ci: int, full: int) -> Any:
    return settings(
        max_examples=full if FULL else ci,
        deadline=None,
        suppress_health_check=[
            HealthCheck.function_scoped_fixture,
            HealthCheck.too_slow,
            HealthCheck.data_too_large,
            HealthCheck.large_base_example,
        ],
    )


def clear_errors(errors: Any) -> bool:
    return (
        isinstance(errors, list)
        and len(errors) > 0
        and all(
            isinstance(e, dict)
            and isinstance(e.get("field"), str)
            and isinstance(e.get("message"), str)
            and e["message"]
            for e in errors
        )
    )


@pytest.fixture
def members(db: None) -> None:
    import_document(directory(person("u1"), person("u2")))


@pytest.mark.usefixtures("members")
@pytest.mark.parametrize("event_type", EVENT_TYPES)
def test_the_unbroken_events_are_accepted(event_type: str) -> None:
    """The baseline the strategies break: every type goes through (the tests below are not
    passing merely because everything is refused)."""
    assert publish(event(event_type, user="u1"))


PYTHON_EXTRAS = st.sampled_from([float("nan"), float("inf"), -float("inf"), 10**400 // 10**380])


@pytest.mark.usefixtures("members")
@examples(ci=80, full=800)
@given(raw=st.one_of(events(), events().map(lambda e: {"eventType": e, "data": e})))
def test_publish_accepts_or_raises_invalid_event(raw: Any) -> None:
    try:
        event_id = publish(raw)
    except InvalidEvent as exc:
        assert clear_errors(exc.errors), exc.errors
        assert str(exc)
    else:
        assert isinstance(event_id, str) and event_id


@pytest.mark.usefixtures("members")
@examples(ci=20, full=200)
@given(raw=events(), extra=PYTHON_EXTRAS)
def test_publish_rejects_values_json_cannot_carry(raw: Any, extra: Any) -> None:
    if isinstance(raw, dict) and isinstance(raw.get("data"), dict):
        raw["data"]["amount"] = extra
    try:
        publish(raw)
    except InvalidEvent as exc:
        assert clear_errors(exc.errors), exc.errors


@pytest.mark.usefixtures("members", "celery_worker")
@examples(ci=30, full=300)
@given(raw=events())
def test_notify_answers_accepted_duplicate_or_rejected(raw: Any) -> None:
    result = notify.delay(raw).get(timeout=60)
    assert result["status"] in ("accepted", "duplicate", "rejected"), result
    if result["status"] == "rejected":
        assert clear_errors(result["errors"]), result
    assert isinstance(result["event_id"], str) and result["event_id"]


@pytest.mark.usefixtures("members", "celery_worker")
def test_the_worker_still_works_after_the_junk() -> None:
    result = notify.delay(event("payment.success", user="u1", eventId="after-junk")).get(60)
    assert result == {"event_id": "after-junk", "status": "accepted", "errors": []}


@pytest.fixture
def web_client(members: None) -> Iterator[tuple[Any, str]]:
    from fastapi.testclient import TestClient

    from notifier.web.app import create_app
    from notifier.web.auth import issue_api_key

    with TestClient(create_app(), raise_server_exceptions=False) as client:
        yield client, issue_api_key(TENANT)


@examples(ci=40, full=400)
@given(raw=st.one_of(events(), st.lists(events(huge=False), min_size=1, max_size=5)))
def test_post_events_never_answers_500(web_client: tuple[Any, str], raw: Any) -> None:
    client, key = web_client
    body = json.dumps(raw)  # ASCII: lone surrogates travel as \\ud800 escapes, as JSON allows
    response = client.post(
        "/events",
        content=body,
        headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
    )
    assert response.status_code in (200, 400, 409, 413, 422), (
        response.status_code,
        response.text,
    )
    if response.status_code in (200, 409, 422):
        results = response.json()["results"]
        assert len(results) == (len(raw) if isinstance(raw, list) else 1)
        for result in results:
            # A repeated event (a batch may hold one twice) is an exact duplicate or says why.
            assert result["status"] in ("queued", "duplicate") or clear_errors(result["errors"])
            if result["status"] == "rejected" or result["errors"]:
                assert clear_errors(result["errors"]), result
    else:
        assert response.json()["detail"]


@pytest.fixture
def queue(moto_peer: MotoPeer, members: None) -> Iterator[str]:  # noqa: F811
    moto_peer.reset()
    with pytest.MonkeyPatch.context() as patch:
        for name, value in moto_peer.env().items():
            patch.setenv(name, value)
        sqs = boto3.client("sqs")
        yield sqs.create_queue(QueueName="bad-input")["QueueUrl"]


@examples(ci=8, full=60)
@given(bodies=st.lists(events(huge=False), min_size=1, max_size=10))
def test_sqs_ingest_stores_or_dead_letters_every_message(queue: str, bodies: list[Any]) -> None:
    from notifier.ingest import consume
    from tasks import enqueue

    sqs = boto3.client("sqs")
    for body in bodies:
        text = json.dumps(body)
        if len(text.encode()) > 250_000:  # over SQS's own message limit
            continue
        sqs.send_message(QueueUrl=queue, MessageBody=text)
    sent = sum(1 for body in bodies if len(json.dumps(body).encode()) <= 250_000)
    stats = consume(
        queue, enqueue=enqueue, stop=threading.Event(), max_batches=sent + 2, wait_seconds=0
    )
    assert stats.left_in_queue == 0, stats
    assert stats.accepted + stats.duplicates + stats.dead_lettered == sent, stats
    attributes = sqs.get_queue_attributes(
        QueueUrl=queue,
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    assert attributes == {
        "ApproximateNumberOfMessages": "0",
        "ApproximateNumberOfMessagesNotVisible": "0",
    }

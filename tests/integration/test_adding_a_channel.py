"""docs/adding-a-channel.md, proved: a channel declared in one module (here, in this test)
plus its templates is planned and sent end to end, through the outbox and through a backend
of its own, with its address in the directory's `addresses` and no migration."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import jinja2
import pytest
from sqlalchemy import select

from channels import registry
from channels.base import Channel, DeliveryResult, Message, PermanentChannelError
from config.settings import get_settings
from notifier import rendering
from notifier.db import session_scope
from notifier.directory import get_user, import_document
from notifier.events import InvalidEvent
from notifier.models import DeliveryStatus, OutboxMessage, User
from notifier.pipeline import accept, plan
from notifier.sending import send_chunk
from notifier.web.outbox import message_view
from tests.helpers import directory, event, person
from tests.integration.conftest import deliveries

pytestmark = pytest.mark.usefixtures("db")


class PagerChannel(Channel):
    """The channel: what docs/adding-a-channel.md step 1 declares."""

    name = "pager"
    label = "Pager"
    template_parts = ("txt",)
    outbox_color = "#111827"


@dataclass(frozen=True)
class PagerSettings:
    token: str = field(repr=False)


class PagerBackend(PagerChannel):
    """A backend (step 2): typed settings given once, the three steps."""

    backend = "pager"
    sent: ClassVar[list[tuple[str, str]]] = []

    def __init__(self, settings: PagerSettings | None = None) -> None:
        super().__init__()
        self.settings = settings or PagerSettings(token="t-1")

    def build_payload(self, message: Message) -> dict[str, Any]:
        if not message.address:
            raise PermanentChannelError("no pager number", **self.error_context(message))
        return {"to": message.address, "text": message.text}

    def post(self, message: Message, payload: dict[str, Any]) -> str:
        self.sent.append((payload["to"], payload["text"]))
        return f"page-{message.delivery_id}"

    def parse_response(self, message: Message, response: str) -> DeliveryResult:
        return DeliveryResult(provider_message_id=response, raw_response={"id": response})


@pytest.fixture
def pager(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The module registered and its template written (step 3), as if they shipped."""
    template = tmp_path / "en" / "payment.failed" / "pager.txt.j2"
    template.parent.mkdir(parents=True)
    template.write_text("PAGE {{ data.paymentId }} failed: {{ data.reason }}", encoding="utf-8")
    env = rendering.environment()
    loaders: list[jinja2.BaseLoader] = [jinja2.FileSystemLoader(tmp_path)]
    if env.loader is not None:
        loaders.append(env.loader)
    overlay = env.overlay(loader=jinja2.ChoiceLoader(loaders))
    monkeypatch.setattr(rendering, "environment", lambda: overlay)
    registry.register(PagerChannel, PagerBackend)
    PagerBackend.sent = []
    yield
    get_settings().backends.pop("pager", None)
    registry.unregister("pager")


def _send_one() -> None:
    # A critical event goes to every channel that reaches the person. (A priority list
    # naming "pager" would need the channel in the preferences schema, which is built from
    # the channel modules when it is imported: a module in channels/ is, one registered by a
    # test is not.)
    import_document(directory(person("u1", addresses={"pager": "PG-7"})))
    accepted = accept(event("payment.failed", metadata={"userId": "u1", "priority": "critical"}))
    assert accepted.event_pk is not None
    chunks = dict(plan(accepted.event_pk).chunks)  # and the person's other channels
    send_chunk("pager", chunks["pager"])


@pytest.mark.usefixtures("pager")
def test_a_new_channel_goes_through_the_outbox_with_no_migration() -> None:
    _send_one()

    [delivery] = deliveries(channel="pager")
    assert delivery.status == DeliveryStatus.SENT
    with session_scope() as session:
        user = session.get(User, ("gym-a", "u1"))
        assert user is not None and user.addresses["pager"] == "PG-7"
        [stored] = session.scalars(select(OutboxMessage)).all()
        view = message_view(stored)
    assert (stored.channel, stored.address) == ("pager", "PG-7")
    assert stored.body_text is not None and stored.body_text.startswith("PAGE ")
    assert (view["view"], view["color"], view["label"]) == ("text", "#111827", "Pager")
    person_doc = get_user("gym-a", "u1")
    assert person_doc is not None and person_doc["addresses"] == {"pager": "PG-7"}
    assert person_doc["email"] == "u1@example.com"  # the document's own fields still round-trip


@pytest.mark.usefixtures("pager")
def test_a_new_channel_sends_with_its_own_backend() -> None:
    get_settings().backends["pager"] = "pager"

    _send_one()

    [delivery] = deliveries(channel="pager")
    assert (delivery.status, delivery.provider_message_id) == (
        DeliveryStatus.SENT,
        f"page-{delivery.id}",
    )
    [(to, text)] = PagerBackend.sent
    assert to == "PG-7" and text.startswith("PAGE ")


@pytest.mark.usefixtures("pager")
@pytest.mark.parametrize("channel", ["fax", "email", "topic"])
def test_addresses_take_only_channels_without_a_field_of_their_own(channel: str) -> None:
    """An unknown channel, a topic, or email (its field checks for exactly one address):
    refused, naming the channel."""
    with pytest.raises(InvalidEvent) as refused:
        import_document(directory(person("u1", addresses={channel: "x@example.com, y@x.com"})))
    assert channel in str(refused.value)

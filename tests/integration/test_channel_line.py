"""The LINE channel against a local api.line.me stand-in that parses requests with the SDK."""

from __future__ import annotations

import copy
import json
import socket
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from linebot.v3.messaging import (
    FlexMessage,
    MulticastRequest,
    PushMessageRequest,
    TemplateMessage,
    TextMessage,
)
from linebot.v3.messaging import Message as LineMessage

from channels.base import (
    DeliveryResult,
    Message,
    NotifierError,
    PermanentChannelError,
    TransientChannelError,
)
from channels.line import LineChannel, seconds_until_next_month, utf16_len
from notifier import rendering
from tests.peers.line import LinePeer
from tests.unit.samples import SAMPLE_DATA

ENV_TOKEN = "env-line-token"
TENANT_TOKEN = "tenant-a-line-token"
HOSTILE = '"}<script>alert(1)</script>\\u0000\n{{ x }}'
MONTHLY = "You have reached your monthly limit."


@pytest.fixture(scope="module")
def peer_server() -> Iterator[LinePeer]:
    peer = LinePeer().start()
    yield peer
    peer.stop()


@pytest.fixture
def peer(peer_server: LinePeer, monkeypatch: pytest.MonkeyPatch) -> LinePeer:
    peer_server.reset(tokens={ENV_TOKEN})
    monkeypatch.setenv("LINE_API_BASE_URL", peer_server.url)
    monkeypatch.setenv("LINE_CHANNEL_ACCESS_TOKEN", ENV_TOKEN)
    monkeypatch.setattr(LineChannel, "connect_timeout", 2.0)
    monkeypatch.setattr(LineChannel, "read_timeout", 2.0)
    return peer_server


@pytest.fixture
def channel() -> LineChannel:
    return LineChannel()


def user_id(n: int) -> str:
    return "U" + uuid.uuid5(uuid.NAMESPACE_OID, f"user-{n}").hex


def make(n: int, text: str = "Class starts at 19:00", **overrides: Any) -> Message:
    fields: dict[str, Any] = {
        "delivery_id": n,
        "tenant_id": "gym-a",
        "event_type": "course.reminder",
        "channel": "line",
        "recipient": f"u-{n}",
        "address": user_id(n),
        "subject": "",
        "text": text,
        "retry_key": uuid.uuid5(uuid.NAMESPACE_URL, f"delivery-{n}").hex,
    }
    fields.update(overrides)
    return Message(**fields)


def template_context(event_type: str, locale: str, **data: Any) -> dict[str, Any]:
    return {
        "data": {**copy.deepcopy(SAMPLE_DATA[event_type]), **data},
        "event": {"id": "evt-1", "type": event_type, "priority": "medium"},
        "recipient": {"id": "u-1", "name": "Amy", "locale": locale, "timezone": "Asia/Taipei"},
        "tenant": {"id": "gym-a", "name": "Kyo Gym A", "locale": locale},
        "brand": rendering.brand(None),
        "links": {"unsubscribe": "https://kyo.app/unsubscribe?token=abc"},
    }


def render_line(event_type: str, locale: str, **data: Any) -> list[dict[str, Any]]:
    name = f"{locale}/{event_type}/line.messages.json.j2"
    context = template_context(event_type, locale, **data)
    text = rendering.environment().get_template(name).render(context)
    messages = json.loads(text)
    assert isinstance(messages, list)
    return messages


# -- templates (no peer) ---------------------------------------------------------------------


@pytest.mark.parametrize("locale", ["en", "zh-TW"])
@pytest.mark.parametrize("event_type", ["member.membership_expiring", "course.reminder"])
@pytest.mark.parametrize("name", ["王小明", HOSTILE])
def test_line_templates_render_valid_sdk_messages(event_type: str, locale: str, name: str) -> None:
    fields = (
        ("memberName",)
        if event_type.startswith("member")
        else (
            "courseName",
            "instructorName",
            "location",
        )
    )
    messages = render_line(event_type, locale, **dict.fromkeys(fields, name))

    assert 1 <= len(messages) <= 5
    for item in messages:
        model = LineMessage.from_dict(item)
        assert model.to_dict() == item  # nothing the SDK does not know
    item = messages[0]
    if event_type == "member.membership_expiring":
        assert item["type"] == "flex" and utf16_len(item["altText"]) <= 1500
        bubble = item["contents"]
        assert bubble["type"] == "bubble"
        assert set(bubble) >= {"header", "body", "footer"}
        body_texts = [c["text"] for c in bubble["body"]["contents"]]
        assert any(name in text for text in body_texts)  # the hostile name, intact
        assert any("Gold" in text for text in body_texts)
        buttons = bubble["footer"]["contents"]
        assert [b["action"]["uri"].split("?")[0] for b in buttons] == [
            "https://kyo.app/membership/renew",
            "https://kyo.app/profile",
        ]
        assert buttons[0]["style"] == "primary" and buttons[0]["color"] == "#1DBF73"
    else:
        assert item["type"] == "template" and utf16_len(item["altText"]) <= 400
        template = item["template"]
        assert template["type"] == "buttons"
        assert utf16_len(template["title"]) <= 40
        assert utf16_len(template["text"]) <= 60  # with a title
        assert 1 <= len(template["actions"]) <= 4
        assert [a["uri"].split("?")[0] for a in template["actions"]] == [
            "https://kyo.app/courses",
            "https://kyo.app/courses/cancel",
        ]
        assert template["text"].startswith(name[:3])  # the course name comes first
        assert name[:10] in item["altText"]


@pytest.mark.parametrize("locale", ["en", "zh-TW"])
@pytest.mark.parametrize("event_type", ["member.membership_expiring", "course.reminder"])
def test_line_templates_without_a_website_have_no_links(event_type: str, locale: str) -> None:
    name = f"{locale}/{event_type}/line.messages.json.j2"
    context = template_context(event_type, locale)
    context["brand"] = rendering.brand({"website_url": "", "color": "red;x"})
    messages = json.loads(rendering.environment().get_template(name).render(context))
    for item in messages:
        LineMessage.from_dict(item)
    assert "https://" not in json.dumps(messages)


# -- push ---------------------------------------------------------------------------------


def test_push_text(peer: LinePeer, channel: LineChannel) -> None:
    message = make(1, text="Hi Amy, class at 19:00")

    result = channel.send(message)

    assert isinstance(result, DeliveryResult)
    [request] = peer.requests
    assert request.path == "/v2/bot/message/push"
    assert isinstance(request.request, PushMessageRequest)
    assert request.recipients == [message.address]
    assert isinstance(request.request.messages[0], TextMessage)
    assert request.messages == [{"type": "text", "text": "Hi Amy, class at 19:00"}]
    assert request.retry_key == str(uuid.UUID(message.retry_key or ""))
    assert request.token == ENV_TOKEN
    assert result.provider_message_id is not None
    assert result.raw_response["body"]["sentMessages"][0]["id"] == result.provider_message_id
    assert result.raw_response["x-line-request-id"] == request.response_headers["x-line-request-id"]
    assert ENV_TOKEN not in json.dumps(result.raw_response)


def test_push_long_text_is_cut_to_5000_utf16_units(peer: LinePeer, channel: LineChannel) -> None:
    channel.send(make(2, text="😀" * 3000))  # 6,000 UTF-16 units

    text = peer.requests[0].messages[0]["text"]
    assert utf16_len(text) <= 5000
    assert text.endswith("…")


def test_push_flex_and_buttons(peer: LinePeer, channel: LineChannel) -> None:
    flex = render_line("member.membership_expiring", "zh-TW", memberName=HOSTILE)
    buttons = render_line("course.reminder", "en")

    first = channel.send(make(3, attributes={"line_messages": flex}))
    second = channel.send(make(4, attributes={"line_messages": buttons}))
    both = channel.send(make(5, attributes={"line_messages": flex + buttons}))

    assert all(isinstance(r, DeliveryResult) for r in (first, second, both))
    parsed = [r.request.messages for r in peer.requests]
    assert [type(m) for m in parsed[0]] == [FlexMessage]
    assert [type(m) for m in parsed[1]] == [TemplateMessage]
    assert [type(m) for m in parsed[2]] == [FlexMessage, TemplateMessage]
    assert peer.requests[0].messages == flex  # sent as rendered
    assert peer.requests[1].messages == buttons
    bubble_body = peer.requests[0].messages[0]["contents"]["body"]["contents"]
    assert f"嗨 {HOSTILE}!" in [c["text"] for c in bubble_body]
    assert len(both.raw_response["body"]["sentMessages"]) == 2


def test_tenant_token_is_the_one_the_peer_sees(peer: LinePeer, channel: LineChannel) -> None:
    peer.reset(tokens={TENANT_TOKEN, ENV_TOKEN})
    own = make(6, credentials={"line_channel_access_token": TENANT_TOKEN})

    channel.send(own)
    channel.send(make(7))

    assert [r.token for r in peer.requests] == [TENANT_TOKEN, ENV_TOKEN]
    assert TENANT_TOKEN not in repr(own)


def test_wrong_token_is_401_and_disables_the_channel(peer: LinePeer, channel: LineChannel) -> None:
    with pytest.raises(PermanentChannelError) as info:
        channel.send(make(8, credentials={"line_channel_access_token": "revoked"}))

    error = info.value
    assert (error.status_code, error.disable_channel, error.suppress) == (401, True, False)
    assert (error.channel, error.delivery_id) == ("line", 8)
    assert peer.requests[0].status == 401
    assert "revoked" not in str(error) + json.dumps(error.response)


def test_no_token_at_all_is_permanent(
    peer: LinePeer, channel: LineChannel, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("LINE_CHANNEL_ACCESS_TOKEN")
    with pytest.raises(PermanentChannelError) as info:
        LineChannel().send(make(9))  # the settings are read when the channel is built
    assert info.value.disable_channel
    assert peer.requests == []


PROVIDER_ROWS = [
    # status, body, error class, flags
    (400, {"message": "The request body has 1 error(s)"}, PermanentChannelError, {}),
    (403, {"message": "Not allowed"}, PermanentChannelError, {"disable_channel": True}),
    (413, {"message": "Request Entity Too Large"}, PermanentChannelError, {}),
    (404, {"message": "Not found"}, PermanentChannelError, {}),
    (429, {"message": "The API rate limit has been exceeded. Try again later."},
     TransientChannelError, {"retry_after": None}),
    (429, {"message": MONTHLY}, PermanentChannelError, {"disable_channel": False}),
    (500, {"message": "Internal server error"}, TransientChannelError, {}),
    (502, "<html>Bad Gateway</html>", TransientChannelError, {}),
    (503, None, TransientChannelError, {}),
]  # fmt: skip


@pytest.mark.parametrize(("status", "body", "error_class", "flags"), PROVIDER_ROWS)
def test_provider_table(
    peer: LinePeer,
    channel: LineChannel,
    status: int,
    body: Any,
    error_class: type[NotifierError],
    flags: dict[str, Any],
) -> None:
    peer.script(status, body=body)

    with pytest.raises(error_class) as info:
        channel.send(make(10))

    error = info.value
    assert type(error) is error_class
    assert (error.channel, error.delivery_id, error.status_code) == ("line", 10, status)
    assert error.response["status"] == status
    for name, value in flags.items():
        assert getattr(error, name) == value
    if isinstance(error, PermanentChannelError):
        assert not error.suppress
        if body == {"message": MONTHLY}:
            assert error.park_seconds is not None
            assert 0 < error.park_seconds <= 31 * 86400
        else:
            assert error.park_seconds is None
            assert error.disable_channel == (status in (401, 403))
    else:
        assert isinstance(error, TransientChannelError)
        assert error.retry_after is None  # LINE sends no Retry-After


def test_409_is_sent(peer: LinePeer, channel: LineChannel) -> None:
    peer.script(
        409,
        {"message": "The retry key is already accepted"},
        {"x-line-accepted-request-id": "accepted-req-1"},
    )

    result = channel.send(make(11))

    assert isinstance(result, DeliveryResult)
    assert result.provider_message_id == "accepted-req-1"
    assert result.raw_response["status"] == 409


def test_timeout_then_retry_reuses_the_key_and_409_is_sent(
    peer: LinePeer, channel: LineChannel, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(LineChannel, "read_timeout", 0.3)
    peer.script(200, delay=1.5)  # LINE accepts it but answers too late
    message = make(12)

    with pytest.raises(TransientChannelError) as info:
        channel.send(message)
    assert info.value.status_code is None
    assert (info.value.channel, info.value.delivery_id) == ("line", 12)

    result = channel.send(message)  # the pipeline's retry: the same Message

    first, second = peer.requests
    assert first.retry_key == second.retry_key == str(uuid.UUID(message.retry_key or ""))
    assert second.status == 409
    assert isinstance(result, DeliveryResult)
    assert result.provider_message_id == peer.accepted[first.retry_key or ""]


def test_5xx_then_retry_with_the_same_key_is_sent(peer: LinePeer, channel: LineChannel) -> None:
    peer.script(500, {"message": "Internal server error"})
    message = make(13)

    with pytest.raises(TransientChannelError):
        channel.send(message)
    result = channel.send(message)

    assert isinstance(result, DeliveryResult)
    assert [r.status for r in peer.requests] == [500, 200]
    assert peer.requests[0].retry_key == peer.requests[1].retry_key


def test_connection_refused_is_transient(
    peer: LinePeer, channel: LineChannel, monkeypatch: pytest.MonkeyPatch
) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    monkeypatch.setenv("LINE_API_BASE_URL", f"http://127.0.0.1:{port}")

    with pytest.raises(TransientChannelError) as info:
        LineChannel().send(make(14))
    assert info.value.status_code is None


@pytest.mark.parametrize(
    ("line_messages", "problem"),
    [
        ([{"type": "carousel-ish", "text": "x"}], "unknown type"),
        ([{"text": "no type"}], "no type"),
        ([{"type": "flex", "altText": "x"}], "contents"),
        ([{"type": "text", "text": "x"}] * 6, "at most 5"),
        ([], "non-empty"),
        ("not json", "not JSON"),
    ],
)
def test_invalid_line_messages_are_permanent(
    peer: LinePeer, channel: LineChannel, line_messages: Any, problem: str
) -> None:
    with pytest.raises(PermanentChannelError) as info:
        channel.send(make(15, attributes={"line_messages": line_messages}))

    assert problem in str(info.value)
    assert info.value.delivery_id == 15
    assert peer.requests == []


def test_monthly_park_lasts_until_the_first_of_next_month() -> None:
    import datetime as dt

    now = dt.datetime(2026, 12, 31, 23, 0, tzinfo=dt.UTC)
    assert seconds_until_next_month(now) == 3600
    now = dt.datetime(2026, 2, 1, 0, 0, 1, tzinfo=dt.UTC)
    assert seconds_until_next_month(now) == 28 * 86400 - 1


# -- send_many ----------------------------------------------------------------------------


def test_send_many_multicasts_identical_messages_in_chunks_of_500(
    peer: LinePeer, channel: LineChannel
) -> None:
    same = [make(n, text="Gym closes early today") for n in range(1000, 2200)]
    distinct = [make(n, text=f"Your personal note {n}") for n in range(1, 4)]
    batch = [*same[:300], distinct[0], *same[300:900], distinct[1], *same[900:], distinct[2]]

    results = channel.send_many(batch)

    assert len(results) == len(batch)
    multicasts = [r for r in peer.requests if r.path.endswith("/multicast")]
    pushes = [r for r in peer.requests if r.path.endswith("/push")]
    assert sorted(len(r.recipients) for r in multicasts) == [200, 500, 500]
    assert all(isinstance(r.request, MulticastRequest) for r in multicasts)
    assert len({r.retry_key for r in multicasts}) == 3
    assert all(r.status == 200 for r in peer.requests)
    multicast_to = sorted(u for r in multicasts for u in r.recipients)
    assert multicast_to == sorted(str(m.address) for m in same)
    assert sorted(r.recipients[0] for r in pushes) == sorted(str(m.address) for m in distinct)
    for result in results:
        assert isinstance(result, DeliveryResult), result
        assert isinstance(result, DeliveryResult)
    by_address = {
        m.address: r for m, r in zip(batch, results, strict=True) if isinstance(r, DeliveryResult)
    }
    for request in multicasts:  # every message of a chunk carries the chunk's request id
        ids = {by_address[u].provider_message_id for u in request.recipients}
        assert ids == {request.response_headers["x-line-request-id"]}
    for message in distinct:
        assert by_address[message.address].raw_response["body"]["sentMessages"]

    # The same batch again (a redelivered task): same chunks, same keys, LINE answers 409.
    peer.requests.clear()
    again = channel.send_many(list(reversed(batch)))
    assert {r.retry_key for r in peer.requests if r.path.endswith("/multicast")} == {
        r.retry_key for r in multicasts
    }
    assert {r.status for r in peer.requests} == {409}
    assert all(isinstance(r, DeliveryResult) for r in again)


def test_send_many_retried_chunk_reuses_its_key(
    peer: LinePeer, channel: LineChannel, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(LineChannel, "read_timeout", 0.3)
    batch = [make(n, text="Pool closed for cleaning") for n in range(20, 25)]
    peer.script(200, delay=1.5)

    first = channel.send_many(batch)
    assert all(isinstance(r, TransientChannelError) for r in first)
    assert [r.delivery_id for r in first if isinstance(r, NotifierError)] == list(range(20, 25))

    second = channel.send_many(batch[::-1])

    one, two = peer.requests
    assert one.path == two.path == "/v2/bot/message/multicast"
    assert one.retry_key == two.retry_key
    assert two.status == 409
    assert all(isinstance(r, DeliveryResult) for r in second)
    assert {r.provider_message_id for r in second if isinstance(r, DeliveryResult)} == {
        peer.accepted[one.retry_key or ""]
    }


def test_send_many_errors_per_message_in_order(peer: LinePeer, channel: LineChannel) -> None:
    peer.script(403, {"message": "forbidden"})
    batch = [
        make(30, text="same"),
        make(31, address=None),
        make(32, text="same"),
        make(33, attributes={"line_messages": [{"type": "nope"}]}),
    ]

    results = channel.send_many(batch)

    assert [type(r) for r in results] == [PermanentChannelError] * 4
    assert [r.delivery_id for r in results if isinstance(r, NotifierError)] == [30, 31, 32, 33]
    multicast_errors = [results[0], results[2]]
    assert all(
        isinstance(e, PermanentChannelError) and e.disable_channel and e.status_code == 403
        for e in multicast_errors
    )
    assert results[0] is not results[2]
    [request] = peer.requests
    assert request.path.endswith("/multicast") and len(request.recipients) == 2


def test_send_many_single_and_group_ids_go_by_push(peer: LinePeer, channel: LineChannel) -> None:
    group = "C" + "a" * 32
    batch = [make(40, text="same"), make(41, text="same", address=group), make(42, text="solo")]

    results = channel.send_many(batch)

    assert all(isinstance(r, DeliveryResult) for r in results)
    assert sorted(r.path for r in peer.requests) == ["/v2/bot/message/push"] * 3
    assert {r.retry_key for r in peer.requests} == {
        str(uuid.UUID(m.retry_key or "")) for m in batch
    }

"""Hostile values through every channel's real backend, asserted on what the peer got.

Each event carries HTML, Slack mrkdwn controls (mentions, disguised links), quotes and
backslashes, CRLF and a link with `&`, `'` and `*` in it, in the fields its templates
insert, and the person's name is hostile too. It is sent at critical priority, so every
channel goes out: LINE to the LINE stand-in, email over SMTP to a local SMTP server, SMS
and the topic to moto's SNS, Web Push to a push service that decrypts, Slack to the Slack
stand-in. Each channel must carry the values escaped for its own format (or, in plain-text
formats, exactly as sent); javascript: and data: links are refused when the event comes in.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from email.message import EmailMessage
from html.parser import HTMLParser
from typing import Any

import boto3
import pytest
from sqlalchemy import select

from notifier.db import session_scope
from notifier.directory import import_document
from notifier.models import Delivery, Event
from notifier.pipeline import accept, plan
from notifier.rendering import TEMPLATE_DIR
from notifier.sending import send_chunk
from notifier.signing import verify
from tests.helpers import TENANT, directory, event, person
from tests.peers.every import every_peer, use_real_backends

pytestmark = pytest.mark.usefixtures("db")

LINE_TOKEN = "matrix-line-token"

HTML = '<script>alert("x")</script><img src=x onerror=alert(1)>'
MRKDWN = "<!channel> <!here|here> <https://evil.example|Verify your card> *b* _i_ ~s~ `c`"
QUOTES = '"double" \'single\' back\\slash \\" \\u0022 }]}'
CRLF = "\r\nBcc: evil@x.example\r\nSubject: injected\r\n\r\n<b>body</b>"
ONE_LINE = f"{HTML} {MRKDWN} {QUOTES} &amp; &lt;"
"""For one-line fields (names, ids): everything but the line breaks."""
FREE_TEXT = f"{ONE_LINE}{CRLF}"
"""For free-text fields (reasons, messages)."""
LINK = "https://pay.example/retry?a=1&b='x'&c=*_~(1)"
"""A valid link, with the characters markup cares about that a URL may carry."""
NAME = 'Amy <img src=x onerror=alert(1)> "Lin" <!channel> & Co'
"""The person's name in the directory (templates greet them by it)."""

CASES: dict[str, dict[str, Any]] = {
    "payment.failed": {"paymentId": ONE_LINE[:128], "reason": FREE_TEXT, "retryUrl": LINK},
    "member.registered": {"memberName": ONE_LINE[:200]},
    "system.maintenance": {"message": FREE_TEXT},
    "file.processed": {"fileName": ONE_LINE[:200], "category": "a<b>&c", "downloadUrl": LINK},
    "course.cancelled": {"courseName": ONE_LINE[:200], "reason": FREE_TEXT},
    "invoice.generated": {"invoiceNumber": ONE_LINE[:128], "downloadUrl": LINK},
    # LINE sends these two as a Flex bubble and a buttons template (JSON templates)
    "member.membership_expiring": {"memberName": ONE_LINE[:200], "membershipType": QUOTES},
    "course.reminder": {"courseName": QUOTES, "instructorName": ONE_LINE[:200]},
}
CHANNELS = {"line", "email", "sms", "web_push", "slack", "topic"}


@pytest.fixture(scope="module")
def peers() -> Iterator[dict[str, Any]]:
    with every_peer(LINE_TOKEN) as running:
        yield running


class TopicQueue:
    """An SQS queue subscribed (raw delivery) to every category topic."""

    def __init__(self, arns: dict[str, str]) -> None:
        sns, self.sqs = boto3.client("sns"), boto3.client("sqs")
        self.url = self.sqs.create_queue(QueueName="matrix-topics")["QueueUrl"]
        queue_arn = self.sqs.get_queue_attributes(QueueUrl=self.url, AttributeNames=["QueueArn"])[
            "Attributes"
        ]["QueueArn"]
        for arn in arns.values():
            sns.subscribe(
                TopicArn=arn,
                Protocol="sqs",
                Endpoint=queue_arn,
                Attributes={"RawMessageDelivery": "true"},
            )

    def bodies(self) -> list[Any]:
        got = self.sqs.receive_message(QueueUrl=self.url, MaxNumberOfMessages=10)
        return [json.loads(m["Body"]) for m in got.get("Messages", [])]


@pytest.fixture
def real(peers: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    topics = TopicQueue(use_real_backends(peers, monkeypatch, LINE_TOKEN))
    subscription = peers["push"].subscribe()
    admin = person(
        "u1",
        role="admin",
        name=NAME,
        phone="0912345678",
        lineUserId="U" + "a" * 32,
        webPushSubscriptions=[subscription.info],
    )
    doc = directory(admin, slackWebhookUrl=peers["slack"].url(), lineChannelAccessToken=LINE_TOKEN)
    course = event("course.cancelled")["data"]
    doc["courses"] = [
        {
            "id": course["courseId"],
            "tenantId": TENANT,
            "courseName": "Yoga",
            "startTime": course["startTime"],
        }
    ]
    doc["bookings"] = [
        {"id": "b1", "tenantId": TENANT, "courseId": course["courseId"], "userId": "u1"}
    ]
    import_document(doc)
    return {**peers, "topics": topics}


def send(event_type: str) -> dict[str, str]:
    """Accept the hostile event at critical priority and send every delivery through the
    real backends; each delivery's status by channel."""
    ev = event(event_type, metadata={"userId": "u1", "priority": "critical"})
    ev["data"].update(CASES[event_type])
    accepted = accept(ev)
    assert accepted.status == "accepted", accepted
    assert accepted.event_pk is not None
    for channel, ids in plan(accepted.event_pk).chunks:
        send_chunk(channel, ids)
    with session_scope() as session:
        rows = session.scalars(select(Delivery).where(Delivery.event_pk == accepted.event_pk))
        statuses = {row.channel: f"{row.status}: {row.reason}" for row in rows}
    assert statuses == {channel: "sent: None" for channel in CHANNELS}, statuses
    return statuses


# -- Slack: mrkdwn escaped, no mention, no link the templates did not make ---------------

OWN_LINK = re.compile(r"^http://localhost:8000/c/[A-Za-z0-9_.-]+\|[^<>|]+$")


def assert_safe_mrkdwn(text: str) -> None:
    for inside in re.findall(r"<([^>]*)>", text):  # every <...> Slack would interpret
        assert OWN_LINK.match(inside) or inside.startswith("https://"), inside
    assert "<!" not in text and "<https://evil.example" not in text, text
    assert not re.search(r"&(?!amp;|lt;|gt;)", text), text  # a bare & starts an entity


def check_slack(peers: dict[str, Any], event_type: str) -> None:
    [post] = peers["slack"].received
    assert post.error is None, post.error
    body = post.body
    assert_safe_mrkdwn(body["text"])
    sections = [b["text"]["text"] for b in body["blocks"] if b["type"] == "section"]
    for section in sections:
        assert_safe_mrkdwn(section)
    shown = "\n".join([body["text"], *sections])
    if event_type != "system.maintenance":  # (its section shows the times, not the message)
        assert "&lt;!channel&gt;" in shown, shown  # shown as text, not as a mention
    if "Url" in "".join(CASES[event_type]):  # the link goes, tracked, where it said
        [token] = re.findall(r"<http://localhost:8000/c/([^|>]+)\|", body["text"])
        assert verify(token, "click")["u"] == LINK
    for block in body["blocks"]:
        if block["type"] == "header":  # plain text: Slack shows it as is, runs nothing
            assert block["text"]["type"] == "plain_text"


# -- Email: escaped HTML, one-line headers, one recipient --------------------------------


class Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))


def check_email(peers: dict[str, Any], event_type: str) -> None:
    [mail] = peers["smtp"].messages
    assert mail.rcpt_tos == ["u1@example.com"]
    message: EmailMessage = mail.message
    assert message["Bcc"] is None and message.get_all("Subject") is not None
    assert len(message.get_all("Subject") or []) == 1
    assert "\n" not in str(message["Subject"]) and "\r" not in str(message["Subject"])
    html_part = message.get_body(("html",))
    text_part = message.get_body(("plain",))
    assert html_part is not None and text_part is not None
    html = html_part.get_content()
    parser = Tags()
    parser.feed(html)
    tags = {tag for tag, _ in parser.tags}
    assert not tags & {"script", "img"}, tags
    assert all(not name.startswith("on") for _, attrs in parser.tags for name in attrs)
    for tag, attrs in parser.tags:
        if tag == "a":
            assert (attrs.get("href") or "").startswith(("https://", "http://", "mailto:")), attrs
    assert "&lt;script&gt;" in html or event_type == "system.maintenance"
    assert "Amy &lt;img" in html or "&lt;img" in html
    text = text_part.get_content()
    assert "<script>" in text or event_type == "system.maintenance"  # plain text: as written


# -- plain-text channels: the values arrive exactly as sent ------------------------------


def assert_plain(text: str, shown: bool = True) -> None:
    """Plain text shows the values as written (when the template `shown` them): not HTML-
    or mrkdwn-escaped."""
    if shown:
        assert any(value in text for value in ("<script>", "<img", "a<b>", QUOTES)), text
    assert "&lt;script" not in text and "&lt;img" not in text and "&amp;amp;" not in text


def _texts(node: Any) -> Iterator[str]:
    """Every string value of a JSON document."""
    if isinstance(node, dict):
        for value in node.values():
            yield from _texts(value)
    elif isinstance(node, list):
        for value in node:
            yield from _texts(value)
    elif isinstance(node, str):
        yield node


FLEX_KEYS = {"type", "altText", "contents", "template", "quickReply"}


def check_line(peers: dict[str, Any], event_type: str) -> None:
    [request] = peers["line"].requests
    assert request.request is not None  # the LINE stand-in parsed it as the SDK does
    assert request.body["to"] == "U" + "a" * 32  # the JSON was not broken into
    [message] = request.messages
    if message["type"] == "text":
        assert set(message) <= {"type", "text", "quickReply"}, message
        assert_plain(message["text"])
        return
    assert message["type"] in ("flex", "template") and set(message) <= FLEX_KEYS, message
    texts = list(_texts(message))
    # A hostile value is one JSON string, as written: quotes and backslashes did not end it.
    assert any(QUOTES in text or ONE_LINE[:40] in text for text in texts), texts
    uris = [v for k, v in _items(message) if k == "uri"]
    assert uris and all(uri.startswith(("https://", "http://")) for uri in uris), uris


def _items(node: Any) -> Iterator[tuple[str, Any]]:
    if isinstance(node, dict):
        for key, value in node.items():
            yield key, value
            yield from _items(value)
    elif isinstance(node, list):
        for value in node:
            yield from _items(value)


def check_sms(peers: dict[str, Any], event_type: str) -> None:
    [sms] = peers["moto"].data()["sns"]["SMS"]
    assert sms["phone_number"] == "+886912345678"
    assert_plain(sms["message"], shown=event_type != "system.maintenance")


def check_web_push(peers: dict[str, Any], event_type: str) -> None:
    [pushed] = peers["push"].received
    assert pushed.error is None, pushed.error
    payload = pushed.json  # decrypted: one JSON object, its keys ours
    assert {"title", "body"} <= set(payload), payload
    assert_plain(payload["title"] + "\n" + payload["body"])


def check_topic(peers: dict[str, Any], event_type: str) -> None:
    [body] = peers["topics"].bodies()
    assert body["eventType"] == event_type
    data = body["event"]["data"]
    for key, value in CASES[event_type].items():
        assert data[key] == value, key  # the event as it was sent, JSON intact


@pytest.mark.parametrize("event_type", list(CASES))
def test_hostile_values_reach_every_peer_escaped_for_its_format(
    real: dict[str, Any], event_type: str
) -> None:
    send(event_type)
    check_slack(real, event_type)
    check_email(real, event_type)
    check_line(real, event_type)
    check_sms(real, event_type)
    check_web_push(real, event_type)
    check_topic(real, event_type)


def test_every_json_template_encodes_each_value_it_inserts() -> None:
    """A LINE JSON template inserts values only through |tojson: a quote or backslash in
    data can never end a JSON string and add keys."""
    templates = sorted(TEMPLATE_DIR.glob("*/*/*.json.j2"))
    assert templates
    for path in templates:
        source = re.sub(r"\{#.*?#\}", "", path.read_text(), flags=re.S)
        for expression in re.findall(r"\{\{(.*?)\}\}", source, flags=re.S):
            expression = expression.strip()
            literal = re.fullmatch(r'"[^"\\]*" if [\w.]+ else "[^"\\]*"', expression)
            assert expression.endswith("|tojson") or literal, (path.name, expression)


@pytest.mark.parametrize(
    "url",
    [
        "javascript:alert(document.cookie)",
        "data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==",
        "https://a.example/> <!channel> <https://evil.example|Verify your card",
        "https://a.example/\r\nBcc: evil@x.example",
    ],
)
def test_a_hostile_link_is_refused_and_reaches_no_peer(real: dict[str, Any], url: str) -> None:
    ev = event("payment.failed", metadata={"userId": "u1", "priority": "critical"})
    ev["data"]["retryUrl"] = url
    accepted = accept(ev)
    assert accepted.status == "rejected"
    assert any(error["field"] == "data.retryUrl" for error in accepted.errors), accepted.errors
    with session_scope() as session:
        assert session.scalars(select(Delivery)).first() is None
        assert [e.status for e in session.scalars(select(Event))] == ["rejected"]
    assert not real["slack"].received and not real["smtp"].messages
    assert not real["line"].requests and not real["push"].received

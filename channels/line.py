"""LINE Messaging API channel: push (text, Flex, buttons template) and multicast.

Uses line-bot-sdk v3. Every push/multicast carries an `X-Line-Retry-Key` derived from the
delivery's stable retry key (a multicast chunk's key from its deliveries' keys), so a retry
after a timeout is answered 409 by LINE instead of sending twice; a 409 counts as sent.
Responses are mapped as docs/providers.md's LINE table says.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import os
import threading
import uuid
from collections import OrderedDict
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import cache
from types import ModuleType
from typing import TYPE_CHECKING, Any, ClassVar

import urllib3
from pydantic.v1 import ValidationError

from channels.base import (
    Channel,
    DeliveryResult,
    Message,
    NotifierError,
    PermanentChannelError,
    TransientChannelError,
)
from config.settings import Variable

if TYPE_CHECKING:
    from linebot.v3.messaging import ApiClient

    from notifier.models import Tenant

log = logging.getLogger(__name__)

DEFAULT_HOST = "https://api.line.me"
MONTHLY_LIMIT = "you have reached your monthly limit"
MAX_MESSAGES = 5
MAX_RECIPIENTS = 500
# Text limits in UTF-16 code units (LINE counts like JavaScript).
TEXT_LIMIT = 5000
FLEX_ALT_TEXT_LIMIT = 1500
TEMPLATE_ALT_TEXT_LIMIT = 400
BUTTONS_TEXT_LIMIT = 160
BUTTONS_TEXT_LIMIT_WITH_TITLE = 60
BUTTONS_TITLE_LIMIT = 40
BUTTONS_MAX_ACTIONS = 4
_NAMESPACE = uuid.UUID("5b0f7c7e-3f43-4d55-9a4c-6c1f3c1e2a10")
_CLIENT_CACHE_SIZE = 64


@cache
def _sdk() -> ModuleType:
    """line-bot-sdk's messaging package, imported when LINE first sends: it is the slowest
    import of all (hundreds of models), and every process that only reads the channel's
    facts (the web app, the CLI) would pay for it."""
    from linebot.v3 import messaging

    return messaging


def utf16_len(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


def clip_utf16(text: str, limit: int, end: str = "…") -> str:
    """At most `limit` UTF-16 units, ending with `end` when cut; never splits a character."""
    if utf16_len(text) <= limit:
        return text
    budget = limit - utf16_len(end)
    out: list[str] = []
    used = 0
    for char in text:
        size = 2 if ord(char) > 0xFFFF else 1
        if used + size > budget:
            break
        out.append(char)
        used += size
    return "".join(out) + end


def retry_uuid(key: str | None) -> str | None:
    """The delivery's retry key as the UUID string LINE wants (hex or any string)."""
    if not key:
        return None
    try:
        return str(uuid.UUID(key))
    except ValueError:
        return str(uuid.uuid5(_NAMESPACE, key))


def multicast_retry_key(messages: list[Message]) -> str:
    """One key per multicast chunk, the same whenever the same deliveries are chunked again."""
    keys = sorted(_member_key(m) for m in messages)
    return str(uuid.uuid5(_NAMESPACE, "multicast:" + ",".join(keys)))


def seconds_until_next_month(now: dt.datetime | None = None) -> float:
    """Seconds until the 1st of next month 00:00 UTC (when LINE's monthly quota resets)."""
    now = now or dt.datetime.now(dt.UTC)
    start = now.astimezone(dt.UTC).replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    next_month = (start + dt.timedelta(days=32)).replace(day=1)
    return max(1.0, (next_month - now).total_seconds())


def _member_key(message: Message) -> str:
    return message.retry_key or f"delivery-{message.delivery_id}"


@dataclass(frozen=True)
class LineReply:
    """A response LINE accepted (2xx, or 409 = retry key already accepted)."""

    status: int
    headers: dict[str, str]
    body: Any

    @property
    def request_id(self) -> str | None:
        return self.headers.get("x-line-request-id")

    def raw(self) -> dict[str, Any]:
        raw: dict[str, Any] = {"status": self.status, "body": self.body}
        for name in ("x-line-request-id", "x-line-accepted-request-id"):
            if self.headers.get(name):
                raw[name] = self.headers[name]
        return raw

    def message_id(self, *, bulk: bool = False) -> str | None:
        if self.status == 409 and self.headers.get("x-line-accepted-request-id"):
            return self.headers["x-line-accepted-request-id"]
        if not bulk and isinstance(self.body, dict):
            sent = self.body.get("sentMessages")
            if isinstance(sent, list) and sent and isinstance(sent[0], dict) and sent[0].get("id"):
                return str(sent[0]["id"])
        return self.request_id


@dataclass(frozen=True)
class LineFailure:
    """A failed call, turned into one error per message of the call."""

    kind: type[NotifierError]
    text: str
    status_code: int | None
    response: Any
    flags: dict[str, Any] = field(default_factory=dict)

    def error(self, context: dict[str, Any]) -> NotifierError:
        return self.kind(
            self.text,
            status_code=self.status_code,
            response=self.response,
            **self.flags,
            **context,
        )


def _headers(raw: Any) -> dict[str, str]:
    if not raw:
        return {}
    items = raw.items() if isinstance(raw, Mapping) else raw
    return {str(k).lower(): str(v) for k, v in items}


def _body(raw: Any) -> Any:
    if raw is None:
        return None
    text = raw.decode("utf-8", "replace") if isinstance(raw, bytes | bytearray) else str(raw)
    if not text:
        return None
    try:
        return json.loads(text)
    except ValueError:
        return text[:1000]


def classify(status: int, headers: dict[str, str], body: Any) -> LineReply | LineFailure:
    """The answer of the Messaging API, read as docs/providers.md's LINE table says."""
    if 200 <= status < 300 or status == 409:
        return LineReply(status, headers, body)
    raw: dict[str, Any] = {"status": status, "body": body}
    if headers.get("x-line-request-id"):
        raw["x-line-request-id"] = headers["x-line-request-id"]
    detail = body.get("message") if isinstance(body, dict) else body
    text = f"LINE HTTP {status}: {str(detail or '')[:300]}".rstrip(": ")
    if status in (401, 403):
        return LineFailure(PermanentChannelError, text, status, raw, {"disable_channel": True})
    if status == 429:
        if str(detail or "").strip().lower().startswith(MONTHLY_LIMIT):
            return LineFailure(
                PermanentChannelError,
                text,
                status,
                raw,
                {"park_seconds": seconds_until_next_month()},
            )
        return LineFailure(TransientChannelError, text, status, raw, {"retry_after": None})
    if status >= 500 or status == 0:
        return LineFailure(TransientChannelError, text, status or None, raw)
    return LineFailure(PermanentChannelError, text, status, raw)  # 400, 413, other 4xx/3xx


_SECTION = "Channel: LINE"


@dataclass(frozen=True)
class LineSettings:
    access_token: str = field(repr=False)
    """The deployment's channel access token; a tenant's own token wins."""
    api_base_url: str

    @classmethod
    def from_env(cls) -> LineSettings:
        return cls(
            access_token=os.environ.get("LINE_CHANNEL_ACCESS_TOKEN", "").strip(),
            api_base_url=(os.environ.get("LINE_API_BASE_URL") or DEFAULT_HOST).rstrip("/"),
        )


class LineChannel(Channel):
    name = "line"
    label = "LINE"
    optional_parts = ("messages.json",)
    tracks_links = True
    outbox_view = "line"
    outbox_color = "#06c755"
    variables = (
        Variable(
            "LINE_CHANNEL_ACCESS_TOKEN",
            "secret",
            "",
            "Messaging API token of the deployment's LINE channel (a tenant's own "
            "`lineChannelAccessToken` wins); switches LINE to its real backend.",
            _SECTION,
        ),
        Variable(
            "LINE_CHANNEL_SECRET",
            "secret",
            "",
            "Verifies `x-line-signature` on `POST /webhooks/line`.",
            _SECTION,
        ),
        Variable(
            "LINE_API_BASE_URL",
            "url",
            DEFAULT_HOST,
            "Messaging API host (tests point it at a local stand-in).",
            _SECTION,
        ),
    )

    backend = "line"
    max_body_len = TEXT_LIMIT
    rate_per_sec = 2000.0
    rate_scope = "tenant"
    batch_size: ClassVar[int] = 500
    connect_timeout: ClassVar[float] = 5.0
    read_timeout: ClassVar[float] = 10.0
    max_parallel: ClassVar[int] = 8
    """HTTP calls in flight at once in send_many."""

    def __init__(self, settings: LineSettings | None = None) -> None:
        super().__init__()
        self.settings = settings or LineSettings.from_env()
        self._lock = threading.Lock()
        self._clients: OrderedDict[tuple[str, str], ApiClient] = OrderedDict()

    @classmethod
    def uses_credentials_of(cls, environ: Mapping[str, str]) -> bool:
        return bool(environ.get("LINE_CHANNEL_ACCESS_TOKEN", "").strip())

    @classmethod
    def credentials_of(cls, tenant: Tenant) -> dict[str, Any]:
        token = tenant.line_channel_access_token
        return {"line_channel_access_token": token} if token else {}

    def unavailable(self, tenant: Tenant, category: str) -> str | None:
        if tenant.line_channel_access_token or self.settings.access_token:
            return None
        return "channel not configured: LINE_CHANNEL_ACCESS_TOKEN unset"

    # -- the three steps --------------------------------------------------------------

    def build_payload(self, message: Message) -> list[Any]:
        """The LINE message objects (SDK models) to send: the rendered `line_messages`, or
        the text as one TextMessage."""
        raw = message.attributes.get("line_messages")
        if raw is None:
            text = clip_utf16(message.text or "", TEXT_LIMIT)
            if not text.strip():
                raise PermanentChannelError(
                    "LINE message has no text", **self.error_context(message)
                )
            return [_sdk().TextMessage(text=text)]
        if isinstance(raw, str):
            try:
                raw = json.loads(raw)
            except ValueError as exc:
                raise self._invalid(message, f"not JSON ({exc})") from exc
        if isinstance(raw, dict):
            raw = [raw]
        if not isinstance(raw, list) or not raw:
            raise self._invalid(message, "must be a non-empty list of LINE message objects")
        if len(raw) > MAX_MESSAGES:
            raise self._invalid(message, f"{len(raw)} messages, LINE takes at most {MAX_MESSAGES}")
        return [self._model(message, index, item) for index, item in enumerate(raw)]

    def post(self, message: Message, payload: list[Any]) -> LineReply:
        address = self._address(message)
        token = self._token(message)
        try:
            request = _sdk().PushMessageRequest(to=address, messages=payload)
        except (ValidationError, ValueError, TypeError) as exc:
            raise self._invalid(message, _describe_validation(exc)) from exc
        outcome = self._call(token, "push", request, retry_uuid(message.retry_key))
        if isinstance(outcome, LineFailure):
            raise outcome.error(self.error_context(message))
        return outcome

    def parse_response(self, message: Message, response: LineReply) -> DeliveryResult:
        return DeliveryResult(
            provider_message_id=response.message_id(),
            raw_response=response.raw(),
        )

    # -- bulk -------------------------------------------------------------------------

    def send_many(self, messages: list[Message]) -> list[DeliveryResult | NotifierError]:
        """Identical payloads (same token) go out by multicast in chunks of <= 500 with one
        deterministic retry key per chunk; the rest by push. One result per message, in order."""
        results: list[DeliveryResult | NotifierError | None] = [None] * len(messages)
        groups: dict[tuple[str, str], list[tuple[int, Message, list[Any]]]] = {}
        singles: list[tuple[int, Message, list[Any]]] = []
        for index, message in enumerate(messages):
            try:
                payload = self.payload_for(message)
                token = self._token(message)
                address = self._address(message)
            except NotifierError as exc:
                results[index] = exc
                continue
            if address[:1] in ("C", "R"):  # group and room ids cannot be multicast to
                singles.append((index, message, payload))
                continue
            groups.setdefault((token, _payload_key(payload)), []).append((index, message, payload))

        jobs: list[Callable[[], list[tuple[int, DeliveryResult | NotifierError]]]] = []
        for (token, _), members in groups.items():
            if len(members) < 2:
                singles.extend(members)
                continue
            members.sort(key=lambda item: (_member_key(item[1]), item[0]))
            pool: list[tuple[int, Message, list[Any]]] = []
            seen: set[str] = set()
            for item in members:
                address = item[1].address or ""
                if address in seen:  # the same user twice: not in one multicast
                    singles.append(item)
                else:
                    seen.add(address)
                    pool.append(item)
            for start in range(0, len(pool), MAX_RECIPIENTS):
                chunk = pool[start : start + MAX_RECIPIENTS]
                if len(chunk) == 1:
                    singles.extend(chunk)
                else:
                    jobs.append(_bind(self._multicast_chunk, token, chunk))
        jobs.extend(_bind(self._push_one, item) for item in sorted(singles, key=lambda i: i[0]))

        if len(jobs) == 1 or self.max_parallel <= 1:
            outputs = [job() for job in jobs]
        elif jobs:
            with ThreadPoolExecutor(max_workers=min(self.max_parallel, len(jobs))) as executor:
                outputs = list(executor.map(lambda job: job(), jobs))
        else:
            outputs = []
        for output in outputs:
            for index, result in output:
                results[index] = result
        done: list[DeliveryResult | NotifierError] = []
        for index, answer in enumerate(results):
            # (None is unreachable; never leave a message without an answer)
            done.append(
                answer
                if answer is not None
                else PermanentChannelError(
                    "LINE send_many produced no result", **self.error_context(messages[index])
                )
            )
        return done

    def _push_one(
        self, item: tuple[int, Message, list[Any]]
    ) -> list[tuple[int, DeliveryResult | NotifierError]]:
        index, message, payload = item
        try:
            return [(index, self.parse_response(message, self.post(message, payload)))]
        except NotifierError as exc:
            return [(index, exc)]
        except Exception as exc:  # a bug must not lose the other messages' results
            log.exception("LINE push failed unexpectedly")
            return [(index, self._unexpected(message, exc))]

    def _multicast_chunk(
        self, token: str, chunk: list[tuple[int, Message, list[Any]]]
    ) -> list[tuple[int, DeliveryResult | NotifierError]]:
        messages = [message for _, message, _ in chunk]
        key = multicast_retry_key(messages)
        try:
            request = _sdk().MulticastRequest(
                to=[message.address or "" for message in messages], messages=chunk[0][2]
            )
            outcome = self._call(token, "multicast", request, key)
        except Exception as exc:
            log.exception("LINE multicast failed unexpectedly")
            return [(index, self._unexpected(message, exc)) for index, message, _ in chunk]
        if isinstance(outcome, LineFailure):
            return [(index, outcome.error(self.error_context(m))) for index, m, _ in chunk]
        raw = {**outcome.raw(), "recipients": len(chunk), "retry_key": key}
        message_id = outcome.message_id(bulk=True)
        result = DeliveryResult(provider_message_id=message_id, raw_response=raw)
        return [(index, result) for index, _, _ in chunk]

    # -- HTTP -------------------------------------------------------------------------

    def _call(
        self, token: str, kind: str, request: Any, retry_key: str | None
    ) -> LineReply | LineFailure:
        sdk = _sdk()
        api = sdk.MessagingApi(self._client(token))
        call = api.push_message_with_http_info if kind == "push" else api.multicast_with_http_info
        try:
            response = call(
                request,
                x_line_retry_key=retry_key,
                _request_timeout=(self.connect_timeout, self.read_timeout),
                _preload_content=False,
            )
        except sdk.ApiException as exc:
            outcome = classify(int(exc.status or 0), _headers(exc.headers), _body(exc.body))
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            reason = getattr(exc, "reason", None) or exc
            name = type(reason).__name__
            log.warning("LINE %s: %s", kind, name)
            return LineFailure(TransientChannelError, f"LINE {kind}: {name}", None, {"error": name})
        else:
            outcome = classify(
                int(response.status_code), _headers(response.headers), _body(response.raw_data)
            )
        status = outcome.status if isinstance(outcome, LineReply) else outcome.status_code
        log.debug("LINE %s: HTTP %s", kind, status)
        return outcome

    def _client(self, token: str) -> ApiClient:
        host = self.settings.api_base_url
        key = (host, hashlib.sha256(token.encode()).hexdigest())
        with self._lock:
            client = self._clients.get(key)
            if client is not None:
                self._clients.move_to_end(key)
                return client
            configuration = _sdk().Configuration(host=host, access_token=token)
            # One quick retry of a failed connect (nothing sent yet), nothing else: the
            # pipeline's retries (same retry key) are the retry budget.
            configuration.retries = urllib3.Retry(
                total=None,
                connect=1,
                read=0,
                status=0,
                other=0,
                redirect=0,
                raise_on_redirect=False,
                raise_on_status=False,
            )
            configuration.connection_pool_maxsize = max(4, self.max_parallel)
            client = _sdk().ApiClient(configuration)
            self._clients[key] = client
            while len(self._clients) > _CLIENT_CACHE_SIZE:
                self._clients.popitem(last=False)
            return client

    # -- helpers ----------------------------------------------------------------------

    def _token(self, message: Message) -> str:
        token = message.credentials.get("line_channel_access_token") or self.settings.access_token
        if not token:
            raise PermanentChannelError(
                "no LINE channel access token", disable_channel=True, **self.error_context(message)
            )
        return token

    def _address(self, message: Message) -> str:
        if not message.address:
            raise PermanentChannelError("no LINE user id", **self.error_context(message))
        return message.address

    def _invalid(self, message: Message, problem: str) -> PermanentChannelError:
        return PermanentChannelError(
            f"invalid line_messages: {problem}", **self.error_context(message)
        )

    def _unexpected(self, message: Message, exc: Exception) -> PermanentChannelError:
        return PermanentChannelError(
            f"LINE send failed: {type(exc).__name__}", **self.error_context(message)
        )

    def _model(self, message: Message, index: int, item: Any) -> Any:
        where = f"[{index}]"
        if not isinstance(item, dict):
            raise self._invalid(message, f"{where} is {type(item).__name__}, not an object")
        kind = item.get("type")
        if not isinstance(kind, str) or not kind:
            raise self._invalid(message, f"{where} has no type")
        try:
            model = _sdk().Message.from_dict(_fit(item))
        except ValidationError as exc:
            raise self._invalid(message, f"{where} ({kind}) {_describe_validation(exc)}") from exc
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            if _sdk().Message.get_discriminator_value({"type": kind}) is None:
                raise self._invalid(message, f"{where} unknown type {kind[:40]!r}") from exc
            raise self._invalid(message, f"{where} ({kind}) {type(exc).__name__}") from exc
        if kind == "template":
            actions = (item.get("template") or {}).get("actions")
            if isinstance(actions, list) and len(actions) > BUTTONS_MAX_ACTIONS:
                raise self._invalid(message, f"{where} template has {len(actions)} actions (max 4)")
        return model


def _bind(function: Callable[..., Any], *args: Any) -> Callable[[], Any]:
    return lambda: function(*args)


def _payload_key(payload: list[Any]) -> str:
    return json.dumps([m.to_dict() for m in payload], sort_keys=True, ensure_ascii=False)


def _describe_validation(exc: Exception) -> str:
    """Where and what, never the offending value (it may be message content)."""
    if isinstance(exc, ValidationError):
        problems = [
            f"{'.'.join(str(p) for p in error.get('loc', ()))}: {error.get('msg', '')}"
            for error in exc.errors()[:5]
        ]
        return "; ".join(problems)
    return type(exc).__name__


def _fit(item: dict[str, Any]) -> dict[str, Any]:
    """Clip the texts LINE limits (UTF-16 units) instead of failing the delivery."""
    item = dict(item)
    kind = item.get("type")
    if kind == "text" and isinstance(item.get("text"), str):
        item["text"] = clip_utf16(item["text"], TEXT_LIMIT)
    if kind in ("flex", "template") and isinstance(item.get("altText"), str):
        limit = FLEX_ALT_TEXT_LIMIT if kind == "flex" else TEMPLATE_ALT_TEXT_LIMIT
        item["altText"] = clip_utf16(item["altText"], limit)
    template = item.get("template")
    if kind == "template" and isinstance(template, dict) and template.get("type") == "buttons":
        template = dict(template)
        if isinstance(template.get("title"), str):
            template["title"] = clip_utf16(template["title"], BUTTONS_TITLE_LIMIT)
        if isinstance(template.get("text"), str):
            short = template.get("title") or template.get("thumbnailImageUrl")
            limit = BUTTONS_TEXT_LIMIT_WITH_TITLE if short else BUTTONS_TEXT_LIMIT
            template["text"] = clip_utf16(template["text"], limit)
        item["template"] = template
    return item

"""The channel contract: a fixed step order, one result type, one error tree, and the
facts a channel owns.

Every channel module subclasses `Channel` once to declare its channel (name, template parts,
link tracking, where a person's address comes from, how the outbox page draws it) and once
more per backend (the provider's limits, its typed settings, the three steps); `send` runs
the steps in order and returns a `DeliveryResult` (the provider took the message) that
keeps the provider's raw response, or raises an error of the tree (`TransientChannelError`
worth a retry, `PermanentChannelError` not). docs/adding-a-channel.md lists what a new
channel module declares. A channel reports what happened and records none of it: the
outcome recorder (notifier.outcomes) does.
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    from config.settings import Variable
    from notifier.models import Tenant, User


def parse_retry_after(value: str | None) -> float | None:
    """Retry-After as seconds: delta-seconds or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return max(0.0, (when - dt.datetime.now(dt.UTC)).total_seconds())


class NotifierError(Exception):
    """Root of every channel error; carries where it happened and what the provider said."""

    def __init__(
        self,
        message: str,
        *,
        channel: str = "",
        delivery_id: int | None = None,
        status_code: int | None = None,
        response: Any = None,
        gone_subscriptions: tuple[str, ...] = (),
    ):
        super().__init__(message)
        self.channel = channel
        self.delivery_id = delivery_id
        self.status_code = status_code
        self.response = response
        self.gone_subscriptions = gone_subscriptions
        """As on `DeliveryResult`: the call failed, and these subscriptions are gone too."""

    def describe(self) -> str:
        code = f" (status {self.status_code})" if self.status_code else ""
        return f"{type(self).__name__}{code}: {self}"


class TransientChannelError(NotifierError):
    """Worth retrying: 429, 5xx, timeouts, throttling. `retry_after` in seconds if known."""

    def __init__(self, message: str, *, retry_after: float | None = None, **context: Any):
        super().__init__(message, **context)
        self.retry_after = retry_after


class PermanentChannelError(NotifierError):
    """Not worth retrying: bad address, 4xx configuration errors, gone endpoints.

    `suppress` asks the pipeline to suppress the address (hard bounce, 410, opt-out).
    `disable_channel` turns the channel off for the tenant (bad credentials, a removed
    webhook) until an operator re-enables it; `park_seconds` turns it off for that long
    (a monthly quota reached). Either way the delivery falls back to the next channel.
    """

    def __init__(
        self,
        message: str,
        *,
        suppress: bool = False,
        disable_channel: bool = False,
        park_seconds: float | None = None,
        **context: Any,
    ):
        super().__init__(message, **context)
        self.suppress = suppress
        self.disable_channel = disable_channel
        self.park_seconds = park_seconds


@dataclass(frozen=True)
class Message:
    """Everything a channel needs to send one rendered message to one address."""

    delivery_id: int
    tenant_id: str
    event_type: str
    channel: str
    recipient: str
    address: str | None
    subject: str
    text: str
    html: str | None = None
    priority: str = "medium"
    retry_key: str | None = None
    attributes: dict[str, Any] = field(default_factory=dict)
    """Channel-specific content (LINE messages, topic category, unsubscribe URL...)."""
    credentials: dict[str, Any] = field(default_factory=dict, repr=False)
    """Per-tenant secrets (LINE token, Slack webhook); never stored in the outbox or logged."""


@dataclass(frozen=True)
class DeliveryResult:
    """The provider accepted the message: it is sent (failures are errors, never results)."""

    provider_message_id: str | None = None
    raw_response: Any = None
    gone_subscriptions: tuple[str, ...] = ()
    """Endpoints of Web Push subscriptions the push service answered 404/410 for: facts for
    the outcome recorder, which removes them from the directory once the outcome is
    committed (a channel never writes the database)."""


class Channel:
    """Base class. A channel module declares its channel in one subclass (the facts below
    that say what the channel is) and each backend in a subclass of that (`backend`, the
    provider's limits and settings, the three steps). Every default here is the generic
    one, so a new channel declares only what differs."""

    # -- the channel's facts (the same for all its backends, the outbox included) ---------
    name: ClassVar[str] = ""
    """The channel's name: its module in channels/, its templates' prefix, its send task."""
    label: ClassVar[str] = ""
    """How people read its name ("LINE", "SMS"); the name when empty."""
    template_parts: ClassVar[tuple[str, ...]] = ("txt",)
    """Template parts every message needs (<channel>.<part>.j2): "subject" or "title", "txt",
    "html". The first one decides which locale has the templates."""
    optional_parts: ClassVar[tuple[str, ...]] = ()
    """Parts used when their template exists, rendered as JSON (LINE's "messages.json")."""
    tracks_links: ClassVar[bool] = False
    """Whether the links its templates print (`track(url)`) become signed /c/ click links."""
    unsubscribe_link: ClassVar[bool] = False
    """Whether its messages carry a signed one-click unsubscribe link (`links.unsubscribe`)."""
    audience: ClassVar[str] = "person"
    """Who it reaches: "person" (an address of the person's own, stored in the directory's
    `addresses` under the channel's name), "staff" (the tenant's address, for staff only),
    "subscriptions" (the person's Web Push subscriptions) or "topic" (one message per
    event and category, nobody in particular)."""
    outbox_view: ClassVar[str] = "text"
    """How the /outbox page draws a message: "email", "line", "sms", "push", "slack",
    "topic", or "text" (subject and text, the generic view)."""
    outbox_color: ClassVar[str] = "#6b7280"
    """The colour of its badge on the /outbox page."""
    variables: ClassVar[tuple[Variable, ...]] = ()
    """The environment variables its backends read (docs/configuration.md lists them)."""

    # -- the backend's facts --------------------------------------------------------------
    backend: ClassVar[str] = ""
    """The backend's name, as NOTIFIER_<CHANNEL>_BACKEND takes it."""
    max_body_len: ClassVar[int] = 100_000
    rate_per_sec: ClassVar[float] = 0.0  # 0 = no limit, else a token bucket in Redis
    # "provider": one bucket for the whole provider account; "tenant": one per tenant, where
    # each tenant sends with its own credentials (a LINE channel token, a Slack webhook).
    rate_scope: ClassVar[str] = "provider"
    batch_size: ClassVar[int] = 1
    """Messages per provider call: above 1, `send_many` gets up to that many at once."""

    def __init__(self) -> None:
        # NOTIFIER_RATE_<CHANNEL> read once, with the backend's other settings.
        override = os.environ.get(f"NOTIFIER_RATE_{self.name.upper()}", "").strip()
        self.rate = float(override) if override else float(self.rate_per_sec)

    @classmethod
    def display_name(cls) -> str:
        return cls.label or cls.name

    @classmethod
    def uses_credentials_of(cls, environ: Mapping[str, str]) -> bool:
        """Whether the environment holds this backend's credentials: the channel then uses
        it unless NOTIFIER_<CHANNEL>_BACKEND says otherwise (the first such backend of the
        module wins; none: the outbox)."""
        return False

    @classmethod
    def address_of(cls, user: User | None, tenant: Tenant, category: str) -> str | None:
        """Where a message to `user` goes on this channel, or None when it cannot reach
        them: by default the address the directory stores under the channel's name (a
        "staff" channel says where the tenant keeps its address)."""
        if cls.audience == "topic":
            return category
        if user is None or cls.audience == "staff":
            return None
        if cls.audience == "subscriptions":
            return user.id
        return (user.addresses or {}).get(cls.name)

    @classmethod
    def address_column(cls) -> Any:
        """`address_of` as SQL over the users (joined to their tenant), so that planning
        finds a page's suppressed addresses in its one query; None: nothing to compare."""
        from notifier.models import User

        return User.addresses[cls.name].as_string() if cls.audience == "person" else None

    @classmethod
    def credentials_of(cls, tenant: Tenant) -> dict[str, Any]:
        """The tenant's own secrets for this channel (never stored with a message)."""
        return {}

    def unavailable(self, tenant: Tenant, category: str) -> str | None:
        """Why this backend cannot send for `tenant` with its settings, or None: channel
        selection then skips the channel with that reason instead of failing each message."""
        return None

    # -- the steps ------------------------------------------------------------------------

    def send(self, message: Message) -> DeliveryResult:
        payload = self.payload_for(message)
        response = self.post(message, payload)
        return self.parse_response(message, response)

    def payload_for(self, message: Message) -> Any:
        """`build_payload`, where any error but a channel error fails the message for good,
        naming its templates: the same content fails the same way on every retry."""
        try:
            return self.build_payload(message)
        except NotifierError:
            raise
        except Exception as exc:
            locale = message.attributes.get("locale") or "?"
            raise PermanentChannelError(
                f"building the {self.name} payload from templates "
                f"{locale}/{message.event_type}/{message.channel}.* failed: "
                f"{type(exc).__name__}: {str(exc)[:200]}",
                **self.error_context(message),
            ) from exc

    def send_many(self, messages: list[Message]) -> list[DeliveryResult | NotifierError]:
        """Send a chunk; one result or error per message, in order. Channels with a bulk
        API (LINE multicast) override this; the default sends one by one."""
        results: list[DeliveryResult | NotifierError] = []
        for message in messages:
            try:
                results.append(self.send(message))
            except NotifierError as exc:
                results.append(exc)
        return results

    def build_payload(self, message: Message) -> Any:
        raise NotImplementedError

    def post(self, message: Message, payload: Any) -> Any:
        raise NotImplementedError

    def parse_response(self, message: Message, response: Any) -> DeliveryResult:
        raise NotImplementedError

    def error_context(self, message: Message) -> dict[str, Any]:
        return {"channel": self.name, "delivery_id": message.delivery_id}

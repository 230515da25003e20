"""Sending a chunk of deliveries on one channel: claim -> render -> provider call -> record.

A delivery is claimed atomically (queued -> sending) before anything is sent, so a
redelivered task skips what another run already sent; a claim left by a killed worker is
taken over once it is older than the stale-claim timeout; a run whose claim has reached half
of that age renews it just before sending each batch, and skips what was taken over.
Outcomes are committed per provider call (one message, or one multicast) as each returns,
so a crash loses at most the calls in flight: one bulk call, or up to
NOTIFIER_SEND_CONCURRENCY messages of a per-message channel.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
from collections.abc import Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from functools import cache
from typing import Any, cast

from sqlalchemy import ColumnElement, Table, bindparam, or_, select, update
from sqlalchemy.orm import Session, aliased

from channels.base import (
    Channel,
    DeliveryResult,
    Message,
    NotifierError,
    PermanentChannelError,
    TransientChannelError,
)
from channels.registry import declaration, get_channel, person_channels
from config.routing import ROUTES
from config.settings import get_settings
from notifier import ratelimit
from notifier.channel_state import unavailable_channels
from notifier.db import session_scope
from notifier.dbutil import insert_one
from notifier.directory import people_for, push_subscriptions
from notifier.models import (
    Delivery,
    DeliveryStatus,
    Event,
    Tenant,
    User,
    utcnow,
)
from notifier.outcomes import AfterCommit, Target, record
from notifier.preferences import TEXT_LINK_CHANNELS, critical_ignores_opt_outs, link_line
from notifier.preferences import link_for as preference_link
from notifier.rendering import LINK_TRACKER, TemplateProblem, brand, render
from notifier.selection import fallback_channel
from notifier.signing import link_tracker, unsubscribe_url

log = logging.getLogger("notifier.send")
LINE_MAX_MESSAGES = 5
"""Messages in one LINE push."""


@dataclass
class ChunkOutcome(AfterCommit):
    """What a chunk did, for its task: counts, the rows to retry and the fallbacks to send;
    and (as an AfterCommit) what its recorded outcomes leave for after their commit."""

    sent: int = 0
    failed: int = 0
    retry_ids: list[int] = field(default_factory=list)
    retry_after: float | None = None
    fallbacks: list[tuple[str, list[int]]] = field(default_factory=list)


@dataclass
class ChunkContext:
    """Everything the chunk's deliveries refer to, loaded with one query per kind."""

    events: dict[int, Event]
    tenants: dict[str, Tenant]
    users: dict[tuple[str, str], User]
    subscriptions: dict[tuple[str, str], list[dict[str, Any]]]

    def user(self, delivery: Delivery) -> User | None:
        return self.users.get((delivery.tenant_id, delivery.recipient))


def not_waiting(now: dt.datetime | ColumnElement[Any]) -> ColumnElement[bool]:
    """A queued delivery may go now unless a provider asked to wait (Retry-After): then
    not_before lies after the row's last update, and before it no run may send it, not
    even a second task the stalled-work sweep dispatched for it. (A released quiet-hours
    deferral has its not_before at or before the release, the row's last update.)"""
    return or_(
        Delivery.not_before.is_(None),
        Delivery.not_before <= Delivery.updated_at,
        Delivery.not_before <= now,
    )


def _claim_params(channel: str, ids: list[int], now: dt.datetime) -> dict[str, Any]:
    stale = now - dt.timedelta(seconds=get_settings().stale_claim_seconds)
    return {
        "claim_ids": list(ids),
        "claim_channel": channel,
        "claim_now": now,
        "claim_stale": stale,
    }


@cache
def _claim_update() -> Any:
    """The claiming UPDATE, built once per process with bound parameters (building it anew
    for every chunk cost more Python than the rest of a one-message send's SQL)."""
    now = bindparam("claim_now", type_=Delivery.claimed_at.type)
    stale = bindparam("claim_stale", type_=Delivery.claimed_at.type)
    return (
        update(Delivery)
        .where(
            Delivery.id.in_(bindparam("claim_ids", expanding=True)),
            Delivery.channel == bindparam("claim_channel"),
            or_(
                (Delivery.status == DeliveryStatus.QUEUED) & not_waiting(now),
                (Delivery.status == DeliveryStatus.SENDING) & (Delivery.claimed_at < stale),
            ),
        )
        .values(
            status=DeliveryStatus.SENDING,
            claimed_at=now,
            attempts=Delivery.attempts + 1,
            updated_at=now,
        )
    )


def claim(session: Session, channel: str, ids: list[int], now: dt.datetime) -> list[Delivery]:
    claimed = (
        session.execute(
            _claim_update()
            # The claimed rows themselves: no second query to load them.
            .returning(Delivery)
            .execution_options(synchronize_session=False),
            _claim_params(channel, ids, now),
        )
        .scalars()
        .all()
    )
    return sorted(claimed, key=lambda delivery: delivery.id)


def fail_spent(channel: str, ids: list[int], stale: dt.datetime, now: dt.datetime) -> ChunkOutcome:
    """Fail the stalled deliveries among `ids` that have used every attempt (the last one
    never finished: its worker was lost), as a last attempt's failure is recorded. Taken
    with the same atomic claim as a send, so a run that is still sending one keeps it."""
    outcome = ChunkOutcome()
    budget = get_settings().send_max_retries + 1
    with session_scope(autocommit=True) as reader, session_scope() as session:
        spent = (
            reader.execute(
                update(Delivery)
                .where(
                    Delivery.id.in_(ids),
                    Delivery.channel == channel,
                    Delivery.attempts >= budget,
                    or_(
                        Delivery.status == DeliveryStatus.QUEUED,
                        (Delivery.status == DeliveryStatus.SENDING) & (Delivery.claimed_at < stale),
                    ),
                )
                .values(status=DeliveryStatus.SENDING, claimed_at=now, updated_at=now)
                .returning(Delivery)
                .execution_options(synchronize_session=False)
            )
            .scalars()
            .all()
        )
        if not spent:
            return outcome
        ctx = load_context(reader, channel, list(spent))
        for delivery in spent:
            error = TransientChannelError(
                f"the last of {delivery.attempts} attempts never finished (its worker was lost)",
                channel=channel,
                delivery_id=delivery.id,
            )
            _record(session, [(delivery, None, error)], ctx, True, outcome, now)
        session.commit()
        outcome.committed()
    return outcome


def claim_with_context(
    session: Session, channel: str, ids: list[int], now: dt.datetime
) -> tuple[list[Delivery], ChunkContext]:
    """Claim what can be claimed of `ids` and load what the claimed rows refer to. On
    PostgreSQL one statement does both (the claiming UPDATE in a WITH, joined to its event,
    tenant and user); elsewhere the claim, then the context."""
    if session.get_bind().dialect.name != "postgresql":
        taken = claim(session, channel, ids, now)
        empty = ChunkContext({}, {}, {}, {})
        return taken, load_context(session, channel, taken) if taken else empty
    rows = session.execute(_claim_with_context_select(), _claim_params(channel, ids, now)).tuples()
    deliveries: list[Delivery] = []
    ctx = ChunkContext({}, {}, {}, {})
    for delivery, event, tenant, user in rows:
        deliveries.append(delivery)
        ctx.events[event.id], ctx.tenants[tenant.id] = event, tenant
        if user is not None:
            ctx.users[(user.tenant_id, user.id)] = user
    if _reaches_subscriptions(channel) and deliveries:
        ctx.subscriptions.update(_subscriptions(session, deliveries))
    return deliveries, ctx


@cache
def _claim_with_context_select() -> Any:
    """PostgreSQL: the claiming UPDATE in a WITH, joined to its event, tenant and user; built
    once per process."""
    table = cast(Table, Delivery.__table__)
    claimed_rows = _claim_update().returning(*table.c).cte("claimed")
    claimed = aliased(Delivery, claimed_rows)
    return (
        select(claimed, Event, Tenant, User)
        .join(Event, Event.id == claimed.event_pk)
        .join(Tenant, Tenant.id == claimed.tenant_id)
        .outerjoin(User, (User.tenant_id == claimed.tenant_id) & (User.id == claimed.recipient))
        .order_by(claimed.id)
    )


def load_context(session: Session, channel: str, deliveries: list[Delivery]) -> ChunkContext:
    tenant_ids = {d.tenant_id for d in deliveries}
    recipients = {d.recipient for d in deliveries}
    events: dict[int, Event] = {}
    tenants: dict[str, Tenant] = {}
    for event, tenant in session.execute(
        select(Event, Tenant)
        .join(Tenant, Tenant.id == Event.tenant_id)
        .where(Event.id.in_({d.event_pk for d in deliveries}))
    ).tuples():
        events[event.id], tenants[tenant.id] = event, tenant
    users = {
        (u.tenant_id, u.id): u
        for u in session.scalars(
            select(User).where(User.tenant_id.in_(tenant_ids), User.id.in_(recipients))
        )
    }
    subscriptions = _subscriptions(session, deliveries) if _reaches_subscriptions(channel) else {}
    return ChunkContext(events, tenants, users, subscriptions)


def _reaches_subscriptions(channel: str) -> bool:
    return declaration(channel).audience == "subscriptions"


def _subscriptions(
    session: Session, deliveries: list[Delivery]
) -> dict[tuple[str, str], list[dict[str, Any]]]:
    found: dict[tuple[str, str], list[dict[str, Any]]] = {}
    recipients = {d.recipient for d in deliveries}
    for tenant_id in {d.tenant_id for d in deliveries}:
        for user_id, subs in push_subscriptions(session, tenant_id, recipients).items():
            found[(tenant_id, user_id)] = subs
    return found


def address_for(channel: str, user: User | None, tenant: Tenant, category: str) -> str | None:
    return declaration(channel).address_of(user, tenant, category)


def person_context(
    recipient: str,
    user: User | None,
    tenant: Tenant,
    unsubscribe: str | None,
    preferences: str | None = None,
) -> dict[str, Any]:
    """The template variables about who receives a message and from which tenant;
    `preferences` is the person's preference center link."""
    return {
        "recipient": {
            "id": recipient,
            "name": user.name if user else "",
            "locale": user.locale if user else None,
            "timezone": (user.timezone if user else None) or tenant.timezone or "UTC",
        },
        "tenant": {
            "id": tenant.id,
            "name": tenant.name,
            "locale": tenant.locale,
            "timezone": tenant.timezone,
        },
        "brand": brand({"name": tenant.name, **(tenant.branding or {})}),
        "links": {"unsubscribe": unsubscribe, "preferences": preferences},
    }


def with_preference_link(
    channel: str, text: str, attributes: dict[str, Any], link: str | None
) -> str:
    """A LINE or SMS text ending with the preference center line (`attributes["footer"]`
    names it, so a channel that must cut the text keeps it); a LINE Flex or buttons message
    gets it as one more text message. Other channels: the text as it is."""
    if link is None or channel not in TEXT_LINK_CHANNELS:
        return text
    footer = link_line(str(attributes.get("locale") or "en"), link)
    attributes["footer"] = footer
    messages = attributes.get("line_messages")
    if isinstance(messages, list) and len(messages) < LINE_MAX_MESSAGES:
        attributes["line_messages"] = [*messages, {"type": "text", "text": footer}]
    return f"{text}\n\n{footer}" if text else footer


def locales_for(user: User | None, tenant: Tenant) -> list[str | None]:
    """Template locales to try: the person's, then the tenant's (then the default)."""
    return [user.locale if user else None, tenant.locale]


def build_message(delivery: Delivery, ctx: ChunkContext) -> Message:
    event = ctx.events[delivery.event_pk]
    tenant = ctx.tenants[delivery.tenant_id]
    user = ctx.user(delivery)
    payload = event.payload
    route = ROUTES[event.event_type]
    declared = declaration(delivery.channel)
    unsubscribe = (
        unsubscribe_url(tenant.id, user.id, delivery.channel)
        if user is not None and declared.unsubscribe_link
        else None
    )
    settings_link = preference_link(tenant, user, delivery.channel)
    context: dict[str, Any] = {
        "data": payload.get("data") or {},
        "event": {
            "id": event.event_id,
            "type": event.event_type,
            "priority": delivery.priority,
            "timestamp": payload.get("timestamp"),
            "source": payload.get("source"),
        },
        **person_context(delivery.recipient, user, tenant, unsubscribe, settings_link),
    }
    if declared.tracks_links:
        context[LINK_TRACKER] = link_tracker(
            delivery_id=delivery.id,
            tenant_id=tenant.id,
            channel=delivery.channel,
            event_type=event.event_type,
        )
    rendered = render(event.event_type, delivery.channel, locales_for(user, tenant), context)
    text, html = rendered.text, rendered.html
    attributes: dict[str, Any] = {"locale": rendered.locale}
    if "messages.json" in rendered.extra:
        attributes["line_messages"] = rendered.extra["messages.json"]
    if unsubscribe:
        attributes["unsubscribe_url"] = unsubscribe
    text = with_preference_link(delivery.channel, text, attributes, settings_link)
    if declared.audience == "topic":
        attributes.update(category=route.category, event=payload)
    credentials = declared.credentials_of(tenant)
    if declared.audience == "subscriptions":
        credentials["subscriptions"] = ctx.subscriptions.get(
            (delivery.tenant_id, delivery.recipient), []
        )
    return Message(
        delivery_id=delivery.id,
        tenant_id=delivery.tenant_id,
        event_type=event.event_type,
        channel=delivery.channel,
        recipient=delivery.recipient,
        address=address_for(delivery.channel, user, tenant, route.category),
        subject=rendered.subject,
        text=text,
        html=html,
        priority=delivery.priority,
        retry_key=delivery.retry_key,
        attributes=attributes,
        credentials=credentials,
    )


def build_failure(exc: Exception, delivery: Delivery, ctx: ChunkContext) -> PermanentChannelError:
    """A message that could not be built, as a permanent failure naming its template."""
    if isinstance(exc, TemplateProblem):
        reason = str(exc)
    else:
        event_type = ctx.events[delivery.event_pk].event_type
        reason = (
            f"building the message from templates {event_type}/{delivery.channel}.* failed: "
            f"{type(exc).__name__}: {str(exc)[:200]}"
        )
    return PermanentChannelError(reason, channel=delivery.channel, delivery_id=delivery.id)


def rate_limit(backend: Channel, tenant_id: str, tokens: int) -> None:
    """Per provider account, or per tenant where the tenant has its own credentials (LINE
    channel token, Slack webhook): wait for the tokens, or ask for a later retry."""
    rate = backend.rate
    if rate <= 0:
        return
    scope = tenant_id if backend.rate_scope == "tenant" else "all"
    try:
        ratelimit.throttle(f"{backend.name}:{backend.backend}:{scope}", rate, tokens)
    except ratelimit.RateLimited as exc:
        raise TransientChannelError(str(exc), retry_after=exc.wait, channel=backend.name) from exc


def send_chunk(
    channel: str, ids: list[int], *, final_attempt: bool = False, now: dt.datetime | None = None
) -> ChunkOutcome:
    """Send what can be claimed of `ids`. Transient failures go back to queued (or fail
    for good on the final attempt); permanent failures fail and may fall back once."""
    now = now or utcnow()
    outcome = ChunkOutcome()
    # The claim commits by itself (one atomic UPDATE) and the context is only read: no
    # transaction, and no BEGIN and COMMIT round trips, around them. `session` (lazy: no
    # connection until used) carries what must commit together.
    with session_scope(autocommit=True) as reader, session_scope() as session:
        deliveries, ctx = claim_with_context(reader, channel, ids, now)
        if not deliveries:
            return outcome
        backend = get_channel(channel)
        batch_size = max(1, backend.batch_size)
        groups = [deliveries[i : i + batch_size] for i in range(0, len(deliveries), batch_size)]

        def prepared(group: list[Delivery]) -> Call:
            """The group's messages, rendered just before their call: rendering the next
            message overlaps the sends in flight. A broken template fails its delivery."""
            call: Call = []
            for delivery in group:
                try:
                    call.append((delivery, build_message(delivery, ctx)))
                except Exception as exc:  # the same content fails the same way: no retry
                    error = build_failure(exc, delivery, ctx)
                    _record(session, [(delivery, None, error)], ctx, final_attempt, outcome, now)
                    session.commit()
                    outcome.committed()
            return call

        calls = (prepared(group) for group in groups)
        # A bulk API call carries its whole batch; per-message calls go several at a time.
        width = 1 if batch_size > 1 or len(groups) == 1 else get_settings().send_concurrency
        hold = _Hold(now, [delivery.id for delivery in deliveries])
        for done in _calls_in_flight(session, backend, calls, batch_size, width, hold):
            results = [
                (delivery, message, result)
                for batch, call_results in done
                for (delivery, message), result in zip(batch, call_results, strict=True)
            ]
            if all(isinstance(r, DeliveryResult) for _, _, r in results) and all(
                len(batch) == 1 for batch, _ in done
            ):
                # Each row is the whole outcome of its own call: one statement, no
                # transaction around it.
                _record(reader, results, ctx, final_attempt, outcome, now)
                outcome.committed()
                continue
            _record(session, results, ctx, final_attempt, outcome, now)
            # A provider call's outcomes in one transaction: a crash never leaves part of a
            # multicast recorded, so a re-send carries the same members and retry key.
            session.commit()
            outcome.committed()
    return outcome


Call = list[tuple[Delivery, Message]]
CallResults = list[DeliveryResult | NotifierError]


def _calls_in_flight(
    session: Session,
    backend: Channel,
    calls: Iterator[Call],
    batch_size: int,
    width: int,
    hold: _Hold,
) -> Iterator[list[tuple[Call, CallResults]]]:
    """Make the provider calls, at most `width` at once, and yield the finished ones as
    they finish (the caller records them before more are started, so a crash re-sends at
    most the calls in flight). With width 1 each call runs in the calling thread."""

    def held(call: Call) -> Call:
        return hold.keep(session, call)

    if width == 1:
        for call in calls:
            if call := held(call):
                yield [(call, _send(backend, call, batch_size))]
        return
    pool = _send_pool(width)
    running: dict[Future[CallResults], Call] = {}
    while True:
        while len(running) < width and (queued := next(calls, None)) is not None:
            if kept := held(queued):
                running[pool.submit(_send, backend, kept, batch_size)] = kept
        if not running:
            return
        finished, _ = wait(running, return_when=FIRST_COMPLETED)
        yield [(running.pop(future), future.result()) for future in finished]


_pool: tuple[tuple[int, int], ThreadPoolExecutor] | None = None


def _send_pool(width: int) -> ThreadPoolExecutor:
    """The process's sending threads, kept across chunks (an SMTP backend keeps one
    connection per thread). Made in the process that uses it: never inherited by fork."""
    global _pool
    if _pool is None or _pool[0] != (os.getpid(), width):
        _pool = (
            (os.getpid(), width),
            ThreadPoolExecutor(width, thread_name_prefix="notifier-send"),
        )
    return _pool[1]


def claim_may_lapse(claimed_at: dt.datetime) -> bool:
    """Whether a claim is old enough that it must be renewed before sending: another run
    takes a claim over only once it is older than the stale-claim timeout, so a claim
    younger than half of it is still this run's own (no statement needed to check)."""
    age = (utcnow() - claimed_at).total_seconds()
    return age >= get_settings().stale_claim_seconds / 2


class _Hold:
    """This run's claim on the rows of its chunk it has not sent yet. A chunk that outlasts
    the stale-claim timeout (a slow provider, a long chunk) renews the claim of all of
    them at once, so the stalled-delivery sweep does not hand a row that is only waiting
    its turn to another run (which would count an attempt that this run then drops), and
    a row another run did take over (this run's worker stalled) is not sent twice."""

    def __init__(self, claimed_at: dt.datetime, ids: list[int]) -> None:
        self.claimed_at = claimed_at
        self.waiting = set(ids)

    def keep(self, session: Session, call: Call) -> Call:
        """The part of `call` this run still holds, its claim renewed when it may lapse;
        the call's rows are no longer waiting."""
        if call and claim_may_lapse(self.claimed_at):
            self._renew(session)
        kept = [(delivery, message) for delivery, message in call if delivery.id in self.waiting]
        self.waiting.difference_update(delivery.id for delivery, _ in call)
        return kept

    def _renew(self, session: Session) -> None:
        """One UPDATE for every waiting row still claimed by this run; commits it."""
        renewed_at = max(self.claimed_at, utcnow())
        self.waiting = set(
            session.execute(
                update(Delivery)
                .where(
                    Delivery.id.in_(sorted(self.waiting)),
                    Delivery.status == DeliveryStatus.SENDING,
                    Delivery.claimed_at == self.claimed_at,
                )
                .values(claimed_at=renewed_at)
                .returning(Delivery.id)
                .execution_options(synchronize_session=False)
            ).scalars()
        )
        session.commit()
        self.claimed_at = renewed_at


def _send(backend: Channel, batch: Call, batch_size: int) -> CallResults:
    """One result or error per message. Unexpected exceptions become transient errors:
    retried, bounded by the retry budget, then dead-lettered."""
    messages = [message for _, message in batch]
    try:
        rate_limit(backend, messages[0].tenant_id, 1 if batch_size > 1 else len(messages))
        if batch_size > 1:
            return backend.send_many(messages)
        return [backend.send(messages[0])]
    except NotifierError as exc:
        return [exc] * len(messages)
    except Exception as exc:
        log.exception("unexpected error while sending", extra={"channel": backend.name})
        error = TransientChannelError(f"{type(exc).__name__}: {exc}", channel=backend.name)
        return [error] * len(messages)


def _record(
    session: Session,
    results: Sequence[tuple[Delivery, Message | None, DeliveryResult | NotifierError]],
    ctx: ChunkContext,
    final_attempt: bool,
    outcome: ChunkOutcome,
    now: dt.datetime,
) -> None:
    """Record what happened to the deliveries (a message is None where it was never built)
    through the outcome recorder, and count it for the task; a delivery that failed for
    good may fall back once to another channel of its person."""
    targets = [
        (
            Target(
                (delivery,),
                ctx.events,
                delivery.attempts,
                address=message.address if message else None,
            ),
            result,
        )
        for delivery, message, result in results
    ]
    verdicts = record(session, targets, final_attempt=final_attempt, now=now, after=outcome)
    for (delivery, _, _), verdict in zip(results, verdicts, strict=True):
        if verdict.status == DeliveryStatus.SENT:
            outcome.sent += 1
        elif verdict.retry:
            outcome.retry_ids.append(delivery.id)
            if verdict.retry_after is not None:
                outcome.retry_after = max(outcome.retry_after or 0.0, verdict.retry_after)
        else:
            outcome.failed += 1
            user = ctx.user(delivery)
            if (
                user is not None
                and delivery.fallback_of is None
                and declaration(delivery.channel).audience != "topic"
            ):
                event = ctx.events[delivery.event_pk]
                tenant = ctx.tenants[delivery.tenant_id]
                _fall_back(session, delivery, event, user, tenant, outcome, now)


def _fall_back(
    session: Session,
    delivery: Delivery,
    event: Event,
    user: User,
    tenant: Tenant,
    outcome: ChunkOutcome,
    now: dt.datetime,
) -> None:
    taken = set(
        session.scalars(
            select(Delivery.channel).where(
                Delivery.event_pk == delivery.event_pk, Delivery.recipient == delivery.recipient
            )
        )
    )
    taken |= set(unavailable_channels(session, tenant.id, now))
    narrowed = (event.payload.get("metadata") or {}).get("channels")
    if narrowed:  # the sender limited the channels: a fallback stays inside that limit
        taken |= {c for c in person_channels() if c not in narrowed}
    person = people_for(session, tenant, [user])[0]
    channel = fallback_channel(
        person,
        delivery.priority,
        delivery.channel,
        taken,
        event_type=event.event_type,
        category=ROUTES[event.event_type].category,
        topic_opt_outs=delivery.priority != "critical" or not critical_ignores_opt_outs(tenant),
    )
    if channel is None:
        return
    row = {
        "event_pk": delivery.event_pk,
        "tenant_id": delivery.tenant_id,
        "recipient": delivery.recipient,
        "channel": channel,
        "priority": delivery.priority,
        "status": DeliveryStatus.QUEUED,
        "reason": f"fallback after {delivery.channel} failed",
        "retry_key": delivery.retry_key,
        "attempts": 0,
        "fallback_of": delivery.id,
        "created_at": now,
        "updated_at": now,
    }
    new_id = insert_one(session, Delivery, row, ("event_pk", "recipient", "channel"))
    if new_id is not None:
        outcome.fallbacks.append((channel, [new_id]))

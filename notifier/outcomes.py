"""The outcome recorder: what a provider call did, recorded by one piece of code for a send
(one delivery per message) and a digest (one message for all its member deliveries).

`record` judges each result once (`judge`) and writes it in the caller's transaction:

- sent: the rows are marked sent, every sent row of one provider call in one executemany
  UPDATE;
- a transient error inside the attempt budget: the delivery goes back to queued, not to be
  sent before the provider's Retry-After (a digest's members stay in their digest, which
  goes back to queued);
- anything else: the rows fail for good, or are suppressed when the provider said the
  address is gone (the address joins the suppression list). Revoked credentials disable
  the channel for the tenant and a reached quota parks it, whether a send or a digest hit
  them; a dead letter keeps what failed.

What must not run inside that transaction waits in `AfterCommit` until the caller has
committed (`AfterCommit.committed`): the alarms (SNS, Slack), the retry counts (metrics), the
removal of Web Push subscriptions a push service called gone, and the status hooks
(outbound webhooks, metrics). A channel only reports that a subscription is gone, on its
result or error (`gone_subscriptions`); it never writes the directory. A crash between the
commit and these loses only them: the next 404/410 reports the subscription again.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any, cast

from sqlalchemy import Table, bindparam, update
from sqlalchemy.orm import Session

from channels.base import (
    DeliveryResult,
    NotifierError,
    PermanentChannelError,
    TransientChannelError,
)
from config.settings import get_settings
from notifier import directory, metrics
from notifier.alarms import raise_alarm
from notifier.channel_state import turn_off
from notifier.dbutil import insert_ignore
from notifier.models import (
    DeadLetter,
    Delivery,
    DeliveryStatus,
    Digest,
    Event,
    Suppression,
    utcnow,
)
from notifier.status_hooks import StatusChange, delivery_status_changed

log = logging.getLogger("notifier.outcomes")

Result = DeliveryResult | NotifierError


@dataclass(frozen=True, slots=True)
class Target:
    """What one message was sent for: the delivery rows that take its outcome (one, or a
    digest's members, all of one tenant, recipient and channel), their events by primary
    key, the attempts made (the row's own, or the digest's) and the address the message
    went to (None when it was never built)."""

    deliveries: Sequence[Delivery]
    events: Mapping[int, Event]
    attempts: int
    address: str | None = None
    digest_id: int | None = None


@dataclass(frozen=True, slots=True)
class Verdict:
    """What a result means for its rows: `status` sent, queued (a retry), failed or
    suppressed; `reason` where it is not sent."""

    status: str
    reason: str | None = None
    retry_after: float | None = None

    @property
    def retry(self) -> bool:
        return self.status == DeliveryStatus.QUEUED


def judge(result: Result, final_attempt: bool, attempts: int) -> Verdict:
    """The verdict on one result. The budget is the row's own attempts too: a task the
    stalled-work sweep dispatched again (or a digest a flush recovered) starts its retry
    count afresh, the row does not."""
    if isinstance(result, DeliveryResult):
        return Verdict(DeliveryStatus.SENT)
    final_attempt = final_attempt or attempts > get_settings().send_max_retries
    if isinstance(result, TransientChannelError) and not final_attempt:
        return Verdict(DeliveryStatus.QUEUED, result.describe(), result.retry_after)
    if isinstance(result, PermanentChannelError):
        status = DeliveryStatus.SUPPRESSED if result.suppress else DeliveryStatus.FAILED
        return Verdict(status, result.describe())
    return Verdict(DeliveryStatus.FAILED, f"retries exhausted: {result.describe()}")


@dataclass
class AfterCommit:
    """What recorded outcomes leave to do once their transaction has committed."""

    changes: list[StatusChange] = field(default_factory=list)
    alarms: list[Callable[[], None]] = field(default_factory=list)
    retries: Counter[str] = field(default_factory=Counter)
    """channel -> deliveries that go back to the queue."""
    gone: dict[str, set[str]] = field(default_factory=dict)
    """tenant -> endpoints of Web Push subscriptions a push service called gone."""

    def committed(self) -> None:
        """The outcomes recorded so far are committed: now what talks to the network or
        writes outside the outcome (never inside the recording transaction: it could hold
        its locks, or run for an outcome that was rolled back)."""
        alarms, self.alarms = self.alarms, []
        retries, self.retries = self.retries, Counter()
        gone, self.gone = self.gone, {}
        changes, self.changes = self.changes, []
        for alarm in alarms:
            alarm()
        for channel, count in retries.items():
            metrics.count_deliveries(channel, metrics.RETRY, count)
        for tenant_id, endpoints in gone.items():
            _forget_subscriptions(tenant_id, sorted(endpoints))
        delivery_status_changed(changes)


def _forget_subscriptions(tenant_id: str, endpoints: list[str]) -> None:
    try:
        directory.delete_push_subscriptions(tenant_id, endpoints)
    except Exception:  # the outcome stands; the next 404/410 reports them gone again
        log.exception(
            "could not remove gone push subscriptions",
            extra={"tenant": tenant_id, "count": len(endpoints)},
        )


_DELIVERIES = cast(Table, Delivery.__table__)
# A Core statement: the ORM's bulk UPDATE by primary key cost more than the round trip.
_MARK_SENT = (
    update(_DELIVERIES)
    .where(_DELIVERIES.c.id == bindparam("delivery_id"))
    .values(
        status=DeliveryStatus.SENT,
        reason=bindparam("sent_reason"),
        sent_at=bindparam("sent_at"),
        updated_at=bindparam("sent_at"),
        provider_message_id=bindparam("message_id"),
        raw_response=bindparam("raw"),
    )
)


def record(
    session: Session,
    results: Sequence[tuple[Target, Result]],
    *,
    final_attempt: bool,
    now: dt.datetime,
    after: AfterCommit,
) -> list[Verdict]:
    """Record the results of one provider call (or one digest), in `session`'s transaction;
    the caller commits, then runs `after.committed()`. One verdict per result, in order."""
    verdicts: list[Verdict] = []
    sent: list[dict[str, Any]] = []
    sent_at = utcnow()
    for target, result in results:
        verdict = judge(result, final_attempt, target.attempts)
        verdicts.append(verdict)
        first = target.deliveries[0]
        if result.gone_subscriptions:
            after.gone.setdefault(first.tenant_id, set()).update(result.gone_subscriptions)
        if isinstance(result, DeliveryResult):
            sent.extend(_sent(session, target, result, sent_at, after))
        elif verdict.retry:
            _retry(session, target, result, verdict, now, after)
        else:
            _fail(session, target, result, verdict, now, after)
    if sent:
        # A multicast's 500 rows cost one statement, not 500 (which took longer than the
        # multicast itself).
        session.execute(_MARK_SENT, sent)
    return verdicts


def _change(
    target: Target,
    delivery: Delivery,
    status: str,
    reason: str | None,
    provider_message_id: str | None = None,
) -> StatusChange:
    event = target.events[delivery.event_pk]
    return StatusChange(
        delivery_id=delivery.id,
        tenant_id=delivery.tenant_id,
        event_id=event.event_id,
        recipient=delivery.recipient,
        channel=delivery.channel,
        status=str(status),
        reason=reason,
        provider_message_id=provider_message_id,
        digest_id=target.digest_id,
        accepted_at=event.created_at,
    )


def _log_context(target: Target) -> dict[str, Any]:
    first = target.deliveries[0]
    context: dict[str, Any] = {"tenant": first.tenant_id, "channel": first.channel}
    if target.digest_id is None:
        context.update(event_id=target.events[first.event_pk].event_id, delivery_id=first.id)
    else:
        context.update(digest_id=target.digest_id, count=len(target.deliveries))
    return context


def _what(target: Target) -> str:
    return "delivery" if target.digest_id is None else "digest"


def _sent(
    session: Session,
    target: Target,
    result: DeliveryResult,
    sent_at: dt.datetime,
    after: AfterCommit,
) -> list[dict[str, Any]]:
    """The rows of the executemany that marks `target` sent."""
    message_id, raw = result.provider_message_id, jsonable(result.raw_response)
    reason = None
    if target.digest_id is not None:
        reason = f"sent in digest {target.digest_id}"
        session.execute(
            update(Digest)
            .where(Digest.id == target.digest_id)
            .values(
                status=DeliveryStatus.SENT,
                reason=None,
                sent_at=sent_at,
                provider_message_id=message_id,
            )
        )
    log.info(f"{_what(target)} sent", extra=_log_context(target))
    for delivery in target.deliveries:
        after.changes.append(_change(target, delivery, DeliveryStatus.SENT, None, message_id))
    return [
        {
            "delivery_id": delivery.id,
            "sent_reason": reason,
            "sent_at": sent_at,
            "message_id": message_id,
            "raw": raw,
        }
        for delivery in target.deliveries
    ]


def _retry(
    session: Session,
    target: Target,
    error: NotifierError,
    verdict: Verdict,
    now: dt.datetime,
    after: AfterCommit,
) -> None:
    if target.digest_id is not None:
        # The members wait in their digest. claimed_at marks the last attempt: a retry
        # whose task was lost is picked up by the next flush.
        session.execute(
            update(Digest)
            .where(Digest.id == target.digest_id)
            .values(status=DeliveryStatus.QUEUED, reason=verdict.reason, claimed_at=now)
        )
    else:
        waiting: dict[str, Any] = {}
        if verdict.retry_after:
            waiting["not_before"] = utcnow() + dt.timedelta(seconds=verdict.retry_after)
        session.execute(
            update(Delivery)
            .where(Delivery.id.in_([delivery.id for delivery in target.deliveries]))
            .values(status=DeliveryStatus.QUEUED, reason=verdict.reason, updated_at=now, **waiting)
        )
    after.retries[target.deliveries[0].channel] += len(target.deliveries)
    log.warning(
        f"{_what(target)} not sent, will retry",
        extra={**_log_context(target), "error": error.describe()},
    )


def _fail(
    session: Session,
    target: Target,
    error: NotifierError,
    verdict: Verdict,
    now: dt.datetime,
    after: AfterCommit,
) -> None:
    """Fail (or suppress) the rows for good, with everything that implies."""
    first = target.deliveries[0]
    tenant_id, channel, reason = first.tenant_id, first.channel, cast(str, verdict.reason)
    ids = [delivery.id for delivery in target.deliveries]
    session.execute(
        update(Delivery)
        .where(Delivery.id.in_(ids))
        .values(
            status=verdict.status,
            reason=reason,
            updated_at=now,
            raw_response=jsonable(error.response),
        )
    )
    if target.digest_id is not None:
        session.execute(
            update(Digest)
            .where(Digest.id == target.digest_id)
            .values(status=verdict.status, reason=reason)
        )
    if verdict.status == DeliveryStatus.SUPPRESSED and target.address:
        insert_ignore(
            session,
            Suppression,
            [
                {
                    "tenant_id": tenant_id,
                    "channel": channel,
                    "address": target.address,
                    "reason": reason,
                    "created_at": now,
                }
            ],
            ("tenant_id", "channel", "address"),
        )
    if isinstance(error, PermanentChannelError) and (error.disable_channel or error.park_seconds):
        until = now + dt.timedelta(seconds=error.park_seconds) if error.park_seconds else None
        turn_off(session, tenant_id, channel, error.describe(), until)
    session.add(
        DeadLetter(
            tenant_id=tenant_id,
            kind="delivery",
            delivery_id=first.id,
            error=reason,
            payload=_dead_letter_payload(target),
        )
    )
    after.alarms.append(partial(alarm_for_failure, error, tenant_id, channel, reason))
    for delivery in target.deliveries:
        after.changes.append(_change(target, delivery, verdict.status, reason))
    log.warning(
        f"{_what(target)} not sent", extra={**_log_context(target), "error": error.describe()}
    )


def _dead_letter_payload(target: Target) -> dict[str, Any]:
    first = target.deliveries[0]
    if target.digest_id is not None:
        return {
            "digestId": target.digest_id,
            "channel": first.channel,
            "recipient": first.recipient,
            "deliveries": [delivery.id for delivery in target.deliveries],
        }
    event = target.events[first.event_pk]
    return {
        "eventId": event.event_id,
        "eventType": event.event_type,
        "channel": first.channel,
        "recipient": first.recipient,
    }


def alarm_for_failure(error: NotifierError, tenant_id: str, channel: str, reason: str) -> None:
    """One alarm per kind, tenant and channel per alarm window, however many fail."""
    if isinstance(error, PermanentChannelError) and error.disable_channel:
        severity, kind, what = "CRITICAL", "channel_disabled", "disabled"
    elif isinstance(error, PermanentChannelError) and error.park_seconds:
        severity, kind, what = "ERROR", "quota", "quota reached"
    else:
        severity, kind, what = "WARNING", "dead_letter", "deliveries dead-lettered"
    raise_alarm(
        severity,
        f"{channel} {what} for tenant {tenant_id}",
        key=f"{kind}:{tenant_id}:{channel}",
        tenant_id=tenant_id,
        channel=channel,
        details={"reason": reason[:300]},
    )


def jsonable(value: Any) -> Any:
    if value is None or isinstance(value, str | int | float | bool | list | dict):
        return value
    return str(value)

"""What provider feedback changes: SES bounces and complaints (through SNS), LINE
follow/unfollow. Plain functions; the webhook routes verify signatures and call these."""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass
from email.utils import parseaddr
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from notifier.db import session_scope
from notifier.dbutil import insert_ignore
from notifier.models import Delivery, DeliveryStatus, Event, Suppression, User
from notifier.status_hooks import StatusChange

log = logging.getLogger("notifier.web.feedback")


@dataclass(frozen=True)
class FeedbackOutcome:
    status: str
    """applied | ignored | unknown-message"""
    suppressed: int = 0
    kind: str | None = None
    """delivery.bounced (a permanent bounce) or delivery.complained: the webhook to send."""
    changes: tuple[StatusChange, ...] = ()
    """The deliveries it applied to, as they are now (committed)."""


def _addresses(recipients: Any) -> list[str]:
    if not isinstance(recipients, list):
        return []
    found = []
    for item in recipients:
        raw = item.get("emailAddress") if isinstance(item, dict) else None
        address = parseaddr(raw)[1] if isinstance(raw, str) else ""
        if "@" in address:
            found.append(address)
    return found


def apply_ses_notification(notification: Any, now: dt.datetime) -> FeedbackOutcome:
    """Apply one SES notification (the Message of an SNS Notification).

    Permanent bounce: suppress each bounced address in the delivery's tenant and mark the
    delivery failed (the outcome names them for a delivery.bounced webhook). Complaint:
    suppress (delivery.complained). Transient/undetermined bounce: note it in the
    delivery's reason (no webhook: the provider keeps trying). Delivery and anything else:
    ignored. The tenant comes from the delivery the message was sent for (SES MessageId =
    the delivery's provider message id; a digest email carries several deliveries of one
    person, all marked).
    """
    if not isinstance(notification, dict):
        return FeedbackOutcome("ignored")
    kind = notification.get("notificationType") or notification.get("eventType")
    mail = notification.get("mail")
    message_id = mail.get("messageId") if isinstance(mail, dict) else None
    if kind not in ("Bounce", "Complaint") or not isinstance(message_id, str):
        return FeedbackOutcome("ignored")
    detail = notification.get("bounce" if kind == "Bounce" else "complaint")
    if not isinstance(detail, dict):
        return FeedbackOutcome("ignored")
    with session_scope() as session:
        sent_with = list(
            session.scalars(
                select(Delivery)
                .where(Delivery.channel == "email", Delivery.provider_message_id == message_id)
                .order_by(Delivery.id)
            )
        )
        if not sent_with:
            log.warning("SES feedback for an unknown message", extra={"channel": "email"})
            return FeedbackOutcome("unknown-message")
        delivery = sent_with[0]
        same_person = [
            d.id
            for d in sent_with
            if (d.tenant_id, d.recipient) == (delivery.tenant_id, delivery.recipient)
        ]
        if kind == "Bounce":
            bounce_type = str(detail.get("bounceType") or "Undetermined")
            sub_type = str(detail.get("bounceSubType") or "")
            hard = bounce_type == "Permanent"
            addresses = _addresses(detail.get("bouncedRecipients")) if hard else []
            label = "bounced" if hard else "soft bounce"
            values: dict[str, Any] = {
                "reason": f"{label}: {bounce_type} {sub_type}".strip(),
                "updated_at": now,
            }
            if hard:
                values["status"] = DeliveryStatus.FAILED
        else:
            feedback_type = str(detail.get("complaintFeedbackType") or "complaint")
            addresses = _addresses(detail.get("complainedRecipients"))
            values = {"reason": f"complaint: {feedback_type}", "updated_at": now}
        session.execute(
            update(Delivery)
            .where(Delivery.id.in_(same_person), Delivery.tenant_id == delivery.tenant_id)
            .values(values)
        )
        suppressed = _suppress_emails(session, delivery, addresses, values["reason"], now)
        touched = [d for d in sent_with if d.id in same_person]
        event_ids = dict(
            session.execute(
                select(Event.id, Event.event_id).where(Event.id.in_({d.event_pk for d in touched}))
            ).all()
        )
        changes = tuple(
            StatusChange(
                delivery_id=d.id,
                tenant_id=d.tenant_id,
                event_id=event_ids.get(d.event_pk, ""),
                recipient=d.recipient,
                channel=d.channel,
                status=str(values.get("status", d.status)),
                reason=values["reason"],
                provider_message_id=message_id,
            )
            for d in touched
        )
    hard = kind == "Bounce" and values.get("status") == DeliveryStatus.FAILED
    webhook = "delivery.bounced" if hard else "delivery.complained" if kind == "Complaint" else None
    log.info(
        "SES feedback applied",
        extra={
            "tenant": delivery.tenant_id,
            "delivery_id": delivery.id,
            "channel": "email",
            "status": kind,
            "count": len(same_person),
        },
    )
    return FeedbackOutcome("applied", suppressed, webhook, changes if webhook else ())


def _suppress_emails(
    session: Session, delivery: Delivery, addresses: list[str], reason: str, now: dt.datetime
) -> int:
    """Suppress the addresses in the delivery's tenant, spelled as the directory stores
    them (selection compares addresses exactly; SES may change their case)."""
    if not addresses:
        return 0
    user = session.get(User, (delivery.tenant_id, delivery.recipient))
    stored = (user.addresses or {}).get("email") if user is not None else None
    spelled = {
        stored if stored and stored.lower() == address.lower() else address for address in addresses
    }
    rows = [
        {
            "tenant_id": delivery.tenant_id,
            "channel": "email",
            "address": address,
            "reason": reason,
            "created_at": now,
        }
        for address in sorted(spelled)
    ]
    return insert_ignore(session, Suppression, rows, ("tenant_id", "channel", "address"))


def _line_event_time(event: dict[str, Any], now: dt.datetime) -> dt.datetime:
    millis = event.get("timestamp")
    if isinstance(millis, int) and not isinstance(millis, bool) and 0 < millis < 2**42:
        return dt.datetime.fromtimestamp(millis / 1000, dt.UTC)
    return now


def apply_line_events(events: Any, now: dt.datetime) -> dict[str, int]:
    """`unfollow` suppresses the LINE user id in every tenant that has a user with it;
    `follow` lifts those suppressions. Suppressions are stamped with the event's time and
    a follow lifts only older ones, so a follow that arrives late cannot undo a newer
    unfollow. Other events are ignored. Returns counts per event type handled."""
    counts = {"follow": 0, "unfollow": 0}
    if not isinstance(events, list):
        return counts
    for event in events:
        if not isinstance(event, dict) or event.get("type") not in counts:
            continue
        source = event.get("source")
        line_user_id = source.get("userId") if isinstance(source, dict) else None
        if not isinstance(line_user_id, str) or not line_user_id:
            continue
        at = _line_event_time(event, now)
        with session_scope() as session:
            tenants = list(
                session.scalars(
                    select(User.tenant_id)
                    .where(User.addresses["line"].as_string() == line_user_id)
                    .distinct()
                )
            )
            if not tenants:
                continue
            if event["type"] == "unfollow":
                rows = [
                    {
                        "tenant_id": tenant_id,
                        "channel": "line",
                        "address": line_user_id,
                        "reason": "LINE unfollow (blocked the account)",
                        "created_at": at,
                    }
                    for tenant_id in tenants
                ]
                insert_ignore(session, Suppression, rows, ("tenant_id", "channel", "address"))
            else:
                session.execute(
                    delete(Suppression).where(
                        Suppression.tenant_id.in_(tenants),
                        Suppression.channel == "line",
                        Suppression.address == line_user_id,
                        Suppression.created_at <= at,
                    )
                )
        counts[event["type"]] += 1
        log.info("LINE %s", event["type"], extra={"channel": "line", "count": len(tenants)})
    return counts

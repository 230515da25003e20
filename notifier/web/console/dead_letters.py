"""Dead letters: the list with filters, one dead letter's details, and replaying one or all
shown (a confirmation page first, the outcome on the page after), through notifier.dlq."""

from __future__ import annotations

import json
from typing import Any

from fastapi import APIRouter, Query
from fastapi.responses import HTMLResponse
from sqlalchemy import select

from notifier.db import session_scope
from notifier.dlq import replay
from notifier.models import DeadLetter, Delivery
from notifier.operators import OperatorScope
from notifier.web.console.access import (
    NO_NUL,
    CheckedForm,
    Operator,
    newest_page,
    not_found,
    page,
    scoped,
)
from notifier.web.console.activity import when

MAX_REPLAY = 500
"""Dead letters one replay form may carry."""

router = APIRouter()


def _event_pks(delivery_ids: set[int]) -> dict[int, int]:
    """delivery id -> its event's pk, for links to the timelines."""
    if not delivery_ids:
        return {}
    with session_scope() as session:
        rows = session.execute(
            select(Delivery.id, Delivery.event_pk).where(Delivery.id.in_(delivery_ids))
        ).tuples()
        return {delivery_id: event_pk for delivery_id, event_pk in rows}


def _view(row: DeadLetter, event_pk: int | None) -> dict[str, Any]:
    payload = row.payload if isinstance(row.payload, dict) else {}
    return {
        "id": row.id,
        "tenant": row.tenant_id,
        "kind": row.kind,
        "delivery_id": row.delivery_id,
        "event_pk": event_pk,
        "event_id": payload.get("eventId") or payload.get("messageId") or "",
        "event_type": payload.get("eventType") or "",
        "channel": payload.get("channel") or "",
        "recipient": payload.get("recipient") or "",
        "error": row.error,
        "created_at": when(row.created_at),
        "replayed_at": when(row.replayed_at),
    }


def search(operator: OperatorScope, filters: dict[str, Any]) -> dict[str, Any]:
    query = scoped(select(DeadLetter), DeadLetter.tenant_id, operator)
    if filters["tenant"]:
        query = query.where(DeadLetter.tenant_id == filters["tenant"])
    if filters["kind"]:
        query = query.where(DeadLetter.kind == filters["kind"])
    if filters["state"] == "pending":
        query = query.where(DeadLetter.replayed_at.is_(None))
    elif filters["state"] == "replayed":
        query = query.where(DeadLetter.replayed_at.is_not(None))
    if filters["error"]:
        query = query.where(DeadLetter.error.contains(filters["error"], autoescape=True))
    with session_scope() as session:
        rows, next_before = newest_page(session, query, DeadLetter.id, filters["before"])
    pks = _event_pks({r.delivery_id for r in rows if r.delivery_id})
    letters = [_view(r, pks.get(r.delivery_id or 0)) for r in rows]
    return {
        "letters": letters,
        "pending_ids": [letter["id"] for letter in letters if not letter["replayed_at"]],
        "next_before": next_before,
    }


@router.get("/dead-letters", response_class=HTMLResponse, include_in_schema=False)
def dead_letters(
    operator: Operator,
    tenant: str = Query(default="", max_length=128, pattern=NO_NUL),
    kind: str = Query(default="", max_length=16, pattern=NO_NUL),
    state: str = Query(default="pending", pattern="^(pending|replayed|all)$"),
    error: str = Query(default="", max_length=200, pattern=NO_NUL),
    before: int | None = Query(default=None, ge=1, le=2**62),
) -> HTMLResponse:
    filters = {
        "tenant": tenant.strip(),
        "kind": kind.strip(),
        "state": state,
        "error": error.strip(),
        "before": before,
    }
    found = search(operator, filters)
    query = {k: v for k, v in filters.items() if v and k != "before"}
    return page("dead_letters.html.j2", operator, {**found, "filters": filters, "query": query})


@router.get("/dead-letters/{letter_id}", response_class=HTMLResponse, include_in_schema=False)
def dead_letter(letter_id: int, operator: Operator) -> HTMLResponse:
    if not 1 <= letter_id <= 2**62:
        return not_found(operator, "dead letter")
    with session_scope() as session:
        row = session.scalar(
            scoped(select(DeadLetter), DeadLetter.tenant_id, operator).where(
                DeadLetter.id == letter_id
            )
        )
        if row is None:
            return not_found(operator, "dead letter")
        pks = _event_pks({row.delivery_id} if row.delivery_id else set())
        view = _view(row, pks.get(row.delivery_id or 0))
        payload = json.dumps(row.payload, ensure_ascii=False, indent=2, sort_keys=True)
    return page("dead_letter.html.j2", operator, {"letter": view, "payload": payload})


def _ids(form: dict[str, list[str]]) -> list[int]:
    ids = []
    for value in form.get("id", [])[:MAX_REPLAY]:
        if value.isdigit() and 1 <= int(value) <= 2**62:
            ids.append(int(value))
    return sorted(set(ids))


def visible_letters(operator: OperatorScope, ids: list[int]) -> list[DeadLetter]:
    if not ids:
        return []
    with session_scope() as session:
        query = scoped(select(DeadLetter), DeadLetter.tenant_id, operator)
        return list(session.scalars(query.where(DeadLetter.id.in_(ids)).order_by(DeadLetter.id)))


@router.post("/dead-letters/replay", response_class=HTMLResponse, include_in_schema=False)
def replay_dead_letters(checked: CheckedForm) -> HTMLResponse:
    """Without `confirmed`: the confirmation page. With it: the replay and its outcome.
    Dead letters of tenants the operator does not see are answered as unknown."""
    operator, form = checked
    ids = _ids(form)
    letters = visible_letters(operator, ids)
    shown = {row.id for row in letters}
    pks = _event_pks({r.delivery_id for r in letters if r.delivery_id})
    views = {row.id: _view(row, pks.get(row.delivery_id or 0)) for row in letters}
    if not form.get("confirmed"):
        return page(
            "replay_confirm.html.j2",
            operator,
            {"letters": list(views.values()), "unknown": [i for i in ids if i not in shown]},
        )
    from tasks import enqueue  # late: the web app configures the Celery app when it replays

    result = replay(sorted(shown), enqueue=enqueue) if shown else None
    outcome = []
    for letter_id in ids:
        if letter_id not in shown:
            unknown = {"event_pk": None, "event_id": "", "why": "no such dead letter"}
            outcome.append({"id": letter_id, "state": "skipped", **unknown})
        elif result is not None and letter_id in result.replayed:
            outcome.append({"id": letter_id, "state": "replayed", "why": "", **views[letter_id]})
        elif result is not None and letter_id in result.failed:
            why = result.failed[letter_id]
            outcome.append({"id": letter_id, "state": "failed", "why": why, **views[letter_id]})
        else:
            why = result.skipped.get(letter_id, "") if result is not None else ""
            outcome.append({"id": letter_id, "state": "skipped", "why": why, **views[letter_id]})
    return page("replay_result.html.j2", operator, {"outcome": outcome})

"""Dialect-portable statements the pipeline relies on for idempotency."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session


def _insert(session: Session, model: Any, conflict: Sequence[str]) -> Any:
    module = postgresql if session.get_bind().dialect.name == "postgresql" else sqlite
    return module.insert(model.__table__).on_conflict_do_nothing(index_elements=list(conflict))


def insert_new(
    session: Session, model: Any, rows: Sequence[dict[str, Any]], conflict: Sequence[str]
) -> None:
    """insert_ignore for a caller that needs no count: without RETURNING the driver sends
    the rows as one pipelined executemany, several times faster for a broadcast's pages."""
    if rows:
        session.execute(_insert(session, model, conflict), list(rows))


def insert_ignore(
    session: Session, model: Any, rows: Sequence[dict[str, Any]], conflict: Sequence[str]
) -> int:
    """INSERT ... ON CONFLICT (conflict) DO NOTHING; returns how many rows were new.

    Counted through RETURNING: rowcount is not reliable for multi-row inserts. The rows go
    as parameters of one cached statement (SQLAlchemy batches them into multi-row INSERTs):
    a statement with the rows inlined as VALUES is compiled, and parsed by the driver, anew
    for every call, which made a broadcast's plan several times slower."""
    if not rows:
        return 0
    key = list(model.__table__.primary_key.columns)
    stmt = _insert(session, model, conflict).returning(*key)
    return len(session.execute(stmt, list(rows)).all())


def insert_one(
    session: Session, model: Any, row: dict[str, Any], conflict: Sequence[str]
) -> Any | None:
    """INSERT one row ... ON CONFLICT (conflict) DO NOTHING; its primary key when it was
    new, else None (one round trip: no SELECT after the insert)."""
    (key,) = model.__table__.primary_key.columns
    return session.execute(_insert(session, model, conflict).returning(key), [row]).scalar()

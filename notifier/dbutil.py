"""Dialect-portable statements the pipeline relies on for idempotency."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session


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
    dialect = session.get_bind().dialect.name
    module = postgresql if dialect == "postgresql" else sqlite
    key = list(model.__table__.primary_key.columns)
    stmt = (
        module.insert(model.__table__)
        .on_conflict_do_nothing(index_elements=list(conflict))
        .returning(*key)
    )
    return len(session.execute(stmt, list(rows)).all())

"""Bulk upserts: INSERT ... ON CONFLICT DO UPDATE that only touches a row when one of its
values changed, on PostgreSQL and SQLite alike."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Table, or_
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

TIMESTAMPS = frozenset({"created_at", "updated_at"})
"""Written on insert, never compared: a row whose data is the same is not changed."""


def upsert_rows(
    session: Session, table: Table, conflict: Sequence[str], rows: Sequence[dict[str, Any]]
) -> int:
    """Insert the rows, or update the existing row with the same `conflict` columns where
    a value differs; returns how many rows were inserted or changed.

    Every row carries the same keys, and no two rows share a conflict key (PostgreSQL
    refuses to update one row twice in a statement). The rows go as one executemany, which
    SQLAlchemy sends as multi-row VALUES statements.
    """
    if not rows:
        return 0
    dialect = session.get_bind().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    statement = insert(table)
    compared = [name for name in rows[0] if name not in conflict and name not in TIMESTAMPS]
    updates = {name: statement.excluded[name] for name in compared}
    if "updated_at" in rows[0]:
        updates["updated_at"] = statement.excluded["updated_at"]
    if compared:
        upsert = statement.on_conflict_do_update(
            index_elements=list(conflict),
            set_=updates,
            where=or_(
                *(table.c[name].is_distinct_from(statement.excluded[name]) for name in compared)
            ),
        )
    else:  # nothing but the key: an existing row is never a change
        upsert = statement.on_conflict_do_nothing(index_elements=list(conflict))
    result = session.execute(upsert.returning(table.c[conflict[-1]]), list(rows))
    return len(result.all())

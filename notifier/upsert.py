"""Bulk upserts: INSERT ... ON CONFLICT DO UPDATE that only touches a row when one of its
values changed, on PostgreSQL and SQLite alike."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from psycopg.types.json import Jsonb
from sqlalchemy import Table, or_
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Session

from notifier.sealing import Sealed

_PG = postgresql.dialect()
TIMESTAMPS = frozenset({"created_at", "updated_at"})
"""Written on insert, never compared: a row whose data is the same is not changed."""


def upsert_rows(
    session: Session, table: Table, conflict: Sequence[str], rows: Sequence[dict[str, Any]]
) -> int:
    """Insert the rows, or update the existing row with the same `conflict` columns where
    a value differs; returns how many rows were inserted or changed.

    Every row carries the same keys, and no two rows share a conflict key (PostgreSQL
    refuses to update one row twice in a statement). The rows go as one executemany, which
    SQLAlchemy sends as multi-row VALUES statements (on PostgreSQL: COPY to a staging table).
    """
    if not rows:
        return 0
    compared = [name for name in rows[0] if name not in conflict and name not in TIMESTAMPS]
    if session.get_bind().dialect.name == "postgresql":
        return _upsert_copy(session, table, conflict, compared, rows)
    statement = sqlite.insert(table)
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


def _upsert_copy(
    session: Session,
    table: Table,
    conflict: Sequence[str],
    compared: list[str],
    rows: Sequence[dict[str, Any]],
) -> int:
    """PostgreSQL: COPY the rows into a staging table of this transaction, then one
    INSERT ... SELECT ... ON CONFLICT from it. COPY is the driver's fastest way in (rows
    are formatted in C, no placeholders to render or parse)."""
    names = list(rows[0])
    listed = ", ".join(names)
    staging = f"upsert_{table.name}"
    made: set[str] = session.info.setdefault("upsert_staging", set())
    updates = [*compared, *(["updated_at"] if "updated_at" in names else [])]
    changed = " OR ".join(f"{table.name}.{n} IS DISTINCT FROM excluded.{n}" for n in compared)
    action = (
        f"DO UPDATE SET {', '.join(f'{n} = excluded.{n}' for n in updates)} WHERE {changed}"
        if compared
        else "DO NOTHING"
    )
    json_columns = {n for n in names if isinstance(table.c[n].type.dialect_impl(_PG), JSONB)}
    # COPY skips SQLAlchemy's bind processing: sealed secrets are sealed here.
    sealed = {n: t for n in names if isinstance(t := table.c[n].type, Sealed)}
    driver = session.connection().connection.driver_connection
    with driver.cursor() as cursor:  # type: ignore[union-attr]
        if staging not in made:
            cursor.execute(
                f"CREATE TEMP TABLE {staging} (LIKE {table.name} INCLUDING DEFAULTS) ON COMMIT DROP"
            )
            made.add(staging)
        with cursor.copy(f"COPY {staging} ({listed}) FROM STDIN") as copy:
            for row in rows:
                if sealed:
                    row = {
                        **row,
                        **{n: t.process_bind_param(row[n], _PG) for n, t in sealed.items()},
                    }
                copy.write_row([Jsonb(row[n]) if n in json_columns else row[n] for n in names])
        cursor.execute(
            f"INSERT INTO {table.name} ({listed}) SELECT {listed} FROM {staging} "  # noqa: S608 (names from the table)
            f"ON CONFLICT ({', '.join(conflict)}) {action}"
        )
        count = cursor.rowcount
        cursor.execute(f"TRUNCATE {staging}")
    return count

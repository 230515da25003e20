"""The benchmark's directory, inserted in bulk (the directory import is not what is measured).

Every benchmark tenant's id starts with `bench-`; `forget_bench_tenants` removes them all, so
a run can reuse a database without touching anyone else's rows.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, insert

from notifier.db import get_engine
from notifier.models import Base, Membership, Tenant, User, utcnow

TENANT_PREFIX = "bench-"
TIMEZONE = "Asia/Taipei"
BATCH = 5_000


@dataclass(frozen=True)
class People:
    """`count` users of one benchmark tenant: ids, LINE ids and emails by index."""

    tenant: str
    count: int

    def user_id(self, index: int) -> str:
        return f"u{index:07d}"

    def line_id(self, index: int) -> str:
        digest = hashlib.md5(f"{self.tenant}/{index}".encode(), usedforsecurity=False).hexdigest()
        return f"U{digest}"

    def email(self, index: int) -> str:
        return f"{self.user_id(index)}@{self.tenant}.bench.test"

    def addresses(self, channel: str, indexes: range | None = None) -> list[str]:
        address = self.line_id if channel == "line" else self.email
        return [address(i) for i in indexes or range(self.count)]


def forget_bench_tenants() -> None:
    """Delete every row of every `bench-` tenant (children first)."""
    with get_engine().begin() as conn:
        for table in reversed(Base.metadata.sorted_tables):
            if "tenant_id" in table.c:
                conn.execute(delete(table).where(table.c.tenant_id.like(f"{TENANT_PREFIX}%")))
        conn.execute(delete(Tenant).where(Tenant.id.like(f"{TENANT_PREFIX}%")))


def _batches(rows: Iterator[dict[str, Any]], size: int = BATCH) -> Iterator[list[dict[str, Any]]]:
    batch: list[dict[str, Any]] = []
    for row in rows:
        batch.append(row)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def add_tenant(people: People, priority_channels: dict[str, list[str]]) -> None:
    """A tenant and its users, each reachable on LINE and email, with the given lists of
    channels per priority (no quiet hours: the benchmark measures sending, not waiting)."""
    now = utcnow()
    with get_engine().begin() as conn:
        conn.execute(
            insert(Tenant),
            [
                {
                    "id": people.tenant,
                    "name": f"Bench {people.tenant}",
                    "timezone": TIMEZONE,
                    "locale": "en",
                    "branding": {},
                    "created_at": now,
                    "updated_at": now,
                }
            ],
        )
        users = (
            {
                "tenant_id": people.tenant,
                "id": people.user_id(i),
                "name": f"Member {i}",
                "role": "member",
                "addresses": {"email": people.email(i), "line": people.line_id(i)},
                "locale": "en",
                "timezone": None,
                "active": True,
                "preferences": {"priority": priority_channels},
                "created_at": now,
                "updated_at": now,
            }
            for i in range(people.count)
        )
        for batch in _batches(users):
            conn.execute(insert(User), batch)


def add_memberships(
    people: People, start: int, count: int, due: set[int], due_date: dt.date
) -> None:
    """Memberships `start`..`start+count-1` of the tenant's users (round robin). Those in
    `due` expire on `due_date`; the rest on dates at least ten days away from it, on either
    side, spread over two years, so no other row is ever due."""

    def expiry(n: int) -> dt.date:
        if n in due:
            return due_date
        offset = 10 + n % 355
        return due_date + dt.timedelta(days=offset if n % 2 else -offset)

    rows = (
        (people.tenant, f"m{n:08d}", people.user_id(n % people.count), "Gold", expiry(n))
        for n in range(start, start + count)
    )
    engine = get_engine()
    if engine.dialect.name == "postgresql":
        raw = engine.raw_connection()
        try:
            with raw.cursor() as cursor:  # type: ignore[attr-defined]
                copy_sql = (
                    "COPY memberships (tenant_id, id, user_id, membership_type, expires_at) "
                    "FROM STDIN"
                )
                with cursor.copy(copy_sql) as copy:
                    for row in rows:
                        copy.write_row(row)
            raw.commit()
        finally:
            raw.close()
        return
    columns = ("tenant_id", "id", "user_id", "membership_type", "expires_at")
    with engine.begin() as conn:
        for batch in _batches((dict(zip(columns, row, strict=True)) for row in rows), 50_000):
            conn.execute(insert(Membership), batch)

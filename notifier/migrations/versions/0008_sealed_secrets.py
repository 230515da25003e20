"""secrets at rest: LINE channel access tokens and webhook secrets are stored sealed

Revision ID: 0008
Revises: 0007
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from notifier.sealing import PREFIX, seal, unseal

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SEALED = (
    ("tenants", "id", "line_channel_access_token"),
    ("webhook_endpoints", "id", "secret"),
)


def _rewrite(sealing: bool) -> None:
    """Seal (or open) every stored value; NOTIFIER_SECRET_KEY is needed only when there is
    one to rewrite."""
    connection = op.get_bind()
    for table, key, column in SEALED:
        purpose = f"{table}.{column}"
        rows = connection.execute(
            sa.text(f"SELECT {key}, {column} FROM {table} WHERE {column} IS NOT NULL")  # noqa: S608 (names above)
        ).all()
        for row_id, value in rows:
            if value.startswith(PREFIX) == sealing:
                continue
            connection.execute(
                sa.text(f"UPDATE {table} SET {column} = :value WHERE {key} = :id"),  # noqa: S608
                {
                    "value": seal(value, purpose) if sealing else unseal(value, purpose),
                    "id": row_id,
                },
            )


def upgrade() -> None:
    with op.batch_alter_table("webhook_endpoints") as batch:
        batch.alter_column("secret", type_=sa.Text(), existing_nullable=False)
    _rewrite(sealing=True)


def downgrade() -> None:
    _rewrite(sealing=False)
    with op.batch_alter_table("webhook_endpoints") as batch:
        batch.alter_column("secret", type_=sa.String(length=64), existing_nullable=False)

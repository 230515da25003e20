"""tenant preference settings: critical events and opt-outs, preference links in texts

Revision ID: 0009
Revises: 0008
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON_TYPE = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    with op.batch_alter_table("tenants") as batch:
        batch.add_column(sa.Column("critical_ignores_opt_outs", sa.Boolean(), nullable=True))
        batch.add_column(sa.Column("preference_link_channels", JSON_TYPE, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("tenants") as batch:
        batch.drop_column("preference_link_channels")
        batch.drop_column("critical_ignores_opt_outs")

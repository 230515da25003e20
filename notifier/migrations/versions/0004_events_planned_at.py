"""events.planned_at: an accepted event whose plan task was lost is planned again

Revision ID: 0004
Revises: 0003
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import notifier.models

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("events") as batch:
        batch.add_column(
            sa.Column("planned_at", notifier.models.UTCDateTime(timezone=True), nullable=True)
        )
        batch.create_index("ix_events_unplanned", ["status", "planned_at"], unique=False)
    # Events stored before this revision were planned when they were accepted.
    op.execute("UPDATE events SET planned_at = created_at WHERE status = 'accepted'")


def downgrade() -> None:
    with op.batch_alter_table("events") as batch:
        batch.drop_index("ix_events_unplanned")
        batch.drop_column("planned_at")

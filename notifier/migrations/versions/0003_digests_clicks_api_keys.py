"""digests, clicks, tenant API keys

Revision ID: 0003
Revises: 0002
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import notifier.models

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    with op.batch_alter_table("tenants") as batch:
        batch.add_column(sa.Column("api_key_hash", sa.String(length=128), nullable=True))
    with op.batch_alter_table("deliveries") as batch:
        batch.add_column(sa.Column("digest_id", BIG_ID, nullable=True))
        batch.create_index("ix_deliveries_digest", ["digest_id"], unique=False)
    op.create_table(
        "digests",
        sa.Column("id", BIG_ID, nullable=False),
        sa.Column("tenant_id", sa.String(length=128), nullable=False),
        sa.Column("recipient", sa.String(length=128), nullable=False),
        sa.Column("channel", sa.String(length=16), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("item_count", sa.Integer(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("retry_key", sa.String(length=64), nullable=True),
        sa.Column("provider_message_id", sa.String(length=255), nullable=True),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("claimed_at", notifier.models.UTCDateTime(timezone=True), nullable=True),
        sa.Column("sent_at", notifier.models.UTCDateTime(timezone=True), nullable=True),
        sa.Column("created_at", notifier.models.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_digests_status", "digests", ["status", "created_at"], unique=False)
    op.create_table(
        "clicks",
        sa.Column("id", BIG_ID, nullable=False),
        sa.Column("tenant_id", sa.String(length=128), nullable=False),
        sa.Column("delivery_id", BIG_ID, nullable=True),
        sa.Column("channel", sa.String(length=16), nullable=False),
        sa.Column("event_type", sa.String(length=100), nullable=False),
        sa.Column("url", sa.Text(), nullable=False),
        sa.Column("created_at", notifier.models.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_clicks_tenant_created", "clicks", ["tenant_id", "created_at"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_clicks_tenant_created", table_name="clicks")
    op.drop_table("clicks")
    op.drop_index("ix_digests_status", table_name="digests")
    op.drop_table("digests")
    with op.batch_alter_table("deliveries") as batch:
        batch.drop_index("ix_deliveries_digest")
        batch.drop_column("digest_id")
    with op.batch_alter_table("tenants") as batch:
        batch.drop_column("api_key_hash")

"""a person's addresses in one JSON object keyed by channel

The email, phone and LINE user id columns become `addresses` {"email": ..., "sms": ...,
"line": ...}, so a new channel stores its addresses there with no migration of its own.

Revision ID: 0010
Revises: 0009
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON_TYPE = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
COLUMNS = ("email", "phone", "line_user_id")
"""The columns that held the email, sms and line addresses."""


# Plain ALTER TABLE ADD/DROP COLUMN, SQLite's too (3.35+): a batch migration would copy the
# table, and dropping the old copy with foreign keys on deletes every membership and booking.


def upgrade() -> None:
    op.add_column(
        "users", sa.Column("addresses", JSON_TYPE, nullable=False, server_default=sa.text("'{}'"))
    )
    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            "UPDATE users SET addresses = jsonb_strip_nulls(jsonb_build_object("
            "'email', NULLIF(email, ''), 'sms', NULLIF(phone, ''), "
            "'line', NULLIF(line_user_id, '')))"
        )
    else:  # a merge patch drops the members whose value is null
        op.execute(
            "UPDATE users SET addresses = json_patch('{}', json_object("
            "'email', NULLIF(email, ''), 'sms', NULLIF(phone, ''), "
            "'line', NULLIF(line_user_id, '')))"
        )
    for column in COLUMNS:
        op.drop_column("users", column)


def downgrade() -> None:
    op.add_column("users", sa.Column("email", sa.String(length=320), nullable=True))
    op.add_column("users", sa.Column("phone", sa.String(length=32), nullable=True))
    op.add_column("users", sa.Column("line_user_id", sa.String(length=64), nullable=True))
    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            "UPDATE users SET email = addresses ->> 'email', phone = addresses ->> 'sms', "
            "line_user_id = addresses ->> 'line'"
        )
    else:
        op.execute(
            "UPDATE users SET email = json_extract(addresses, '$.email'), "
            "phone = json_extract(addresses, '$.sms'), "
            "line_user_id = json_extract(addresses, '$.line')"
        )
    op.drop_column("users", "addresses")

"""assistants.turn_taking: an assistant's own interruption and end-of-turn settings

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # A plain ADD COLUMN on both (SQLite takes NOT NULL with a default).
    op.add_column("assistants", sa.Column("turn_taking", sa.JSON(), nullable=False,
                                          server_default="{}"))


def downgrade() -> None:
    with op.batch_alter_table("assistants") as batch:  # SQLite: a table copy
        batch.drop_column("turn_taking")

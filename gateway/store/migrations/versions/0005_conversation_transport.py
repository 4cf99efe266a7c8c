"""conversations.transport: the wire a conversation came over

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Nullable: conversations stored before this revision do not know theirs.
    op.add_column("conversations", sa.Column("transport", sa.String(20), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("conversations") as batch:  # SQLite: a table copy
        batch.drop_column("transport")

"""sentence embeddings of passages and messages (plain binary columns on both backends)

Revision ID: 0003
Revises: 0002

Vectors are float16 rows in a BLOB / bytea column, ranked in-process
(gateway.store.vectors): this Python's sqlite3 cannot load extensions (sqlite-vec), and
Debian 12 packages no pgvector.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

_COLUMNS = (
    ("chunks", "embedding", sa.LargeBinary()),
    ("chunks", "sentence_embeddings", sa.LargeBinary()),
    ("chunks", "embedder", sa.String(length=64)),
    ("chunks", "embedded_at", sa.Float()),
    ("messages", "embedding", sa.LargeBinary()),
    ("messages", "embedder", sa.String(length=64)),
)


def _sqlite_update_triggers(text_only: bool) -> None:
    """The FTS5 update triggers re-index a row on any UPDATE; storing a vector must not
    re-index its words, so they fire only when the indexed columns change."""
    for table, cols, src, key in (
        ("chunks_fts", "title, heading, text", "chunks", "id"),
        ("chunks_tri", "title, heading, text", "chunks", "id"),
        ("messages_fts", "content", "messages", "rowid"),
    ):
        new = ", ".join(f"new.{c.strip()}" for c in cols.split(","))
        old = ", ".join(f"old.{c.strip()}" for c in cols.split(","))
        of = f"OF {cols} " if text_only else ""
        op.execute(f"DROP TRIGGER IF EXISTS {table}_au")
        op.execute(
            f"CREATE TRIGGER {table}_au AFTER UPDATE {of}ON {src} BEGIN "
            f"INSERT INTO {table}({table}, rowid, {cols}) VALUES ('delete', old.{key}, {old}); "
            f"INSERT INTO {table}(rowid, {cols}) VALUES (new.{key}, {new}); END")


def upgrade() -> None:
    for table, column, typ in _COLUMNS:
        op.add_column(table, sa.Column(column, typ, nullable=True))
    op.create_index("ix_chunks_embedder", "chunks", ["embedder"])
    op.create_index("ix_messages_embedder", "messages", ["embedder"])
    if op.get_bind().dialect.name == "sqlite":
        _sqlite_update_triggers(text_only=True)


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        _sqlite_update_triggers(text_only=False)
    op.drop_index("ix_messages_embedder", "messages")
    op.drop_index("ix_chunks_embedder", "chunks")
    for table, column, _typ in reversed(_COLUMNS):
        op.drop_column(table, column)  # SQLite >= 3.35 drops in place (triggers survive)

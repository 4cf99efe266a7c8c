"""full-text search indexes (FTS5 on SQLite, tsvector + pg_trgm on PostgreSQL)

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

_SQLITE_UP = [
    # Word search (BM25) over passages, and a trigram index for misspellings.
    "CREATE VIRTUAL TABLE chunks_fts USING fts5(title, heading, text, content='chunks', "
    "content_rowid='id', tokenize='porter unicode61')",
    "CREATE VIRTUAL TABLE chunks_tri USING fts5(title, heading, text, content='chunks', "
    "content_rowid='id', tokenize='trigram')",
    "CREATE VIRTUAL TABLE messages_fts USING fts5(content, content='messages', "
    "content_rowid='rowid', tokenize='porter unicode61')",
]
for _table, _cols, _src in (
    ("chunks_fts", "title, heading, text", "chunks"),
    ("chunks_tri", "title, heading, text", "chunks"),
):
    _new = ", ".join(f"new.{c.strip()}" for c in _cols.split(","))
    _old = ", ".join(f"old.{c.strip()}" for c in _cols.split(","))
    _SQLITE_UP += [
        f"CREATE TRIGGER {_table}_ai AFTER INSERT ON {_src} BEGIN "
        f"INSERT INTO {_table}(rowid, {_cols}) VALUES (new.id, {_new}); END",
        f"CREATE TRIGGER {_table}_ad AFTER DELETE ON {_src} BEGIN "
        f"INSERT INTO {_table}({_table}, rowid, {_cols}) VALUES ('delete', old.id, {_old}); END",
        f"CREATE TRIGGER {_table}_au AFTER UPDATE ON {_src} BEGIN "
        f"INSERT INTO {_table}({_table}, rowid, {_cols}) VALUES ('delete', old.id, {_old}); "
        f"INSERT INTO {_table}(rowid, {_cols}) VALUES (new.id, {_new}); END",
    ]
_SQLITE_UP += [
    "CREATE TRIGGER messages_fts_ai AFTER INSERT ON messages BEGIN "
    "INSERT INTO messages_fts(rowid, content) VALUES (new.rowid, new.content); END",
    "CREATE TRIGGER messages_fts_ad AFTER DELETE ON messages BEGIN "
    "INSERT INTO messages_fts(messages_fts, rowid, content) "
    "VALUES ('delete', old.rowid, old.content); END",
    "CREATE TRIGGER messages_fts_au AFTER UPDATE ON messages BEGIN "
    "INSERT INTO messages_fts(messages_fts, rowid, content) "
    "VALUES ('delete', old.rowid, old.content); "
    "INSERT INTO messages_fts(rowid, content) VALUES (new.rowid, new.content); END",
]

_PG_UP = [
    "CREATE EXTENSION IF NOT EXISTS pg_trgm",
    "ALTER TABLE chunks ADD COLUMN tsv tsvector GENERATED ALWAYS AS ("
    "setweight(to_tsvector('english', coalesce(title, '')), 'A') || "
    "setweight(to_tsvector('english', coalesce(heading, '')), 'B') || "
    "setweight(to_tsvector('english', coalesce(text, '')), 'C')) STORED",
    "CREATE INDEX ix_chunks_tsv ON chunks USING GIN (tsv)",
    "CREATE INDEX ix_chunks_trgm ON chunks USING GIN (text gin_trgm_ops)",
    "ALTER TABLE messages ADD COLUMN tsv tsvector GENERATED ALWAYS AS ("
    "to_tsvector('english', coalesce(content, ''))) STORED",
    "CREATE INDEX ix_messages_tsv ON messages USING GIN (tsv)",
]


def upgrade() -> None:
    statements = _SQLITE_UP if op.get_bind().dialect.name == "sqlite" else _PG_UP
    for sql in statements:
        op.execute(sql)


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        for name in ("chunks_fts", "chunks_tri"):
            for suffix in ("ai", "ad", "au"):
                op.execute(f"DROP TRIGGER IF EXISTS {name}_{suffix}")
        for suffix in ("ai", "ad", "au"):
            op.execute(f"DROP TRIGGER IF EXISTS messages_fts_{suffix}")
        for name in ("chunks_fts", "chunks_tri", "messages_fts"):
            op.execute(f"DROP TABLE IF EXISTS {name}")
    else:
        op.execute("DROP INDEX IF EXISTS ix_messages_tsv")
        op.execute("ALTER TABLE messages DROP COLUMN IF EXISTS tsv")
        op.execute("DROP INDEX IF EXISTS ix_chunks_trgm")
        op.execute("DROP INDEX IF EXISTS ix_chunks_tsv")
        op.execute("ALTER TABLE chunks DROP COLUMN IF EXISTS tsv")

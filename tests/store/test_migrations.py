"""Alembic migrations on both backends: up from an empty database one revision at a time,
down to base one at a time, up again; the result matches the SQLAlchemy models."""

from __future__ import annotations

from typing import Any

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect, text
from sqlalchemy.engine import Connection

from gateway.store.db import Database, alembic_config
from gateway.store.models import Base, Chunk, Document
from gateway.store.search import search_chunks

pytestmark = pytest.mark.asyncio(loop_scope="module")

# Objects the migrations add on purpose that the models do not describe: the full-text
# indexes (FTS5 tables with their shadow tables on SQLite; tsvector columns and GIN
# indexes on PostgreSQL).
FTS_TABLE_PREFIXES = ("chunks_fts", "chunks_tri", "messages_fts")
FTS_INDEXES = {"ix_chunks_tsv", "ix_chunks_trgm", "ix_messages_tsv"}


def revisions() -> list[str]:
    script = ScriptDirectory.from_config(alembic_config())
    return [r.revision for r in reversed(list(script.walk_revisions()))]


async def alembic(db: Database, action: str, target: str) -> None:
    def run(conn: Connection) -> None:
        cfg = alembic_config()
        cfg.attributes["connection"] = conn
        getattr(command, action)(cfg, target)

    async with db.engine.begin() as conn:
        await conn.run_sync(run)


async def state(db: Database) -> tuple[str | None, set[str]]:
    def read(conn: Connection) -> tuple[str | None, set[str]]:
        current = MigrationContext.configure(conn).get_current_revision()
        return current, set(inspect(conn).get_table_names()) - {"alembic_version"}

    async with db.engine.connect() as conn:
        return await conn.run_sync(read)


def unexpected(diff: Any) -> bool:
    """A schema difference that is not one of the deliberate full-text objects."""
    if isinstance(diff, list):  # column modifications come grouped
        return any(unexpected(d) for d in diff)
    kind = diff[0]
    if kind == "remove_table":
        return not diff[1].name.startswith(FTS_TABLE_PREFIXES)
    if kind == "remove_column":
        return diff[3].name != "tsv"
    if kind == "remove_index":
        return diff[1].name not in FTS_INDEXES
    return True


async def models_diff(db: Database) -> list[Any]:
    def compare(conn: Connection) -> list[Any]:
        return compare_metadata(MigrationContext.configure(conn), Base.metadata)

    async with db.engine.connect() as conn:
        diffs = await conn.run_sync(compare)
    return [d for d in diffs if unexpected(d)]


async def test_up_and_down_from_empty(database_url: str) -> None:
    model_tables = set(Base.metadata.tables)
    revs = revisions()
    assert revs[:2] == ["0001", "0002"]
    db = Database(database_url)
    try:
        assert await state(db) == (None, set())
        for rev in revs:  # up, one revision at a time
            await alembic(db, "upgrade", rev)
            assert (await state(db))[0] == rev
        _, tables = await state(db)
        assert tables >= model_tables
        assert await models_diff(db) == []  # the models and the migrations agree
        for rev in [*reversed(revs[:-1]), "base"]:  # down, one at a time
            await alembic(db, "downgrade", "-1")
            assert (await state(db))[0] == (None if rev == "base" else rev)
        assert await state(db) == (None, set())  # nothing left behind
        await db.migrate()  # up again, the way the gateway does it
        await db.migrate()  # and again: a no-op
        assert await state(db) == (revs[-1], tables)
        await full_text_search_works(db)
    finally:
        await db.close()


async def full_text_search_works(db: Database) -> None:
    async with db.session() as s:
        await s.execute(text("INSERT INTO assistants (id, name, description, system_prompt, "
                             "template_variables, language, allow_anonymous, tier, tools, "
                             "created_at, updated_at) VALUES ('a', 'A', '', '', '{}', 'en', "
                             "false, 'free', '[]', 0, 0)"))
        s.add(Document(id="d", assistant_id="a", title="Doc", content="x", meta={}))
        await s.flush()
        s.add(Chunk(document_id="d", assistant_id="a", seq=0, title="Doc", heading="H",
                    text="Migrations rebuild the search index."))
        await s.commit()
        hits = await search_chunks(s, "a", "index", 5)
    assert [h.document_id for h in hits] == ["d"]

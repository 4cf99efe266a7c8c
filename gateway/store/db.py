"""The database: an async SQLAlchemy engine, owned by the app lifespan, and its migrations.

SQLite (default, a file in the data dir) runs in WAL mode with ``synchronous=FULL``, so
a write that was acknowledged survives a SIGKILL or a power cut. PostgreSQL commits are
durable by default.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config as AlembicConfig
from sqlalchemy import event, text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from gateway.config import Config

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
STARTUP_LOCK = 0x6761746577617900  # "gatewy\0": the advisory lock id of start-up


def database_url(cfg: Config) -> str:
    if cfg.database.url:
        return cfg.database.url
    return f"sqlite+aiosqlite:///{Path(cfg.server.data_dir).resolve() / 'gateway.db'}"


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=FULL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA busy_timeout=5000")
    cur.close()


class Database:
    def __init__(self, url: str, *, pool_size: int = 10) -> None:
        self.url = url
        self.dialect = url.split(":", 1)[0].split("+", 1)[0]
        kwargs: dict[str, Any] = {}
        if self.dialect == "sqlite":  # a local file: nothing to ping (a round trip per use)
            Path(url.split("///", 1)[1]).parent.mkdir(parents=True, exist_ok=True)
        else:
            kwargs.update(pool_size=pool_size, max_overflow=pool_size, pool_timeout=10,
                          pool_pre_ping=True)
        # No exception string carries the statement's values (users' words, ids).
        self.engine: AsyncEngine = create_async_engine(url, hide_parameters=True, **kwargs)
        if self.dialect == "sqlite":
            event.listen(self.engine.sync_engine, "connect", _sqlite_pragmas)
        self.sessionmaker = async_sessionmaker(self.engine, expire_on_commit=False)

    @classmethod
    def from_config(cls, cfg: Config) -> Database:
        return cls(database_url(cfg))

    @property
    def is_sqlite(self) -> bool:
        return self.dialect == "sqlite"

    @asynccontextmanager
    async def session(self) -> AsyncIterator[AsyncSession]:
        async with self.sessionmaker() as session:
            yield session

    @asynccontextmanager
    async def startup_lock(self) -> AsyncIterator[None]:
        """Held by one starting gateway at a time (PostgreSQL: an advisory lock), so
        nodes starting together on a fresh database migrate it and create the default
        assistant once, not racing each other into duplicate-key errors. SQLite: one
        process owns the file; nothing to hold."""
        if self.is_sqlite:
            yield
            return
        async with self.engine.connect() as conn:
            await conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": STARTUP_LOCK})
            try:
                yield
            finally:
                await conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": STARTUP_LOCK})

    async def migrate(self) -> None:
        """Bring the schema to the newest revision (idempotent)."""
        async with self.engine.begin() as conn:
            await conn.run_sync(_upgrade)

    async def close(self) -> None:
        await self.engine.dispose()


def alembic_config() -> AlembicConfig:
    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    return cfg


def _upgrade(connection: Connection) -> None:
    cfg = alembic_config()
    cfg.attributes["connection"] = connection
    command.upgrade(cfg, "head")

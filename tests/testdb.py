"""Test databases: a SQLite file, or a fresh database on the real PostgreSQL.

The suite runs once per backend: ``GATEWAY_TEST_DB=sqlite`` (default) or
``GATEWAY_TEST_DB=postgres``. Each PostgreSQL database is created empty from a connection
to the admin database (``GATEWAY_TEST_PG``, default the local ``test`` database) and
dropped with ``WITH (FORCE)`` afterwards, so a test that leaks a connection cannot block
the cleanup.
"""

from __future__ import annotations

import asyncio
import os
import re
import secrets
import socket
import threading
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

import asyncpg
import pytest

BACKENDS = ("sqlite", "postgres")
PG_ADMIN = os.environ.get("GATEWAY_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")
_T = TypeVar("_T")


def selected_backend() -> str:
    backend = os.environ.get("GATEWAY_TEST_DB", "sqlite").strip().lower() or "sqlite"
    if backend in ("pg", "postgresql"):
        backend = "postgres"
    if backend not in BACKENDS:
        raise pytest.UsageError(f"GATEWAY_TEST_DB={backend!r}: use sqlite or postgres")
    return backend


def run_sync(job: Callable[[], Awaitable[_T]]) -> _T:
    """Run a coroutine to completion from sync code, even inside a running event loop.

    Fixtures are sync but are called from async tests, whose loop is already running in
    this thread, so the coroutine gets a loop of its own in a short-lived thread.
    """
    box: dict[str, _T | BaseException] = {}

    def target() -> None:
        try:
            box["ok"] = asyncio.run(job())  # type: ignore[arg-type]
        except BaseException as exc:  # handed back to the caller's thread
            box["err"] = exc

    thread = threading.Thread(target=target, name="testdb")
    thread.start()
    thread.join()
    if "err" in box:
        raise box["err"]  # type: ignore[misc]
    return box["ok"]  # type: ignore[return-value]


def _admin_dsn() -> str:
    return PG_ADMIN.replace("postgresql+asyncpg://", "postgresql://", 1)


def _sqlalchemy_url(name: str) -> str:
    base = _admin_dsn().rsplit("/", 1)[0]
    return f"{base.replace('postgresql://', 'postgresql+asyncpg://', 1)}/{name}"


async def _admin(*statements: str) -> None:
    conn = await asyncpg.connect(_admin_dsn(), timeout=10)
    try:
        for sql in statements:
            await conn.execute(sql)
    finally:
        await conn.close()


# Each database records which test process made it, so a later run can drop the
# leftovers of a run that was killed before its cleanup (and only those).
_OWNER = f"gateway-tests host={socket.gethostname()} pid={os.getpid()}"
_OWNER_RE = re.compile(r"gateway-tests host=(\S+) pid=(\d+)")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


async def _drop_orphans() -> None:
    conn = await asyncpg.connect(_admin_dsn(), timeout=10)
    try:
        rows = await conn.fetch("SELECT datname, shobj_description(oid, 'pg_database') AS note "
                                "FROM pg_database WHERE datname LIKE 'gw\\_%'")
        for row in rows:
            owner = _OWNER_RE.fullmatch(row["note"] or "")
            if owner and owner[1] == socket.gethostname() and not _alive(int(owner[2])):
                await conn.execute(f'DROP DATABASE IF EXISTS "{row["datname"]}" WITH (FORCE)')
    finally:
        await conn.close()


class TestDatabases:
    """Creates test databases and drops every one it made (per test, and again at exit).

    Drops run on a background thread: DROP DATABASE waits for a checkpoint (a second or
    more on a busy server), and the next test need not wait for that.
    """

    __test__ = False  # not a test class, whatever its name

    def __init__(self) -> None:
        self.pg_names: set[str] = set()
        self._swept = False
        self._dropper = ThreadPoolExecutor(max_workers=1, thread_name_prefix="testdb-drop")

    def new_url(self, backend: str, folder: Path) -> str:
        """A URL of a new, empty database (no schema: the gateway migrates it)."""
        if backend == "sqlite":
            folder.mkdir(parents=True, exist_ok=True)
            return f"sqlite+aiosqlite:///{folder.resolve() / 'gateway.db'}"
        if not self._swept:
            self._swept = True
            run_sync(_drop_orphans)
        name = f"gw_{secrets.token_hex(6)}"
        run_sync(lambda: _admin(f'CREATE DATABASE "{name}"',
                                f"COMMENT ON DATABASE \"{name}\" IS '{_OWNER}'"))
        self.pg_names.add(name)
        return _sqlalchemy_url(name)

    def drop(self, url: str) -> None:
        name = url.rsplit("/", 1)[-1]
        if url.startswith("postgresql") and name in self.pg_names:
            self.pg_names.discard(name)
            self._dropper.submit(asyncio.run, _admin(f'DROP DATABASE IF EXISTS "{name}" '
                                                     "WITH (FORCE)"))

    def drop_all(self) -> None:
        for name in list(self.pg_names):
            self.drop(_sqlalchemy_url(name))
        self._dropper.shutdown(wait=True)

"""Store fixtures: migrated databases on both backends (SQLite and the real PostgreSQL).

Modules here run their tests in one event loop per module (``loop_scope="module"``):
a database engine's connections belong to the loop that opened them, and the sample
knowledge base is loaded once per module and backend.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest
import pytest_asyncio
from testdb import BACKENDS, TestDatabases

from gateway.config import Config
from gateway.store.assistants import ensure_default_assistant
from gateway.store.db import Database
from gateway.store.knowledge import SAMPLE_KNOWLEDGE


@pytest.fixture(scope="module", params=BACKENDS)
def module_database_url(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
    test_databases: TestDatabases,
) -> Iterator[str]:
    url = test_databases.new_url(request.param, tmp_path_factory.mktemp(request.param))
    yield url
    test_databases.drop(url)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def sample_db(module_database_url: str) -> AsyncIterator[Database]:
    """The default assistant with the sample knowledge base (read-only for the tests)."""
    db = Database(module_database_url)
    await db.migrate()
    await ensure_default_assistant(db, Config().replace(knowledge={"path": str(SAMPLE_KNOWLEDGE)}))
    yield db
    await db.close()


@pytest_asyncio.fixture(loop_scope="module")
async def db(database_url: str) -> AsyncIterator[Database]:
    """A migrated, empty database of the test's own (parametrized over both backends)."""
    database = Database(database_url)
    await database.migrate()
    yield database
    await database.close()


"""Message search (``search_messages``): full-text ranking over conversation messages,
scoped by user, conversation and assistant, on SQLite FTS5 and PostgreSQL tsvector."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import delete, update

from gateway.store.db import Database
from gateway.store.models import ChatMessage, Conversation
from gateway.store.search import MessageHit, search_messages

pytestmark = pytest.mark.asyncio(loop_scope="module")

# (conversation id, assistant, user, [(role, content), ...])
CONVERSATIONS = [
    ("conv_py", "a1", "alice", [
        ("user", "How do I write a function in Python?"),
        ("assistant", "Use the def keyword, then the function name and parentheses."),
    ]),
    ("conv_pd", "a1", "alice", [
        ("user", "I need help with pandas data frames in Python"),
        ("assistant", "Here are some examples of Python functions on data frames."),
    ]),
    ("conv_trip", "a1", "bob", [
        ("user", "Recommend a trip to Lisbon"),
        ("assistant", "Lisbon is lovely in spring; try the café pastéis de nata."),
    ]),
    ("conv_other", "a2", "alice", [
        ("user", "Python functions for another assistant"),
    ]),
]


async def fill(db: Database) -> None:
    async with db.session() as s:
        for t, (conv_id, assistant, user, messages) in enumerate(CONVERSATIONS):
            s.add(Conversation(id=conv_id, assistant_id=assistant, user_id=user, title=conv_id))
            await s.flush()
            for seq, (role, content) in enumerate(messages):
                s.add(ChatMessage(id=f"{conv_id}_{seq}", conversation_id=conv_id, seq=seq,
                                  role=role, content=content, created_at=1000.0 + t * 10 + seq))
        await s.commit()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def messages_db(module_database_url: str) -> AsyncIterator[Database]:
    """The conversations above on each backend (read-only for the tests)."""
    db = Database(module_database_url)
    await db.migrate()
    await fill(db)
    yield db
    await db.close()


async def find(db: Database, question: str, *, user: str | None = None,
               conversation: str | None = None, assistant: str | None = None,
               limit: int = 10) -> list[MessageHit]:
    async with db.session() as s:
        return await search_messages(s, question, user_id=user, conversation_id=conversation,
                                     limit=limit, assistant_id=assistant)


def ids(hits: list[MessageHit]) -> list[str]:
    return [h.message_id for h in hits]


async def test_finds_and_ranks(messages_db: Database) -> None:
    hits = await find(messages_db, "python function examples")
    assert set(ids(hits)) >= {"conv_py_0", "conv_pd_1"}
    assert "conv_trip_0" not in ids(hits)
    scores = [h.relevance for h in hits]
    assert scores == sorted(scores, reverse=True)
    assert all(0.0 <= r <= 1.0 for r in scores) and scores[0] > 0
    # the message that has all three words (stemmed) ranks first
    assert hits[0].message_id == "conv_pd_1"
    first = hits[0]
    assert (first.conversation_id, first.role) == ("conv_pd", "assistant")
    assert first.content.startswith("Here are some examples")
    assert first.created_at == 1011.0


async def test_scoped_by_user_conversation_and_assistant(messages_db: Database) -> None:
    assert set(ids(await find(messages_db, "python", user="alice"))) == {
        "conv_py_0", "conv_pd_0", "conv_pd_1", "conv_other_0"}
    assert await find(messages_db, "python", user="bob") == []
    assert set(ids(await find(messages_db, "python", conversation="conv_pd"))) == {
        "conv_pd_0", "conv_pd_1"}
    assert set(ids(await find(messages_db, "python", assistant="a2"))) == {"conv_other_0"}
    assert await find(messages_db, "python", user="alice", conversation="conv_trip") == []
    assert await find(messages_db, "python", assistant="nobody") == []


async def test_limit(messages_db: Database) -> None:
    assert len(await find(messages_db, "python", limit=2)) == 2
    assert len(await find(messages_db, "python", limit=1)) == 1


async def test_stemming_and_unicode(messages_db: Database) -> None:
    assert "conv_py_1" in ids(await find(messages_db, "keywords"))
    assert ids(await find(messages_db, "café")) == ["conv_trip_1"]
    assert ids(await find(messages_db, "Pastéis?")) == ["conv_trip_1"]


async def test_no_match(messages_db: Database) -> None:
    for question in ("zebra", "", "   ", "?!", "¿¡"):
        assert await find(messages_db, question) == [], question


@pytest.mark.parametrize("attack", [
    '"a" OR NEAR(', "content:python", "python* ^x -y", "'); DROP TABLE messages; --",
    "a & b | !c <-> d:*", "python:A & (lisbon | !trip)", "NOT AND OR", "\\' %s :q",
])
async def test_operator_injection_is_harmless(messages_db: Database, attack: str) -> None:
    await find(messages_db, attack)  # no syntax error from either engine
    assert len(await find(messages_db, "python lisbon")) == 6  # nothing dropped


@settings(max_examples=75, deadline=None, database=None)
@given(st.text(max_size=60))
async def test_search_never_raises(messages_db: Database, question: str) -> None:
    hits = await find(messages_db, question, limit=3)
    assert len(hits) <= 3 and all(0.0 <= h.relevance <= 1.0 for h in hits)


async def test_index_follows_updates_and_deletes(db: Database) -> None:
    await fill(db)
    async with db.session() as s:
        await s.execute(update(ChatMessage).where(ChatMessage.id == "conv_trip_0")
                        .values(content="Recommend a trip to Porto"))
        await s.commit()
    assert ids(await find(db, "porto")) == ["conv_trip_0"]
    assert ids(await find(db, "lisbon")) == ["conv_trip_1"]  # the old words are gone
    async with db.session() as s:  # deleting a conversation deletes its messages
        await s.execute(delete(Conversation).where(Conversation.id == "conv_py"))
        await s.commit()
    assert not {"conv_py_0", "conv_py_1"} & set(ids(await find(db, "python function")))
    assert ids(await find(db, "porto")) == ["conv_trip_0"]

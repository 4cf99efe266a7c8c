"""Hybrid search (full-text + sentence vectors) on SQLite and PostgreSQL, with the real
all-MiniLM-L6-v2 embedder: questions that share no word with their answer find it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence

import numpy as np
import pytest
import pytest_asyncio
from sqlalchemy import delete, select, text, update

from gateway.config import Config
from gateway.providers.minilm_embedder import MiniLMEmbedder
from gateway.store.db import Database
from gateway.store.documents import add_document
from gateway.store.knowledge import split_sentences
from gateway.store.models import Assistant, ChatMessage, Chunk, Conversation, Document
from gateway.store.search import search_chunks
from gateway.store.semantic import SemanticSearch, fuse, hybrid_chunks, hybrid_messages
from gateway.store.vectors import Vectors, from_blob, to_blob

pytestmark = pytest.mark.asyncio(loop_scope="module")

DOCS = [
    ("Opening hours", "The museum is open from 9 am to 5 pm. It is closed on Mondays."),
    ("Prices", "Admission costs 12 euros for adults. Children under six go free."),
    ("Pets", "Dogs are welcome on a leash in the garden, not in the galleries."),
    ("Parking", "There is a car park behind the station with 200 spaces."),
    ("Wifi", "The network password is ZX-4410 and it works in the cafe."),
]


@pytest.fixture(scope="module")
def embedder() -> MiniLMEmbedder:
    return MiniLMEmbedder.from_config(Config())


def searcher(db: Database, embedder: MiniLMEmbedder) -> SemanticSearch:
    async def embed(texts: Sequence[str]) -> Vectors:
        return await asyncio.to_thread(embedder.embed, texts)

    return SemanticSearch(db, embed, embedder.name, embedder.dim, min_similarity=0.25)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def kb(module_database_url: str,
             embedder: MiniLMEmbedder) -> AsyncIterator[tuple[Database, SemanticSearch]]:
    db = Database(module_database_url)
    await db.migrate()
    async with db.session() as s:
        for asst in ("museum", "other"):
            s.add(Assistant(id=asst, name=asst))
        await s.flush()
        for title, content in DOCS:
            await add_document(s, "museum", title=title, content=content, url=None, meta={})
        await add_document(s, "other", title="Hours", content="The zoo opens at noon.",
                           url=None, meta={})
        await s.commit()
    semantic = searcher(db, embedder)
    assert await semantic.indexer.index_chunks() == len(DOCS) + 1
    yield db, semantic
    await db.close()


async def test_no_shared_word_still_found(kb: tuple[Database, SemanticSearch]) -> None:
    db, semantic = kb
    cases = {"when can I visit": "Opening hours", "how much do I pay to get in": "Prices",
             "may I bring my puppy": "Pets", "where should I put my vehicle": "Parking"}
    async with db.session() as s:
        for question, title in cases.items():
            assert await search_chunks(s, "museum", question, 3) == []  # no word in common
            hits = await hybrid_chunks(s, semantic, "museum", question, 3)
            assert hits and hits[0].title == title, (question, [h.title for h in hits])
            top = hits[0]
            assert top.similarity is not None and top.relevance >= 0.3
            assert top.sentences == tuple(split_sentences(top.text))
            assert len(top.sentence_scores) == len(top.sentences)
            assert top.relevance == pytest.approx(max(top.similarity, *top.sentence_scores),
                                                  abs=1e-3)
        # The sentence that answers scores above the passage's other sentence.
        (hours, *_) = await hybrid_chunks(s, semantic, "museum", "what time do you open", 1)
        assert hours.sentence_scores[0] > hours.sentence_scores[1]


async def test_exact_words_kept_and_scope_and_unrelated(
        kb: tuple[Database, SemanticSearch]) -> None:
    db, semantic = kb
    async with db.session() as s:
        hits = await hybrid_chunks(s, semantic, "museum", "ZX-4410", 3)
        assert hits[0].title == "Wifi"  # a code: found by its exact words
        # Another assistant's passages are never candidates.
        assert all(h.title != "Hours" for h in
                   await hybrid_chunks(s, semantic, "museum", "when does it open", 5))
        assert [h.title for h in
                await hybrid_chunks(s, semantic, "other", "when does it open", 5)] == ["Hours"]
        # Nothing shares a word or the meaning: nothing is returned.
        assert await hybrid_chunks(s, semantic, "museum", "quantum chromodynamics", 3) == []
        # Without an embedder: exactly the full-text results.
        assert (await hybrid_chunks(s, None, "museum", "dogs", 3))[0].similarity is None


async def test_index_follows_deletes_replacements_and_model_changes(
        db: Database, embedder: MiniLMEmbedder) -> None:
    semantic = searcher(db, embedder)
    async with db.session() as s:
        s.add(Assistant(id="a", name="a"))
        await s.flush()
        doc = await add_document(s, "a", title="Note", content="Breakfast is served at 7.",
                                 url=None, meta={})
        await s.commit()
    await semantic.indexer.index_chunks("a")
    async with db.session() as s:
        assert (await hybrid_chunks(s, semantic, "a", "morning meal", 1))[0].text.startswith(
            "Breakfast")
        # Same row id reused (SQLite) with other content: the cached vectors must not stay.
        await s.execute(delete(Chunk).where(Chunk.document_id == doc.id))
        s.add(Chunk(document_id=doc.id, assistant_id="a", seq=0, title="Note", heading="",
                    text="The lobby has a grand piano."))
        await s.commit()
    await semantic.indexer.index_chunks("a")
    async with db.session() as s:
        assert await hybrid_chunks(s, semantic, "a", "morning meal", 1) == []
        assert (await hybrid_chunks(s, semantic, "a", "musical instrument", 1))[0].text \
            .startswith("The lobby")
        # Vectors of another model are re-embedded, not mixed in.
        await s.execute(update(Chunk).values(embedder="old-model", embedding=b"x"))
        await s.commit()
    assert await semantic.indexer.index_chunks() == 1
    async with db.session() as s:
        (vec,) = (await s.execute(select(Chunk.embedding))).scalars()
        assert from_blob(vec, 384).shape == (1, 384)
        await s.execute(delete(Document))
        await s.commit()
        assert await hybrid_chunks(s, semantic, "a", "musical instrument", 1) == []


async def test_messages_by_meaning_within_the_owner_filters(
        db: Database, embedder: MiniLMEmbedder) -> None:
    semantic = searcher(db, embedder)
    async with db.session() as s:
        for conv, user in (("c1", "alice"), ("c2", "bob")):
            s.add(Conversation(id=conv, assistant_id="a1", user_id=user, title=conv))
        await s.flush()
        for i, (conv, content) in enumerate((
                ("c1", "The museum is open from 9 am to 5 pm."),
                ("c1", "I would like a vegetarian lasagna recipe."),
                ("c2", "The gallery welcomes visitors from 10 am until 6 pm."))):
            s.add(ChatMessage(id=f"m{i}", conversation_id=conv, seq=i, role="assistant",
                              content=content, created_at=1000.0 + i))
        await s.commit()
        # Not embedded yet: the search embeds what is new first.
        hits = await hybrid_messages(s, semantic, "when can I visit", user_id="alice",
                                     conversation_id=None, limit=5, assistant_id="a1")
        assert [h.message_id for h in hits] == ["m0"]  # bob's message is not alice's
        assert 0.3 <= hits[0].relevance <= 1.0
        hits = await hybrid_messages(s, semantic, "when can I visit", user_id=None,
                                     conversation_id=None, limit=5, assistant_id="a1")
        assert {h.message_id for h in hits} == {"m0", "m2"}
        pending = await s.scalar(text("SELECT count(*) FROM messages WHERE embedder IS NULL"))
        assert pending == 0
        # Exact words still rank (full-text), with the same scope.
        hits = await hybrid_messages(s, semantic, "lasagna", user_id="alice",
                                     conversation_id="c1", limit=5, assistant_id="a1")
        assert hits[0].message_id == "m1"


async def test_pure_parts() -> None:  # (sync code; async for the module mark)
    cos = {"a": 0.5, "b": 0.45, "c": 0.1, "d": 0.3}
    # b's words lift it over a; c has words but no meaning; e has words, no vector yet.
    assert fuse(cos, {"b": 0.5, "c": 0.9, "e": 0.6}, floor=0.35) == ["b", "a", "c", "e"]
    assert fuse(cos, {}, floor=0.0) == ["a", "b", "d", "c"]
    vecs = np.random.default_rng(1).standard_normal((3, 384)).astype(np.float32)
    back = from_blob(to_blob(vecs), 384)
    assert back.shape == (3, 384) and np.allclose(back, vecs, atol=1e-2)
    assert from_blob(None, 384).shape == (0, 384) and from_blob(b"abc", 384).shape == (0, 384)
    assert split_sentences("Open at 9 a.m. daily. Closed Mondays!\n- Cafe: yes") == [
        "Open at 9 a.m. daily.", "Closed Mondays!", "- Cafe: yes"]

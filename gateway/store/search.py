"""Ranked retrieval of knowledge-base passages and messages, by the database's own engine.

SQLite: FTS5 with BM25 (title and heading weigh more than body), then a trigram FTS5
fallback for words STT misspelt. PostgreSQL: ``tsvector`` / ``ts_rank_cd``, then a
``pg_trgm`` word-similarity fallback. Both produce a ``relevance`` in 0..1.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from .knowledge import close_match, fts_query, trigram_query

_WORD = re.compile(r"[^\W_]+")


@dataclass(frozen=True, slots=True)
class ChunkHit:
    chunk_id: int
    document_id: str
    title: str
    heading: str
    text: str
    url: str | None
    relevance: float
    # With an embedder (gateway.store.semantic): the question's cosine similarity to the
    # passage, and to each of its sentences (knowledge.split_sentences order).
    similarity: float | None = None
    sentences: tuple[str, ...] = ()
    sentence_scores: tuple[float, ...] = ()


def _relevance(score: float, scale: float) -> float:
    """0..1 from an engine score. A match is never 0: a word found in almost every
    passage scores ~0 in BM25, yet the passage did match."""
    score = max(score, 0.0)
    return round(0.05 + 0.95 * score / (score + scale), 4)


def pg_tsquery(question: str) -> str:
    """An OR tsquery of the question's content words (only word characters: no syntax)."""
    terms = fts_query(question)
    words = [w for w in _WORD.findall(terms.replace('"', " ")) if w]
    return " | ".join(dict.fromkeys(words))


async def search_chunks(
    session: AsyncSession, assistant_id: str, question: str, limit: int = 5
) -> list[ChunkHit]:
    if session.get_bind().dialect.name == "sqlite":
        return await _sqlite_chunks(session, assistant_id, question, limit)
    return await _pg_chunks(session, assistant_id, question, limit)


_SQLITE_SQL = """
SELECT c.id, c.document_id, c.title, c.heading, c.text, d.url, {rank} AS r
FROM {table} JOIN chunks c ON c.id = {table}.rowid JOIN documents d ON d.id = c.document_id
WHERE {table} MATCH :q AND c.assistant_id = :a ORDER BY r LIMIT :n
"""


async def _sqlite_chunks(
    session: AsyncSession, assistant_id: str, question: str, limit: int
) -> list[ChunkHit]:
    query = fts_query(question)
    rows: list[Any] = []
    if query:
        sql = _SQLITE_SQL.format(table="chunks_fts", rank="bm25(chunks_fts, 4.0, 2.0, 1.0)")
        rows = list(await session.execute(text(sql), {"q": query, "a": assistant_id,
                                                       "n": limit}))
    fuzzy = trigram_query(question)
    if not rows and fuzzy:
        sql = _SQLITE_SQL.format(table="chunks_tri", rank="bm25(chunks_tri, 2.0, 2.0, 1.0)")
        found = await session.execute(text(sql), {"q": fuzzy, "a": assistant_id,
                                                  "n": limit * 4})
        rows = [r for r in found if close_match(question, f"{r[2]} {r[3]} {r[4]}")][:limit]
    return [ChunkHit(r[0], r[1], r[2], r[3], r[4], r[5], _relevance(-r[6], 2.0)) for r in rows]


_PG_SQL = """
SELECT c.id, c.document_id, c.title, c.heading, c.text, d.url, ts_rank_cd(c.tsv, q) AS r
FROM chunks c JOIN documents d ON d.id = c.document_id, to_tsquery('english', :q) q
WHERE c.tsv @@ q AND c.assistant_id = :a ORDER BY r DESC LIMIT :n
"""
# A loose candidate filter (close_match decides, as on SQLite): a misheard word shares
# few padded trigrams with the real one ("vargen" ~ "barge" is 0.29), far below the
# 0.6 default threshold of pg_trgm's <% operator.
_PG_FUZZY = """
SELECT c.id, c.document_id, c.title, c.heading, c.text, d.url,
       word_similarity(:w, c.title || ' ' || c.heading || ' ' || c.text) AS r
FROM chunks c JOIN documents d ON d.id = c.document_id
WHERE c.assistant_id = :a
  AND word_similarity(:w, c.title || ' ' || c.heading || ' ' || c.text) >= 0.25
ORDER BY r DESC LIMIT :n
"""


async def _pg_chunks(
    session: AsyncSession, assistant_id: str, question: str, limit: int
) -> list[ChunkHit]:
    query = pg_tsquery(question)
    rows: list[Any] = []
    if query:
        rows = list(await session.execute(text(_PG_SQL), {"q": query, "a": assistant_id,
                                                          "n": limit}))
    if not rows:
        for word in _content_words(question):
            found = await session.execute(text(_PG_FUZZY), {"w": word, "a": assistant_id,
                                                            "n": limit * 4})
            rows = [r for r in found if close_match(question, f"{r[2]} {r[3]} {r[4]}")][:limit]
            if rows:
                break
    return [ChunkHit(r[0], r[1], r[2], r[3], r[4], r[5], _relevance(float(r[6]), 0.1))
            for r in rows]


def _content_words(question: str) -> list[str]:
    grams = trigram_query(question)
    if not grams:
        return []
    words = [w.lower() for w in _WORD.findall(question) if len(w) >= 4]
    return sorted(dict.fromkeys(words), key=len, reverse=True)[:4]


@dataclass(frozen=True, slots=True)
class MessageHit:
    message_id: str
    conversation_id: str
    role: str
    content: str
    created_at: float
    relevance: float


async def search_messages(
    session: AsyncSession, question: str, *, user_id: str | None,
    conversation_id: str | None, limit: int, assistant_id: str | None = None,
) -> list[MessageHit]:
    sqlite = session.get_bind().dialect.name == "sqlite"
    query = fts_query(question) if sqlite else pg_tsquery(question)
    if not query:
        return []
    where = ["c.id = m.conversation_id"]
    params: dict[str, Any] = {"q": query, "n": limit}
    if user_id is not None:
        where.append("c.user_id = :u")
        params["u"] = user_id
    if conversation_id is not None:
        where.append("m.conversation_id = :c")
        params["c"] = conversation_id
    if assistant_id is not None:  # conversations are private to their assistant
        where.append("c.assistant_id = :asst")
        params["asst"] = assistant_id
    if sqlite:
        sql = ("SELECT m.id, m.conversation_id, m.role, m.content, m.created_at, "
               "bm25(messages_fts) AS r FROM messages_fts JOIN messages m "
               "ON m.rowid = messages_fts.rowid JOIN conversations c ON "
               + " AND ".join(where) + " WHERE messages_fts MATCH :q ORDER BY r LIMIT :n")
        rows = await session.execute(text(sql), params)
        return [MessageHit(r[0], r[1], r[2], r[3], r[4], _relevance(-r[5], 2.0)) for r in rows]
    sql = ("SELECT m.id, m.conversation_id, m.role, m.content, m.created_at, "
           "ts_rank_cd(m.tsv, q) AS r FROM messages m JOIN conversations c ON "
           + " AND ".join(where) + ", to_tsquery('english', :q) q WHERE m.tsv @@ q "
           "ORDER BY r DESC LIMIT :n")
    rows = await session.execute(text(sql), params)
    return [MessageHit(r[0], r[1], r[2], r[3], r[4], _relevance(float(r[5]), 0.1))
            for r in rows]

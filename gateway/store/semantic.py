"""Hybrid search: the database's full-text engine plus sentence-vector similarity.

Candidates are the full-text hits plus the passages nearest by cosine similarity; they
are ranked by ``cosine + FTS_WEIGHT * full-text relevance``: meaning decides, and the
question's exact words (a code, a name) lift a passage that has them. Measured against
reciprocal rank fusion on paraphrased questions (scripts/bench_search.py), this weighted
sum found more answers in the top 3 (RRF let full-text hits on an incidental shared word
push the answer out). Every hit carries the question's cosine similarity (to the passage
and to each of its sentences): what an answer engine thresholds on. A search API hit
found only by meaning needs ``min_similarity``; the LLM's retrieval takes the top k and
leaves the judgement to the answer engine.

Without an embedder (``[embedder] provider = "null"``, or a failed embedding) the
functions here return exactly the full-text results of ``gateway.store.search``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import structlog
from sqlalchemy import bindparam, text
from sqlalchemy.ext.asyncio import AsyncSession

from .db import Database
from .indexer import Indexer
from .knowledge import split_sentences
from .search import ChunkHit, MessageHit, search_chunks, search_messages
from .vectors import ChunkIndex, EmbedFn, Vectors, from_blob

log = structlog.get_logger("gateway.search")

FTS_WEIGHT = 0.2  # full-text relevance is 0.05..1: a bonus of up to 0.2 in cosine units
MIN_POOL = 20  # candidates taken from each ranking before fusing
MAX_MESSAGES_SCANNED = 5000  # newest messages of the caller's filter compared by vector
MESSAGE_CATCH_UP_S = 1.0  # a message search first embeds new messages for up to this long


def fuse(cosines: Mapping[Any, float], fts: Mapping[Any, float], floor: float) -> list[Any]:
    """Keys best first by cosine + FTS_WEIGHT * full-text relevance; a key without a
    full-text match needs ``floor`` cosine, one without a vector ranks by its words."""
    scores = {}
    for key in {*cosines, *fts}:
        cos = cosines.get(key)
        if key not in fts and (cos is None or cos < floor):
            continue
        scores[key] = (cos if cos is not None else 0.0) + FTS_WEIGHT * fts.get(key, 0.0)
    return sorted(scores, key=lambda k: -scores[k])


def _unit(x: float) -> float:
    return round(min(max(x, 0.0), 1.0), 4)


class SemanticSearch:
    """The process's semantic search: the question embedder, the passage index and
    the indexer that writes vectors (one per app, made in the lifespan)."""

    def __init__(self, db: Database, embed: EmbedFn, embedder: str, dim: int,
                 min_similarity: float, embed_bulk: EmbedFn | None = None) -> None:
        self.embed = embed  # questions
        bulk = embed_bulk or embed  # passages and messages being indexed
        self.dim = dim
        self.min_similarity = min_similarity
        self.index = ChunkIndex(embedder, dim)
        self.indexer = Indexer(db, bulk, embedder, on_chunks=self.index.invalidate)
        self.embedder = embedder

    async def vector(self, question: str) -> Vectors | None:
        """The question's vector; None on trouble (the search is then full-text only)."""
        try:
            vectors = await self.embed([question])
        except Exception as exc:  # a busy pool must not fail a search
            log.warning("query_embedding_failed", error=str(exc))
            return None
        return None if vectors is None else vectors[0]

    async def chunks(self, s: AsyncSession, assistant_id: str, question: str,
                     limit: int, floor: float | None = None) -> list[ChunkHit]:
        """Passages best first; ``floor``: the cosine a passage without the question's
        words needs (default ``min_similarity``)."""
        pool = max(limit * 4, MIN_POOL)
        fts = await search_chunks(s, assistant_id, question, pool)
        query = await self.vector(question)
        if query is None:
            return fts[:limit]
        near = await self.index.top(s, assistant_id, query, pool)
        cos = dict(near)
        missing = [h.chunk_id for h in fts if h.chunk_id not in cos]
        cos.update(await self.index.cosines(s, assistant_id, query, missing))
        floor = self.min_similarity if floor is None else floor
        chosen = fuse(cos, {h.chunk_id: h.relevance for h in fts}, floor)[:limit]
        return await self._chunk_hits(s, chosen, query, cos, {h.chunk_id: h for h in fts})

    async def _chunk_hits(self, s: AsyncSession, ids: list[int], query: Vectors,
                          cos: dict[int, float], fts: dict[int, ChunkHit]) -> list[ChunkHit]:
        if not ids:
            return []
        sql = text("SELECT c.id, c.document_id, c.title, c.heading, c.text, d.url, "
                   "c.sentence_embeddings, c.embedder FROM chunks c JOIN documents d "
                   "ON d.id = c.document_id WHERE c.id IN :ids"
                   ).bindparams(bindparam("ids", expanding=True))
        rows = {r[0]: r for r in await s.execute(sql, {"ids": ids})}
        hits = []
        for cid in ids:
            r = rows.get(cid)
            if r is None:  # deleted meanwhile
                continue
            sentences = tuple(split_sentences(r[4]))
            vecs = from_blob(r[6], self.dim) if r[7] == self.embedder else None
            scores: tuple[float, ...] = ()
            if vecs is not None and len(vecs) == len(sentences):
                scores = tuple(round(float(x), 4) for x in vecs @ query)
            similarity = cos.get(cid)
            best = max([similarity or 0.0, *scores])
            relevance = _unit(best) if similarity is not None else fts[cid].relevance
            hits.append(ChunkHit(cid, r[1], r[2], r[3], r[4], r[5], relevance,
                                 None if similarity is None else round(similarity, 4),
                                 sentences, scores))
        return hits

    async def messages(self, s: AsyncSession, question: str, *, user_id: str | None,
                       conversation_id: str | None, limit: int,
                       assistant_id: str | None = None) -> list[MessageHit]:
        pool = max(limit * 4, MIN_POOL)
        fts = await search_messages(s, question, user_id=user_id,
                                    conversation_id=conversation_id, limit=pool,
                                    assistant_id=assistant_id)
        query = await self.vector(question)
        if query is None:
            return fts[:limit]
        try:
            await self.indexer.index_messages(budget_s=MESSAGE_CATCH_UP_S)
        except Exception as exc:  # older vectors still serve; new ones come next time
            log.warning("message_embedding_failed", error=str(exc))
        rows = {r[0]: r for r in await self._message_rows(
            s, user_id, conversation_id, assistant_id, [h.message_id for h in fts])}
        cos = {}
        for mid, r in rows.items():
            vec = from_blob(r[5], self.dim)
            if len(vec) == 1:
                cos[mid] = float(vec[0] @ query)
        fts_by_id = {h.message_id: h for h in fts}
        ranked = fuse(cos, {h.message_id: h.relevance for h in fts}, self.min_similarity)
        out = []
        for mid in ranked[:limit]:
            hit = fts_by_id.get(mid)
            if hit is None:
                r = rows[mid]
                hit = MessageHit(mid, r[1], r[2], r[3], r[4], 0.0)
            score = _unit(cos[mid]) if mid in cos else hit.relevance
            out.append(dataclasses.replace(hit, relevance=score))
        return out

    async def _message_rows(self, s: AsyncSession, user_id: str | None,
                            conversation_id: str | None, assistant_id: str | None,
                            must: list[str]) -> list[Any]:
        """The filter's newest messages with vectors, and the full-text hits' rows."""
        where = ["m.embedder = :m"]
        params: dict[str, Any] = {"m": self.embedder, "n": MAX_MESSAGES_SCANNED}
        for column, value, name in (("c.user_id", user_id, "u"),
                                    ("m.conversation_id", conversation_id, "cv"),
                                    ("c.assistant_id", assistant_id, "asst")):
            if value is not None:
                where.append(f"{column} = :{name}")
                params[name] = value
        cols = "m.id, m.conversation_id, m.role, m.content, m.created_at, m.embedding"
        sql = (f"SELECT {cols} FROM messages m JOIN conversations c ON c.id = m.conversation_id "
               f"WHERE {' AND '.join(where)} ORDER BY m.created_at DESC LIMIT :n")
        rows = list(await s.execute(text(sql), params))
        seen = {r[0] for r in rows}
        extra = [m for m in must if m not in seen]
        if extra:  # full-text hits older than the scanned window: their vectors too
            q = text(f"SELECT {cols} FROM messages m WHERE m.id IN :ids AND m.embedder = :m"
                     ).bindparams(bindparam("ids", expanding=True))
            rows += list(await s.execute(q, {"ids": extra, "m": self.embedder}))
        return rows


async def hybrid_chunks(s: AsyncSession, semantic: SemanticSearch | None, assistant_id: str,
                        question: str, limit: int, floor: float | None = None) -> list[ChunkHit]:
    """Passages for a question: hybrid with an embedder, full-text without."""
    if semantic is None:
        return await search_chunks(s, assistant_id, question, limit)
    return await semantic.chunks(s, assistant_id, question, limit, floor)


async def hybrid_messages(s: AsyncSession, semantic: SemanticSearch | None, question: str, *,
                          user_id: str | None, conversation_id: str | None, limit: int,
                          assistant_id: str | None = None) -> list[MessageHit]:
    """Messages for a question (the caller's filters), hybrid with an embedder."""
    if semantic is None:
        return await search_messages(s, question, user_id=user_id,
                                     conversation_id=conversation_id, limit=limit,
                                     assistant_id=assistant_id)
    return await semantic.messages(s, question, user_id=user_id,
                                   conversation_id=conversation_id, limit=limit,
                                   assistant_id=assistant_id)

"""What the LLM stage of chat and voice asks: passages of an assistant's knowledge base."""

from __future__ import annotations

from gateway.providers.base import Passage

from .db import Database
from .semantic import SemanticSearch, hybrid_chunks


class Retriever:
    """Hybrid (full-text + sentence vectors) with ``semantic``; full-text only without.
    Each passage's ``score`` is then the question's cosine similarity (see Passage)."""

    def __init__(self, db: Database, semantic: SemanticSearch | None = None) -> None:
        self.db = db
        self.semantic = semantic

    async def search(self, assistant_id: str, question: str, k: int) -> list[Passage]:
        async with self.db.session() as s:
            # The top k whatever their similarity: the answer engine judges (abstains).
            hits = await hybrid_chunks(s, self.semantic, assistant_id, question, k, floor=0.0)
        return [
            Passage(title=h.heading or h.title, text=h.text, source=h.url or h.document_id,
                    score=h.relevance, document_id=h.document_id, document_title=h.title,
                    similarity=h.similarity, sentences=h.sentences,
                    sentence_scores=h.sentence_scores)
            for h in hits
        ]

"""What the LLM stage of chat and voice asks: passages of an assistant's knowledge base."""

from __future__ import annotations

from gateway.providers.base import Passage

from .db import Database
from .search import search_chunks


class Retriever:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def search(self, assistant_id: str, question: str, k: int) -> list[Passage]:
        async with self.db.session() as s:
            hits = await search_chunks(s, assistant_id, question, k)
        return [
            Passage(title=h.heading or h.title, text=h.text, source=h.url or h.document_id,
                    score=h.relevance, document_id=h.document_id, document_title=h.title)
            for h in hits
        ]

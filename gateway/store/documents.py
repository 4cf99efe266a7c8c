"""Knowledge-base documents: stored whole, retrieved by passage (chunk)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import delete
from sqlalchemy.ext.asyncio import AsyncSession

from .knowledge import split_passages
from .models import Chunk, Document, new_id


async def add_document(
    session: AsyncSession, assistant_id: str, *, title: str, content: str,
    url: str | None, meta: dict[str, Any], doc_id: str | None = None,
) -> Document:
    """Insert a document and its passages (the caller commits)."""
    doc = Document(id=doc_id or new_id("doc"), assistant_id=assistant_id, title=title,
                   content=content, url=url, meta=meta, status="ready")
    session.add(doc)
    await session.flush()
    _add_chunks(session, doc)
    return doc


def _add_chunks(session: AsyncSession, doc: Document) -> None:
    passages = split_passages(doc.content) or [("", doc.content.strip() or doc.title)]
    for seq, (heading, text) in enumerate(passages):
        session.add(Chunk(document_id=doc.id, assistant_id=doc.assistant_id, seq=seq,
                          title=doc.title, heading=heading, text=text))


async def replace_chunks(session: AsyncSession, doc: Document) -> None:
    """Re-cut a document's passages after its content or title changed."""
    await session.execute(delete(Chunk).where(Chunk.document_id == doc.id))
    _add_chunks(session, doc)

"""The knowledge-base integration API (seed 001) under ``/api/v1``.

Import documents in batches, read, update and delete them, search them (ranked, with
``relevance``) and ask questions answered by the LLM from them (with ``sources``).
Errors use the seed's ``{"success": false, "error": {...}}`` body (``EnvelopeRoute``).
Writes commit before the answer: an acknowledged import survives a crash.

``content`` in search results is the best-matching passage of each document, not the
whole document: the seed shows an excerpt (``"..."``), the passage is what the search
engine ranked (so a client can show why it matched), and a response stays bounded
however large the documents are. ``GET /api/v1/documents/{id}`` returns the full text.
"""

from __future__ import annotations

import contextlib
from typing import Annotated, Any

import structlog
from fastapi import APIRouter, Path, Query, Request
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import delete, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from gateway.access.auth import Principal
from gateway.pipeline.prompt import assistant_source, system_prompt
from gateway.pipeline.reply import Failed, Reply, ReplyRequest
from gateway.providers.base import ProviderError
from gateway.store.assistants import get_assistant
from gateway.store.documents import add_document, replace_chunks
from gateway.store.models import Chunk, Document
from gateway.store.semantic import hybrid_chunks

from . import assistants
from .deps import assistant_of, checked_assistant
from .envelope import EnvelopeRoute
from .errors import ERROR_RESPONSES, ApiError, provider_failure
from .v1base import (
    MAX_BATCH,
    Caller,
    ChatModelId,
    CleanStr,
    DocumentIn,
    ImportCaller,
    JsonObject,
    QueryCaller,
    SearchCaller,
    check_document_sizes,
    iso,
    require_credential,
)

log = structlog.get_logger("gateway.api.knowledge")
router = APIRouter()  # what the app includes: this API and the assistants/keys API
kb = APIRouter(prefix="/api/v1", tags=["knowledge base"], route_class=EnvelopeRoute,
               responses={**ERROR_RESPONSES, 413: ERROR_RESPONSES[400] | {
                   "description": "DOCUMENT_TOO_LARGE"}})
DocId = Annotated[CleanStr, Path(min_length=1, max_length=64)]


# --- request and response bodies ------------------------------------------------------

class ImportRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    chatModelId: ChatModelId
    documents: list[DocumentIn] = Field(min_length=1, max_length=MAX_BATCH)


class ImportedDocument(BaseModel):
    id: str
    title: str
    status: str


class ImportResponse(BaseModel):
    success: bool
    imported: int
    documents: list[ImportedDocument]


class DocumentUpdate(BaseModel):
    """PATCH: only the fields given change. PUT: title and content required, the rest reset."""

    model_config = ConfigDict(extra="ignore")

    title: CleanStr | None = Field(default=None, min_length=1, max_length=500)
    content: CleanStr | None = Field(default=None, min_length=1)
    url: CleanStr | None = Field(default=None, max_length=2048)
    metadata: JsonObject | None = None


class DocumentSummary(BaseModel):
    id: str
    chatModelId: str
    title: str
    url: str | None
    metadata: dict[str, Any]
    status: str
    contentBytes: int
    createdAt: str | None
    updatedAt: str | None


class DocumentFull(DocumentSummary):
    content: str
    chunks: int


class DocumentResponse(BaseModel):
    success: bool
    document: DocumentFull


class DocumentList(BaseModel):
    success: bool
    documents: list[DocumentSummary]
    total: int
    limit: int
    offset: int


class DeleteResponse(BaseModel):
    success: bool
    deleted: str


class SearchRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    chatModelId: ChatModelId
    query: CleanStr = Field(min_length=1, max_length=2000)
    limit: int = Field(default=10, ge=1, le=100)


class FoundDocument(BaseModel):
    id: str
    title: str
    content: str = Field(description="the document's best-matching passage")
    relevance: float
    url: str | None = None


class SearchResponse(BaseModel):
    success: bool
    documents: list[FoundDocument]


class QueryOptions(BaseModel):
    model_config = ConfigDict(extra="ignore")

    maxTokens: int | None = Field(default=None, ge=1, le=4096)
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)


class QueryRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    chatModelId: ChatModelId
    query: CleanStr = Field(min_length=1, max_length=4000)
    options: QueryOptions = Field(default_factory=QueryOptions)


class Source(BaseModel):
    documentId: str
    title: str
    relevance: float


class QueryResponse(BaseModel):
    success: bool
    response: str
    sources: list[Source]


# --- helpers ----------------------------------------------------------------------------

def _summary(doc: Document) -> dict[str, Any]:
    return {
        "id": doc.id, "chatModelId": doc.assistant_id, "title": doc.title, "url": doc.url,
        "metadata": doc.meta or {}, "status": doc.status,
        "contentBytes": len(doc.content.encode("utf-8")),
        "createdAt": iso(doc.created_at), "updatedAt": iso(doc.updated_at),
    }


async def _full(session: AsyncSession, doc: Document) -> dict[str, Any]:
    chunks = await session.scalar(select(func.count()).select_from(Chunk)
                                  .where(Chunk.document_id == doc.id))
    return {**_summary(doc), "content": doc.content, "chunks": int(chunks or 0)}


async def _owned_document(session: AsyncSession, principal: Principal, doc_id: str) -> Document:
    """The document, if the caller's credential covers its assistant (403 otherwise)."""
    doc = await session.get(Document, doc_id)
    if doc is None:
        raise ApiError(404, "NOT_FOUND", "no document with this id")
    assistant_of(principal, doc.assistant_id)
    return doc


def _max_bytes(request: Request) -> int:
    return int(request.app.state.cfg.knowledge.max_document_bytes)


# --- documents -------------------------------------------------------------------------

IMPORT_INDEX_BUDGET_S = 20.0  # an import waits this long for its vectors; the rest follow


async def index_passages(request: Request, assistant_id: str) -> None:
    """Embed the passages just written, so a search right after finds them by meaning;
    a large import returns after the budget and the rest is embedded in the background."""
    semantic = request.app.state.semantic
    if semantic is None:
        return
    try:
        await semantic.indexer.index_chunks(assistant_id, budget_s=IMPORT_INDEX_BUDGET_S)
    except ProviderError as exc:  # stored already: found by words now, by meaning later
        log.warning("passage_embedding_deferred", error=str(exc))
    semantic.indexer.start_backfill()


@kb.post("/documents/import", response_model=ImportResponse)
async def import_documents(request: Request, principal: ImportCaller,
                           body: ImportRequest) -> dict[str, Any]:
    """Import up to 100 documents into an assistant's knowledge base, in one transaction."""
    require_credential(principal)
    assistant_id = await checked_assistant(request, principal, body.chatModelId)
    check_document_sizes([d.content for d in body.documents], _max_bytes(request))
    async with request.app.state.db.session() as s:
        docs = [await add_document(s, assistant_id, title=d.title, content=d.content,
                                   url=d.url, meta=d.metadata or {})
                for d in body.documents]
        await s.commit()
    await index_passages(request, assistant_id)
    return {"success": True, "imported": len(docs),
            "documents": [{"id": d.id, "title": d.title, "status": d.status} for d in docs]}


@kb.get("/documents", response_model=DocumentList)
async def list_documents(
    request: Request, principal: Caller,
    chatModelId: str | None = Query(default=None, min_length=1, max_length=64),
    limit: int = Query(default=20, ge=1, le=100),
    offset: int = Query(default=0, ge=0, le=1_000_000),
) -> dict[str, Any]:
    """An assistant's documents, oldest first (without their content)."""
    require_credential(principal)
    assistant_id = await checked_assistant(request, principal, chatModelId)
    where = Document.assistant_id == assistant_id
    async with request.app.state.db.session() as s:
        total = await s.scalar(select(func.count()).select_from(Document).where(where))
        docs = await s.scalars(select(Document).where(where)
                               .order_by(Document.created_at, Document.id)
                               .limit(limit).offset(offset))
        return {"success": True, "documents": [_summary(d) for d in docs],
                "total": int(total or 0), "limit": limit, "offset": offset}


@kb.get("/documents/{doc_id}", response_model=DocumentResponse)
async def get_document(request: Request, principal: Caller,
                       doc_id: DocId) -> dict[str, Any]:
    require_credential(principal)
    async with request.app.state.db.session() as s:
        doc = await _owned_document(s, principal, doc_id)
        return {"success": True, "document": await _full(s, doc)}


async def _update(request: Request, principal: Principal, doc_id: str,
                  changes: dict[str, Any]) -> dict[str, Any]:
    require_credential(principal)
    if changes.get("content") is not None:
        check_document_sizes([changes["content"]], _max_bytes(request))
    async with request.app.state.db.session() as s:
        doc = await _owned_document(s, principal, doc_id)
        for field, column in (("title", "title"), ("content", "content"), ("url", "url"),
                              ("metadata", "meta")):
            if field in changes:
                setattr(doc, column, changes[field] if field != "metadata"
                        else changes[field] or {})
        if "title" in changes or "content" in changes:
            await replace_chunks(s, doc)  # re-index: old words go, new words are found
        await s.commit()
        await index_passages(request, doc.assistant_id)
        return {"success": True, "document": await _full(s, doc)}


@kb.patch("/documents/{doc_id}", response_model=DocumentResponse)
async def patch_document(request: Request, principal: ImportCaller, body: DocumentUpdate,
                         doc_id: DocId) -> dict[str, Any]:
    """Change some of a document's title, content, url and metadata."""
    changes = body.model_dump(exclude_unset=True)
    for field in ("title", "content"):
        if field in changes and changes[field] is None:
            raise ApiError(400, "INVALID_REQUEST", f"{field}: cannot be null")
    return await _update(request, principal, doc_id, changes)


@kb.put("/documents/{doc_id}", response_model=DocumentResponse)
async def put_document(request: Request, principal: ImportCaller, body: DocumentIn,
                       doc_id: DocId) -> dict[str, Any]:
    """Replace a document (title and content required; url and metadata reset if absent)."""
    changes = {"title": body.title, "content": body.content, "url": body.url,
               "metadata": body.metadata}
    return await _update(request, principal, doc_id, changes)


@kb.delete("/documents/{doc_id}", response_model=DeleteResponse)
async def delete_document(request: Request, principal: ImportCaller,
                          doc_id: DocId) -> dict[str, Any]:
    require_credential(principal)
    async with request.app.state.db.session() as s:
        doc = await _owned_document(s, principal, doc_id)
        # Chunks first, explicitly: the SQLite FTS triggers see each deleted row.
        await s.execute(delete(Chunk).where(Chunk.document_id == doc.id))
        await s.delete(doc)
        await s.commit()
    if request.app.state.semantic is not None:  # its vectors leave this process's index now
        request.app.state.semantic.index.invalidate(doc.assistant_id)
    return {"success": True, "deleted": doc_id}


# --- search and query ------------------------------------------------------------------

@kb.post("/documents/search", response_model=SearchResponse)
async def search_documents(request: Request, principal: SearchCaller,
                           body: SearchRequest) -> dict[str, Any]:
    """Documents matching a query, best first: each with its best passage and relevance."""
    require_credential(principal)
    assistant_id = await checked_assistant(request, principal, body.chatModelId)
    async with request.app.state.db.session() as s:
        # Several passages may come from one document: ask for more, keep the best of each.
        hits = await hybrid_chunks(s, request.app.state.semantic, assistant_id, body.query,
                                   min(body.limit * 5, 250))
    # Hits come in the fused order (meaning plus exact words); each document's first hit
    # is its best. Re-sorting by ``relevance`` (the cosine alone) would let a note that
    # merely looks alike outrank the one holding the query's exact code.
    best: dict[str, Any] = {}
    for hit in hits:
        best.setdefault(hit.document_id, hit)
    ranked = list(best.values())[: body.limit]
    return {"success": True, "documents": [
        {"id": h.document_id, "title": h.title, "content": h.text,
         "relevance": h.relevance, "url": h.url} for h in ranked]}


@kb.post("/chat/query", response_model=QueryResponse)
async def query(request: Request, principal: QueryCaller,
                body: QueryRequest) -> dict[str, Any]:
    """An answer from the LLM, grounded in the assistant's documents, with its sources."""
    require_credential(principal)
    assistant_id = await checked_assistant(request, principal, body.chatModelId)
    state = request.app.state
    llm = state.cfg.llm
    assistant = await get_assistant(state.db, assistant_id)
    reply = Reply(state.runtime, ReplyRequest(
        assistant_id, system_prompt(llm.system_prompt, llm.assistant_name,
                                    assistant=assistant_source(assistant)),
        (), body.query, tools=list(assistant.tools or []) if assistant else [],
        max_tokens=body.options.maxTokens, temperature=body.options.temperature))
    async with contextlib.aclosing(reply.items()) as items:
        async for item in items:
            if isinstance(item, Failed):
                raise provider_failure("llm", item.error)
    sources = [{"documentId": s["document_id"], "title": s["title"],
                "relevance": s["relevance"]} for s in reply.sources]
    return {"success": True, "response": reply.text.strip(), "sources": sources}


router.include_router(kb)
router.include_router(assistants.router)

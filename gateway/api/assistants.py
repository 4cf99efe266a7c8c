"""Assistants (the seeds' chat models) and API keys, under ``/api/v1``.

Admin keys (not scoped to an assistant) create, list and delete assistants and manage
keys. A key scoped to an assistant may read and update that assistant only (not its
rate-limit tier: that would let a key raise its own limits). An assistant's knowledge
base is its documents (``/api/v1/documents``); some may be given at creation.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query, Request
from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator
from sqlalchemy import delete, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from gateway.access.auth import Principal
from gateway.cluster.events import ASSISTANT_DELETED, KEY_REVOKED
from gateway.config import Config
from gateway.pipeline import turn_taking
from gateway.pipeline.tools import validate_declarations
from gateway.providers import registry
from gateway.store.assistants import DEFAULT_ASSISTANT, invalidate_assistant
from gateway.store.documents import add_document
from gateway.store.models import ApiKey, Assistant, Chunk, Document, new_id

from .deps import assistant_of
from .envelope import EnvelopeRoute
from .errors import ERROR_RESPONSES, ApiError
from .v1base import (
    MAX_BATCH,
    Caller,
    CleanStr,
    DocumentIn,
    JsonList,
    JsonObject,
    check_document_sizes,
    iso,
    require_admin,
    require_credential,
)

router = APIRouter(prefix="/api/v1", route_class=EnvelopeRoute,
                   responses={**ERROR_RESPONSES, 409: ERROR_RESPONSES[400] | {
                       "description": "CONFLICT"}})
DEFAULTS = Config()  # turn_taking is checked against the built-in defaults' ranges
Tier = Literal["free", "basic", "pro", "enterprise"]
ASSISTANT_ID = r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$"
AssistantPath = Annotated[CleanStr, Path(min_length=1, max_length=64)]
KeyIdPath = Annotated[CleanStr, Path(min_length=1, max_length=32)]
# Columns that may not be null; a PATCH that sends null for one of them is refused.
_NOT_NULL = ("name", "description", "system_prompt", "template_variables", "language",
             "allow_anonymous", "tier", "tools", "turn_taking")


class AssistantFields(BaseModel):
    """The settable fields of an assistant (all optional: PATCH changes only those given)."""

    model_config = ConfigDict(extra="ignore")

    name: CleanStr | None = Field(default=None, min_length=1, max_length=200)
    description: CleanStr | None = Field(default=None, max_length=2000)
    system_prompt: CleanStr | None = Field(
        default=None, max_length=16000,
        description="may use {assistant_name} and the template variables")
    template_name: CleanStr | None = Field(default=None, max_length=100)
    template_variables: JsonObject | None = None
    llm_provider: CleanStr | None = Field(
        default=None, max_length=50,
        description="first in this assistant's LLM chain: "
        + " | ".join(registry.names("llm")) + " (none: the configured chain)")
    llm_model: CleanStr | None = Field(
        default=None, max_length=100,
        description="the model of an `openai` LLM (the others run one model; none: the "
        "configured model)")
    stt_provider: CleanStr | None = Field(
        default=None, max_length=50,
        description="first in this assistant's STT chain: "
        + " | ".join(registry.names("stt")) + " (none: the configured chain)")
    stt_model: CleanStr | None = Field(
        default=None, max_length=100,
        description="whisper: " + " | ".join(registry.WHISPER_MODELS) + "; openai: e.g. "
        "gpt-4o-mini-transcribe (none: the configured model)")
    tts_provider: CleanStr | None = Field(
        default=None, max_length=50,
        description="first in this assistant's TTS chain: "
        + " | ".join(registry.names("tts")) + " (none: the configured chain)")
    voice: CleanStr | None = Field(default=None, max_length=100)
    language: CleanStr | None = Field(default=None, min_length=1, max_length=20)
    allow_anonymous: bool | None = None
    tier: Tier | None = None
    tools: JsonList | None = Field(default=None, max_length=64)
    turn_taking: JsonObject | None = Field(
        default=None,
        description="interruptions: {mode: words|speech, backchannels: [...], min_words, "
        "partial_min_ms, min_confidence, short_min_confidence, check_interval_ms, "
        "continuation_ms, on_overlap, "
        "resume_ms}; end_of_turn: "
        "{detector: smart_turn|silence, pause_ms, recheck_ms, max_wait_ms, threshold}; "
        "missing keys: the config's")

    @field_validator("turn_taking")
    @classmethod
    def _turn_taking(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        if value is not None:
            turn_taking.resolve(value, DEFAULTS)  # checked now, not in a call
        return value

    @field_validator("llm_provider", "stt_provider", "tts_provider")
    @classmethod
    def _known_provider(cls, value: str | None, info: ValidationInfo) -> str | None:
        # A name the gateway cannot load would only show up as a silent fallback later.
        stage = (info.field_name or "").partition("_")[0]
        if value is not None and value not in registry.names(stage):
            raise ValueError(f"unknown {stage} provider; one of "
                             f"{', '.join(registry.names(stage))}")
        return value


    @field_validator("stt_model")
    @classmethod
    def _known_whisper_model(cls, value: str | None, info: ValidationInfo) -> str | None:
        if (value is not None and info.data.get("stt_provider") == "whisper"
                and value not in registry.WHISPER_MODELS):
            raise ValueError("unknown whisper model; one of "
                             f"{', '.join(registry.WHISPER_MODELS)}")
        return value


class AssistantCreate(AssistantFields):
    id: str | None = Field(default=None, pattern=ASSISTANT_ID,
                           description="generated (asst_...) when absent")
    documents: list[DocumentIn] | None = Field(
        default=None, max_length=MAX_BATCH, description="initial knowledge base")


class KnowledgeBase(BaseModel):
    documents: int


class AssistantOut(BaseModel):
    id: str
    name: str
    description: str
    system_prompt: str
    template_name: str | None
    template_variables: dict[str, Any]
    llm_provider: str | None
    llm_model: str | None
    stt_provider: str | None
    stt_model: str | None
    tts_provider: str | None
    voice: str | None
    language: str
    allow_anonymous: bool
    tier: str
    tools: list[Any]
    turn_taking: dict[str, Any]
    knowledge_base: KnowledgeBase
    created_at: str | None
    updated_at: str | None


class AssistantResponse(BaseModel):
    success: bool
    assistant: AssistantOut


class AssistantList(BaseModel):
    success: bool
    assistants: list[AssistantOut]
    total: int
    limit: int
    offset: int


class Deleted(BaseModel):
    success: bool
    deleted: str


class KeyCreate(BaseModel):
    model_config = ConfigDict(extra="ignore")

    name: CleanStr = Field(default="api key", min_length=1, max_length=200)
    assistant_id: CleanStr | None = Field(default=None, min_length=1, max_length=64,
                                     description="absent: an admin key (every assistant)")
    tier: Tier | None = Field(default=None, description="absent: enterprise")


class KeyOut(BaseModel):
    key_id: str
    name: str
    assistant_id: str | None
    tier: str | None
    created_at: str | None
    revoked_at: str | None
    revoked: bool


class KeyCreated(KeyOut):
    success: bool
    key: str = Field(description="the secret: shown this once, never again")


class KeyList(BaseModel):
    success: bool
    keys: list[KeyOut]
    total: int
    limit: int
    offset: int


class Revoked(BaseModel):
    success: bool
    revoked: str


# --- helpers ----------------------------------------------------------------------------

_COLUMNS = tuple(AssistantFields.model_fields)


def _out(a: Assistant, documents: int) -> dict[str, Any]:
    out = {c: getattr(a, c) for c in _COLUMNS}
    out.update(id=a.id, template_variables=a.template_variables or {}, tools=a.tools or [],
               turn_taking=a.turn_taking or {},
               knowledge_base={"documents": documents},
               created_at=iso(a.created_at), updated_at=iso(a.updated_at))
    return out


async def _doc_counts(s: AsyncSession, ids: list[str]) -> dict[str, int]:
    rows = await s.execute(select(Document.assistant_id, func.count())
                           .where(Document.assistant_id.in_(ids))
                           .group_by(Document.assistant_id))
    return {aid: int(n) for aid, n in rows}


async def _visible(s: AsyncSession, principal: Principal, assistant_id: str) -> Assistant:
    """The assistant, if the credential covers it (403) and it exists (404)."""
    require_credential(principal)
    assistant_of(principal, assistant_id)
    assistant = await s.get(Assistant, assistant_id)
    if assistant is None:
        raise ApiError(404, "INVALID_MODEL_ID", "unknown chat model id")
    return assistant


def _key_out(k: ApiKey) -> dict[str, Any]:
    return {"key_id": k.key_id, "name": k.name, "assistant_id": k.assistant_id,
            "tier": k.tier, "created_at": iso(k.created_at), "revoked_at": iso(k.revoked_at),
            "revoked": k.revoked_at is not None}


def _null_check(changes: dict[str, Any]) -> None:
    for field in _NOT_NULL:
        if field in changes and changes[field] is None:
            raise ApiError(400, "INVALID_REQUEST", f"{field}: cannot be null")


def _tools_check(request: Request, changes: dict[str, Any]) -> None:
    """Function tool declarations are checked when written, not at the first call."""
    if changes.get("tools"):
        problems = validate_declarations(changes["tools"], request.app.state.cfg)
        if problems:
            raise ApiError(400, "INVALID_REQUEST", "; ".join(problems[:5]))


PROVIDER_FIELDS = {"stt_provider", "stt_model", "llm_provider", "llm_model", "tts_provider"}


def _prepare_providers(request: Request, assistant_id: str, fields: dict[str, Any]) -> None:
    # Its own provider or model loads now, in the background, not in its first turn.
    if PROVIDER_FIELDS & {k for k, v in fields.items() if v is not None}:
        request.app.state.runtime.prepare(assistant_id)


# --- assistants -------------------------------------------------------------------------

@router.post("/assistants", response_model=AssistantResponse, status_code=201,
             tags=["assistants"])
async def create_assistant(request: Request, principal: Caller,
                           body: AssistantCreate) -> dict[str, Any]:
    """Create an assistant (admin key), optionally with its first documents."""
    require_admin(principal)
    fields = body.model_dump(exclude_unset=True, exclude={"id", "documents"})
    _null_check(fields)
    _tools_check(request, fields)
    assistant_id = body.id or new_id("asst")
    docs = body.documents or []
    check_document_sizes([d.content for d in docs],
                         int(request.app.state.cfg.knowledge.max_document_bytes))
    fields.setdefault("name", assistant_id)
    async with request.app.state.db.session() as s:
        if await s.get(Assistant, assistant_id) is not None:
            raise ApiError(409, "CONFLICT", "an assistant with this id exists")
        assistant = Assistant(id=assistant_id, **fields)
        s.add(assistant)
        try:
            await s.flush()
            for d in docs:
                await add_document(s, assistant_id, title=d.title, content=d.content,
                                   url=d.url, meta=d.metadata or {})
            await s.commit()
            invalidate_assistant()
        except IntegrityError:  # created concurrently by another request
            await s.rollback()
            raise ApiError(409, "CONFLICT",
                           "an assistant with this id exists") from None
        await s.refresh(assistant)
    _prepare_providers(request, assistant_id, fields)
    return {"success": True, "assistant": _out(assistant, len(docs))}


@router.get("/assistants", response_model=AssistantList, tags=["assistants"])
async def list_assistants(
    request: Request, principal: Caller,
    limit: int = Query(default=20, ge=1, le=100),
    offset: int = Query(default=0, ge=0, le=1_000_000),
) -> dict[str, Any]:
    """Every assistant (admin key), or only the credential's own assistant."""
    require_credential(principal)
    query = select(Assistant)
    if principal.assistant_scope is not None:
        query = query.where(Assistant.id == principal.assistant_scope)
    async with request.app.state.db.session() as s:
        total = await s.scalar(select(func.count()).select_from(query.subquery()))
        rows = list(await s.scalars(query.order_by(Assistant.created_at, Assistant.id)
                                    .limit(limit).offset(offset)))
        counts = await _doc_counts(s, [a.id for a in rows])
    return {"success": True, "assistants": [_out(a, counts.get(a.id, 0)) for a in rows],
            "total": int(total or 0), "limit": limit, "offset": offset}


@router.get("/assistants/{assistant_id}", response_model=AssistantResponse,
            tags=["assistants"])
async def get_assistant_route(request: Request, principal: Caller,
                              assistant_id: AssistantPath) -> dict[str, Any]:
    async with request.app.state.db.session() as s:
        assistant = await _visible(s, principal, assistant_id)
        counts = await _doc_counts(s, [assistant_id])
    return {"success": True, "assistant": _out(assistant, counts.get(assistant_id, 0))}


@router.patch("/assistants/{assistant_id}", response_model=AssistantResponse,
              tags=["assistants"])
async def update_assistant(request: Request, principal: Caller, body: AssistantFields,
                           assistant_id: AssistantPath) -> dict[str, Any]:
    """Change some fields; a scoped key may not change its assistant's tier."""
    changes = body.model_dump(exclude_unset=True)
    _null_check(changes)
    _tools_check(request, changes)
    if "tier" in changes and not principal.is_admin:
        raise ApiError(403, "FORBIDDEN", "only an admin key may change the tier")
    async with request.app.state.db.session() as s:
        assistant = await _visible(s, principal, assistant_id)
        for field, value in changes.items():
            setattr(assistant, field, value)
        await s.commit()
        invalidate_assistant()
        await s.refresh(assistant)
        counts = await _doc_counts(s, [assistant_id])
    _prepare_providers(request, assistant_id, changes)
    return {"success": True, "assistant": _out(assistant, counts.get(assistant_id, 0))}


@router.delete("/assistants/{assistant_id}", response_model=Deleted, tags=["assistants"])
async def delete_assistant(request: Request, principal: Caller,
                           assistant_id: AssistantPath) -> dict[str, Any]:
    """Delete an assistant with its documents and keys (admin key; not the default one)."""
    require_admin(principal)
    if assistant_id == DEFAULT_ASSISTANT:
        raise ApiError(400, "INVALID_REQUEST", "the default assistant cannot be deleted")
    async with request.app.state.db.session() as s:
        await _visible(s, principal, assistant_id)
        # Explicit, not only ON DELETE CASCADE: the SQLite FTS triggers see each chunk go.
        await s.execute(delete(Chunk).where(Chunk.assistant_id == assistant_id))
        await s.execute(delete(Document).where(Document.assistant_id == assistant_id))
        await s.execute(delete(ApiKey).where(ApiKey.assistant_id == assistant_id))
        await s.execute(delete(Assistant).where(Assistant.id == assistant_id))
        await s.commit()
        invalidate_assistant()
    # Its live sessions end too, on whichever node holds them.
    await request.app.state.cluster.publish(ASSISTANT_DELETED, assistant_id)
    return {"success": True, "deleted": assistant_id}


# --- API keys ---------------------------------------------------------------------------

@router.post("/keys", response_model=KeyCreated, status_code=201, tags=["keys"])
async def create_key(request: Request, principal: Caller, body: KeyCreate) -> dict[str, Any]:
    """A new API key (admin key). The secret is in this response only; it is stored hashed."""
    require_admin(principal)
    state = request.app.state
    if body.assistant_id is not None:
        async with state.db.session() as s:
            await _visible(s, principal, body.assistant_id)
    record, secret = await state.keys.create(body.name, assistant_id=body.assistant_id,
                                             tier=body.tier)
    return {"success": True, "key": secret, **_key_out(record)}


@router.get("/keys", response_model=KeyList, tags=["keys"])
async def list_keys(
    request: Request, principal: Caller,
    limit: int = Query(default=50, ge=1, le=200),
    offset: int = Query(default=0, ge=0, le=1_000_000),
) -> dict[str, Any]:
    """Every key, revoked ones too, without secrets (admin key)."""
    require_admin(principal)
    async with request.app.state.db.session() as s:
        total = await s.scalar(select(func.count()).select_from(ApiKey))
        rows = await s.scalars(select(ApiKey).order_by(ApiKey.created_at, ApiKey.key_id)
                               .limit(limit).offset(offset))
        keys = [_key_out(k) for k in rows]
    return {"success": True, "keys": keys, "total": int(total or 0), "limit": limit,
            "offset": offset}


@router.delete("/keys/{key_id}", response_model=Revoked, tags=["keys"])
async def revoke_key(request: Request, principal: Caller,
                     key_id: KeyIdPath) -> dict[str, Any]:
    """Revoke a key: it stops working at once, on every gateway sharing the database."""
    require_admin(principal)
    if not await request.app.state.keys.revoke(key_id):
        raise ApiError(404, "NOT_FOUND", "no active key with this id")
    # Sessions opened with it (or with tokens it minted) end on every node.
    await request.app.state.cluster.publish(KEY_REVOKED, key_id)
    return {"success": True, "revoked": key_id}

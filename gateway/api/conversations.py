"""Conversations over HTTP: list, read, delete, search, prompt template, feedback, and
SmarterAvatar's conversation log.

Every conversation belongs to an assistant and, where there is one, a user; a caller
sees only its own (``gateway.store.conversations.Owner``, built by ``Principal.owner``):
another assistant's or user's conversation is a 404, as if it did not exist. An API key
sees its assistant's conversations, or those of the ``user_id`` it names; a signed-in
user (OAuth, legacy JWT) only theirs; an anonymous caller none.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Request
from pydantic import BaseModel, Field, field_validator

from gateway.access.auth import Principal
from gateway.pipeline.prompt import TEMPLATE_BY_NAME
from gateway.store import conversations as store
from gateway.store.models import Conversation, new_id

from .chat_engine import MAX_CONTENT_CHARS, caller_owner
from .deps import authed
from .errors import ERROR_RESPONSES, ApiError
from .v1base import CleanStr, JsonObject

router = APIRouter(tags=["conversations"])
Caller = Annotated[Principal, Depends(authed())]
SearchCaller = Annotated[Principal, Depends(authed("search"))]

Limit = Annotated[int, Query(ge=1, le=100, description="page size")]
Offset = Annotated[int, Query(ge=0, le=1_000_000)]
UserId = Annotated[CleanStr | None, Query(
    max_length=200, description="the end user an API key acts for: only that user's "
    "conversations are found (a signed-in user is held to their own whatever this says)")]
ConvId = Annotated[CleanStr, Path(max_length=64)]
SNIPPET_CHARS = 200


async def owned(request: Request, principal: Principal, conversation_id: str, s: Any,
                user_id: str | None = None) -> Conversation:
    """The caller's conversation; a 404 for another's or an unknown one alike."""
    owner = await caller_owner(request, principal, user_id=user_id)
    conv = await store.owned(s, owner, conversation_id)
    if conv is None:
        raise ApiError(404, "NOT_FOUND", "conversation not found")
    return conv


# --- list, read, delete --------------------------------------------------------------


class ConversationSummary(BaseModel):
    id: str
    title: str
    created_at: str
    updated_at: str
    message_count: int
    user_id: str | None = None
    source: str
    transport: str | None = None  # ws (v1), twilio, realtime, webrtc, http


class ConversationList(BaseModel):
    conversations: list[ConversationSummary]
    total: int
    limit: int
    offset: int


@router.get("/api/conversations", response_model=ConversationList, responses=ERROR_RESPONSES,
            description="The caller's conversations, most recently active first: an API "
            "key's assistant's (`user_id` narrows them to one user's), a signed-in user's "
            "own; none for anonymous callers.")
async def list_conversations(
    request: Request, principal: Caller, user_id: UserId = None, limit: Limit = 10,
    offset: Offset = 0,
) -> dict[str, Any]:
    owner = await caller_owner(request, principal, user_id=user_id)
    async with request.app.state.db.session() as s:
        rows, total = await store.list_conversations(s, owner, limit, offset)
    return {"conversations": [summary(r.conversation, r.message_count) for r in rows],
            "total": total, "limit": limit, "offset": offset}


def summary(c: Conversation, count: int) -> dict[str, Any]:
    return {"id": c.id, "title": c.title, "created_at": store.iso(c.created_at),
            "updated_at": store.iso(c.updated_at), "message_count": count,
            "user_id": c.user_id, "source": c.source, "transport": c.transport}


class MessageOut(BaseModel):
    id: str
    role: str
    content: str
    created_at: str
    metadata: dict[str, Any]


class MessagePage(BaseModel):
    conversation_id: str
    title: str
    messages: list[MessageOut]
    total: int
    limit: int
    offset: int


@router.get("/api/conversation/{conversation_id}/messages", response_model=MessagePage,
            responses=ERROR_RESPONSES, description="Messages in the order they were said.")
async def conversation_messages(
    request: Request, conversation_id: ConvId, principal: Caller,
    limit: Annotated[int, Query(ge=1, le=200)] = 50, offset: Offset = 0, user_id: UserId = None,
) -> dict[str, Any]:
    async with request.app.state.db.session() as s:
        conv = await owned(request, principal, conversation_id, s, user_id)
        msgs, total = await store.list_messages(s, conv.id, limit, offset)
    return {"conversation_id": conv.id, "title": conv.title, "total": total, "limit": limit,
            "offset": offset,
            "messages": [{"id": m.id, "role": m.role, "content": m.content,
                          "created_at": store.iso(m.created_at), "metadata": m.meta or {}}
                         for m in msgs]}


class StatusMessage(BaseModel):
    status: str
    message: str


@router.delete("/api/conversation/{conversation_id}", response_model=StatusMessage,
               responses=ERROR_RESPONSES,
               description="Deletes the conversation, its messages and their feedback.")
async def delete_conversation(request: Request, conversation_id: ConvId,
                              principal: Caller, user_id: UserId = None) -> dict[str, Any]:
    async with request.app.state.db.session() as s:
        conv = await owned(request, principal, conversation_id, s, user_id)
        await store.delete_conversation(s, conv)
        await s.commit()
    return {"status": "success", "message": "Conversation deleted successfully"}


# --- prompt template -----------------------------------------------------------------


class TemplateChoice(BaseModel):
    template_name: str = Field(max_length=100)
    variables: dict[str, CleanStr] = Field(default_factory=dict, max_length=20)

    @field_validator("variables")
    @classmethod
    def _bounded(cls, value: dict[str, str]) -> dict[str, str]:
        if any(len(k) > 64 or "\x00" in k or len(v) > 2000 for k, v in value.items()):
            raise ValueError("variable names ≤ 64 and values ≤ 2000 characters")
        return value


class TemplateSet(BaseModel):
    status: str
    conversation_id: str
    template: str


@router.post("/api/conversation/{conversation_id}/template", response_model=TemplateSet,
             responses=ERROR_RESPONSES,
             description="The system prompt of the conversation's next turns comes from "
             "this template (see GET /api/template/{name}) with these variables.")
async def set_template(request: Request, conversation_id: ConvId, body: TemplateChoice,
                       principal: Caller, user_id: UserId = None) -> dict[str, Any]:
    if body.template_name not in TEMPLATE_BY_NAME:
        raise ApiError(400, "INVALID_REQUEST", "unknown template name")
    async with request.app.state.db.session() as s:
        conv = await owned(request, principal, conversation_id, s, user_id)
        conv.template_name = body.template_name
        conv.template_variables = dict(body.variables)
        await s.commit()
    return {"status": "success", "conversation_id": conversation_id,
            "template": body.template_name}


# --- feedback ------------------------------------------------------------------------


class FeedbackIn(BaseModel):
    conversation_id: CleanStr = Field(max_length=64)
    message_id: CleanStr | None = Field(default=None, max_length=64)
    feedback_type: CleanStr = Field(min_length=1, max_length=50)
    feedback_value: float | None = Field(default=None, ge=-1000, le=1000,
                                         allow_inf_nan=False)
    comment: CleanStr | None = Field(default=None, max_length=4000)
    user_id: CleanStr | None = Field(default=None, max_length=200)


class FeedbackAck(BaseModel):
    status: str
    feedback_id: str


@router.post("/api/feedback", response_model=FeedbackAck, responses=ERROR_RESPONSES,
             description="`thumbs_up` / `thumbs_down`, or `rating` with a 1..5 value.")
async def feedback(request: Request, body: FeedbackIn,
                   principal: Caller) -> dict[str, Any]:
    async with request.app.state.db.session() as s:
        conv = await owned(request, principal, body.conversation_id, s, body.user_id)
        if body.message_id and not await store.message_in(s, conv.id, body.message_id):
            raise ApiError(404, "NOT_FOUND", "message not found in this conversation")
        fb = await store.add_feedback(
            s, conversation_id=conv.id, message_id=body.message_id,
            feedback_type=body.feedback_type, feedback_value=body.feedback_value,
            comment=body.comment, user_id=conv.user_id)
        await s.commit()
    return {"status": "success", "feedback_id": fb.id}


class FeedbackDetail(BaseModel):
    feedback_id: str
    message_id: str | None
    feedback_type: str
    feedback_value: float | None
    comment: str | None
    timestamp: str


class FeedbackAnalysis(BaseModel):
    conversation_id: str
    total_messages: int
    messages_with_feedback: int
    total_feedback: int
    positive_feedback: int
    negative_feedback: int
    average_rating: float | None = Field(description="1..5; null without feedback")
    feedback_details: list[FeedbackDetail]


@router.get("/api/feedback/analyze/{conversation_id}", response_model=FeedbackAnalysis,
            responses=ERROR_RESPONSES)
async def analyze_feedback(request: Request, conversation_id: ConvId,
                           principal: Caller, user_id: UserId = None) -> dict[str, Any]:
    async with request.app.state.db.session() as s:
        conv = await owned(request, principal, conversation_id, s, user_id)
        return await store.feedback_analysis(s, conv.id)


# --- search --------------------------------------------------------------------------


class SearchIn(BaseModel):
    query: CleanStr = Field(min_length=1, max_length=500)
    user_id: CleanStr | None = Field(default=None, max_length=200)
    limit: int = Field(default=10, ge=1, le=50)


class MessageSearchIn(SearchIn):
    conversation_id: CleanStr | None = Field(default=None, max_length=64)


class ConversationHit(BaseModel):
    conversation_id: str
    title: str
    created_at: str
    updated_at: str
    similarity_score: float
    snippet: str


class MessageHitOut(BaseModel):
    message_id: str
    conversation_id: str
    role: str
    content: str
    created_at: str
    similarity_score: float


class ConversationResults(BaseModel):
    results: list[ConversationHit]


class MessageResults(BaseModel):
    results: list[MessageHitOut]


def snippet(text: str) -> str:
    line = " ".join(text.split())
    return line if len(line) <= SNIPPET_CHARS else line[: SNIPPET_CHARS - 1] + "…"


@router.post("/api/search/messages", response_model=MessageResults, responses=ERROR_RESPONSES,
             description="Messages ranked by meaning (sentence embeddings) and by the "
             "database's full-text engine (exact words), fused; `similarity_score` is the "
             "query's cosine similarity to the message, 0..1.")
async def search_message(request: Request, body: MessageSearchIn,
                         principal: SearchCaller) -> dict[str, Any]:
    owner = await caller_owner(request, principal, user_id=body.user_id)
    async with request.app.state.db.session() as s:
        hits = await store.search_owned(s, owner, body.query,
                                        conversation_id=body.conversation_id, limit=body.limit,
                                        semantic=request.app.state.semantic)
    return {"results": [
        {"message_id": h.message_id, "conversation_id": h.conversation_id, "role": h.role,
         "content": h.content[:MAX_CONTENT_CHARS], "created_at": store.iso(h.created_at),
         "similarity_score": h.relevance} for h in hits]}


@router.post("/api/search/conversations", response_model=ConversationResults,
             responses=ERROR_RESPONSES,
             description="Conversations ranked by their best-matching message (by meaning "
             "and exact words); `snippet` is that message, `similarity_score` its cosine "
             "similarity to the query, 0..1.")
async def search_conversation(
    request: Request, body: SearchIn, principal: SearchCaller
) -> dict[str, Any]:
    owner = await caller_owner(request, principal, user_id=body.user_id)
    async with request.app.state.db.session() as s:
        # Several messages may hit in one conversation: over-fetch, keep each one's best.
        hits = await store.search_owned(s, owner, body.query, conversation_id=None,
                                        limit=body.limit * 5,
                                        semantic=request.app.state.semantic)
        # Hits come best first in the fused order: each conversation's first hit ranks it.
        best: dict[str, Any] = {}
        for h in hits:
            best.setdefault(h.conversation_id, h)
        ranked = list(best.values())[: body.limit]
        convs = await store.conversations_by_id(s, owner, [h.conversation_id for h in ranked])
    return {"results": [
        {"conversation_id": h.conversation_id, "title": convs[h.conversation_id].title,
         "created_at": store.iso(convs[h.conversation_id].created_at),
         "updated_at": store.iso(convs[h.conversation_id].updated_at),
         "similarity_score": h.relevance, "snippet": snippet(h.content)}
        for h in ranked if h.conversation_id in convs]}


# --- SmarterAvatar's conversation log ------------------------------------------------

LOG_ROLES = ("user", "assistant", "system", "tool")


class LoggedMessage(BaseModel):
    role: str = Field(max_length=20)
    content: CleanStr = Field(max_length=MAX_CONTENT_CHARS)

    @field_validator("role")
    @classmethod
    def _known_role(cls, value: str) -> str:
        if value not in LOG_ROLES:
            raise ValueError(f"role must be one of {', '.join(LOG_ROLES)}")
        return value


class ConversationLog(BaseModel):
    sessionId: CleanStr | None = Field(default=None, max_length=200)
    messages: list[LoggedMessage] = Field(default_factory=list, max_length=500)
    metadata: JsonObject = Field(default_factory=dict)
    user_id: CleanStr | None = Field(default=None, max_length=200)


class LogAck(BaseModel):
    success: bool
    conversationId: str


@router.post("/api/conversations/log", response_model=LogAck, responses=ERROR_RESPONSES,
             description="Store a conversation that happened elsewhere (e.g. in the "
             "avatar front end). Logs with the same `sessionId` go to one conversation.")
async def log_conversation(request: Request, body: ConversationLog,
                           principal: Caller) -> dict[str, Any]:
    owner = await caller_owner(request, principal, user_id=body.user_id)
    async with request.app.state.db.session() as s:
        conv, session_id = None, body.sessionId
        if body.sessionId:  # the caller's own log of that session only
            conv, session_id = await store.by_client_session(s, owner, body.sessionId, "log")
        if conv is None:
            first = next((m.content for m in body.messages if m.role == "user"), "")
            conv = await store.create_or_continue(
                s, owner, new_id("conv"), session_id=session_id, title=first,
                source="log")
        conv.meta = {**(conv.meta or {}), **body.metadata}
        await store.add_messages(s, conv, [(m.role, m.content, {}) for m in body.messages])
        await s.commit()
    return {"success": True, "conversationId": conv.id}

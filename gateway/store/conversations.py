"""Conversations, their messages and feedback: the persistence helpers of the chat API.

Ownership, the one rule every path uses (``Owner``): a conversation belongs to an
assistant and, where there is one, a user. A lookup through an ``Owner`` simply does not
find a conversation of another assistant or another user, so callers answer as if it did
not exist (a new conversation on voice and chat, 404 over HTTP). The callers commit (an
acknowledged message is a committed one).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, cast

from sqlalchemy import ColumnElement, delete, false, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from gateway.providers.base import Message, Role

from .models import ChatMessage, Conversation, Feedback, new_id, now
from .search import MessageHit
from .semantic import SemanticSearch, hybrid_messages

TITLE_CHARS = 80


def iso(ts: float) -> str:
    """ISO-8601 UTC with a ``Z``, to the second (as the seed documents show)."""
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def title_of(text: str) -> str:
    line = " ".join(text.split())
    return line if len(line) <= TITLE_CHARS else line[: TITLE_CHARS - 1].rstrip() + "…"


@dataclass(frozen=True, slots=True)
class Owner:
    """Whose conversations a caller may resume, append to, read, search and delete.

    ``user_id`` set: that user's conversations of the assistant (and new ones are stored
    as theirs). ``user_id`` None: every conversation of the assistant when ``tenant`` (the
    assistant's own API key, which names no user), otherwise none at all (anonymous
    callers, tokens minted for no user: they only ever start new conversations).
    Built from the caller by ``gateway.access.auth.Principal.owner``.
    """

    assistant_id: str
    user_id: str | None = None
    tenant: bool = False

    @property
    def sees_any(self) -> bool:
        return self.tenant or self.user_id is not None

    def may_use(self, conv: Conversation) -> bool:
        if conv.assistant_id != self.assistant_id:
            return False
        return conv.user_id == self.user_id if self.user_id is not None else self.tenant

    def where(self) -> list[ColumnElement[bool]]:
        """The conversations this owner may use, as WHERE clauses on ``Conversation``."""
        clauses = [Conversation.assistant_id == self.assistant_id]
        if self.user_id is not None:
            clauses.append(Conversation.user_id == self.user_id)
        elif not self.tenant:
            clauses.append(false())
        return clauses

async def owned(s: AsyncSession, owner: Owner, conversation_id: str) -> Conversation | None:
    """The conversation if ``owner`` may use it; None if foreign or unknown (alike)."""
    if not owner.sees_any:
        return None
    q = select(Conversation).where(Conversation.id == conversation_id, *owner.where())
    return (await s.scalars(q)).first()


async def by_session(
    s: AsyncSession, owner: Owner, session_id: str, source: str | None = None
) -> Conversation | None:
    """The newest conversation of a client session id (the seeds' ``sessionId``) that
    ``owner`` may use: another caller's session id finds nothing."""
    if not owner.sees_any:
        return None
    q = select(Conversation).where(Conversation.session_id == session_id, *owner.where())
    if source is not None:
        q = q.where(Conversation.source == source)
    q = q.order_by(Conversation.created_at.desc()).limit(1)
    return (await s.scalars(q)).first()


async def by_client_session(
    s: AsyncSession, owner: Owner, session_id: str, source: str | None = None
) -> tuple[Conversation | None, str | None]:
    """``by_session``, and the session id a new conversation may take: the client's, unless
    a conversation of another caller already has it (then None: the new one gets another,
    so that caller's later lookups by that id, or a backend that keys its memory on it,
    never meet this one)."""
    conv = await by_session(s, owner, session_id, source)
    if conv is not None:
        return conv, session_id
    q = select(Conversation.id).where(Conversation.assistant_id == owner.assistant_id,
                                      Conversation.session_id == session_id).limit(1)
    if source is not None:
        q = q.where(Conversation.source == source)
    taken = (await s.scalars(q)).first() is not None
    return None, None if taken else session_id


async def recent_messages(s: AsyncSession, conversation_id: str, limit: int) -> list[Message]:
    """The last ``limit`` user/assistant messages, oldest first (the LLM's history)."""
    q = (select(ChatMessage.role, ChatMessage.content)
         .where(ChatMessage.conversation_id == conversation_id,
                ChatMessage.role.in_(("user", "assistant")))
         .order_by(ChatMessage.seq.desc(), ChatMessage.created_at.desc()).limit(limit))
    rows = list(await s.execute(q))
    return [Message(cast(Role, role), content) for role, content in reversed(rows)]


async def ensure_conversation(
    s: AsyncSession, conversation_id: str, assistant_id: str, *, user_id: str | None,
    session_id: str | None, title: str, source: str,
) -> Conversation:
    """The conversation with this id, created if missing (it may be brand new). Callers
    pass an id they made or one ``owned`` returned (see ``create_or_continue``). These are
    the HTTP API's (``transport`` ``http``); voice turns go through ``voice_log``."""
    conv = await s.get(Conversation, conversation_id)
    if conv is None:
        conv = Conversation(id=conversation_id, assistant_id=assistant_id, user_id=user_id,
                            session_id=session_id, title=title_of(title), source=source,
                            transport="http", template_variables={}, meta={})
        s.add(conv)
        await s.flush()
    return conv


async def create_or_continue(
    s: AsyncSession, owner: Owner, conversation_id: str, *, session_id: str | None,
    title: str, source: str,
) -> Conversation:
    """``ensure_conversation`` for ``owner``: a new conversation is stored as theirs; an
    existing one must be theirs (LookupError otherwise: never written to)."""
    conv = await s.get(Conversation, conversation_id)
    if conv is not None:
        if not owner.may_use(conv):
            raise LookupError("conversation belongs to another owner")
        return conv
    return await ensure_conversation(s, conversation_id, owner.assistant_id,
                                     user_id=owner.user_id, session_id=session_id,
                                     title=title, source=source)


async def add_messages(
    s: AsyncSession, conv: Conversation, items: Sequence[tuple[str, str, dict[str, Any]]],
    ids: Sequence[str] | None = None,
) -> list[ChatMessage]:
    """Append (role, content, meta) messages in order; ``ids`` pre-assigns their ids."""
    top = await s.scalar(select(func.max(ChatMessage.seq))
                         .where(ChatMessage.conversation_id == conv.id))
    seq = (top or 0) + 1
    stamp = now()
    out: list[ChatMessage] = []
    for i, (role, content, meta) in enumerate(items):
        msg = ChatMessage(id=ids[i] if ids else new_id("msg"), conversation_id=conv.id,
                          seq=seq + i, role=role, content=content, meta=meta,
                          created_at=stamp)
        s.add(msg)
        out.append(msg)
    if not conv.title:
        first_user = next((c for r, c, _ in items if r == "user" and c.strip()), "")
        conv.title = title_of(first_user)
    conv.updated_at = stamp
    await s.flush()
    return out


@dataclass(frozen=True, slots=True)
class ConversationRow:
    conversation: Conversation
    message_count: int


async def list_conversations(
    s: AsyncSession, owner: Owner, limit: int, offset: int
) -> tuple[list[ConversationRow], int]:
    if not owner.sees_any:
        return [], 0
    total = await s.scalar(select(func.count()).select_from(Conversation)
                           .where(*owner.where()))
    counts = (select(ChatMessage.conversation_id, func.count().label("n"))
              .group_by(ChatMessage.conversation_id).subquery())
    q = (select(Conversation, func.coalesce(counts.c.n, 0)).where(*owner.where())
         .outerjoin(counts, counts.c.conversation_id == Conversation.id)
         .order_by(Conversation.updated_at.desc(), Conversation.id)
         .limit(limit).offset(offset))
    rows = [ConversationRow(conv, int(n)) for conv, n in await s.execute(q)]
    return rows, int(total or 0)


async def search_owned(
    s: AsyncSession, owner: Owner, question: str, *, conversation_id: str | None, limit: int,
    semantic: SemanticSearch | None = None,
) -> list[MessageHit]:
    """Messages of ``owner``'s conversations ranked for ``question`` (none for a caller
    who owns none): hybrid search (full-text, plus meaning with ``semantic``) with the
    owner's filters."""
    if not owner.sees_any:
        return []
    return await hybrid_messages(s, semantic, question, user_id=owner.user_id,
                                 conversation_id=conversation_id, limit=limit,
                                 assistant_id=owner.assistant_id)


async def list_messages(
    s: AsyncSession, conversation_id: str, limit: int, offset: int
) -> tuple[list[ChatMessage], int]:
    total = await s.scalar(select(func.count()).select_from(ChatMessage)
                           .where(ChatMessage.conversation_id == conversation_id))
    q = (select(ChatMessage).where(ChatMessage.conversation_id == conversation_id)
         .order_by(ChatMessage.seq, ChatMessage.created_at, ChatMessage.id)
         .limit(limit).offset(offset))
    return list(await s.scalars(q)), int(total or 0)


async def delete_conversation(s: AsyncSession, conv: Conversation) -> None:
    """The conversation, its messages and its feedback (the caller commits)."""
    await s.execute(delete(Feedback).where(Feedback.conversation_id == conv.id))
    await s.execute(delete(ChatMessage).where(ChatMessage.conversation_id == conv.id))
    await s.delete(conv)


async def conversations_by_id(
    s: AsyncSession, owner: Owner, ids: Sequence[str]
) -> dict[str, Conversation]:
    if not ids or not owner.sees_any:
        return {}
    q = select(Conversation).where(Conversation.id.in_(list(ids)), *owner.where())
    return {c.id: c for c in await s.scalars(q)}


async def message_in(s: AsyncSession, conversation_id: str, message_id: str) -> bool:
    msg = await s.get(ChatMessage, message_id)
    return msg is not None and msg.conversation_id == conversation_id


# --- feedback ------------------------------------------------------------------------

_POSITIVE = frozenset({"thumbs_up", "like", "positive", "upvote", "helpful"})
_NEGATIVE = frozenset({"thumbs_down", "dislike", "negative", "downvote", "unhelpful"})
_RATINGS = frozenset({"rating", "stars", "score"})


def feedback_score(feedback_type: str, value: float | None) -> float | None:
    """A 1..5 score: thumbs map to 5 and 1, ratings keep their value, others by sign."""
    kind = feedback_type.lower()
    if kind in _POSITIVE:
        return 5.0
    if kind in _NEGATIVE:
        return 1.0
    if value is None:
        return None
    if kind in _RATINGS:
        return min(max(float(value), 1.0), 5.0)
    return 5.0 if value > 0 else 1.0 if value < 0 else 3.0


async def add_feedback(s: AsyncSession, **fields: Any) -> Feedback:
    fb = Feedback(id=new_id("fb"), **fields)
    s.add(fb)
    await s.flush()
    return fb


async def feedback_analysis(
    s: AsyncSession, conversation_id: str, max_details: int = 200
) -> dict[str, Any]:
    total = await s.scalar(select(func.count()).select_from(ChatMessage)
                           .where(ChatMessage.conversation_id == conversation_id))
    rows = list(await s.scalars(select(Feedback)
                                .where(Feedback.conversation_id == conversation_id)
                                .order_by(Feedback.created_at, Feedback.id)))
    scores = [feedback_score(f.feedback_type, f.feedback_value) for f in rows]
    rated = [x for x in scores if x is not None]
    return {
        "conversation_id": conversation_id,
        "total_messages": int(total or 0),
        "messages_with_feedback": len({f.message_id for f in rows if f.message_id}),
        "total_feedback": len(rows),
        "positive_feedback": sum(1 for x in rated if x >= 4),
        "negative_feedback": sum(1 for x in rated if x <= 2),
        "average_rating": round(sum(rated) / len(rated), 2) if rated else None,
        "feedback_details": [
            {"feedback_id": f.id, "message_id": f.message_id, "feedback_type": f.feedback_type,
             "feedback_value": f.feedback_value, "comment": f.comment,
             "timestamp": iso(f.created_at)}
            for f in rows[-max_details:]
        ],
    }

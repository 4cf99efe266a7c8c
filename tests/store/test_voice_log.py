"""Voice turns into the conversation store, in batches (both backends)."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import select

from gateway.store.conversations import ensure_conversation
from gateway.store.db import Database
from gateway.store.models import ChatMessage, Conversation
from gateway.store.voice_log import VoiceLog

pytestmark = pytest.mark.asyncio(loop_scope="module")


def turn(n: int, user: str, heard: str = "") -> dict[str, Any]:
    return {"turn_id": n, "response_id": f"resp_{n}", "interrupted": False,
            "played_ms": 1200, "reply_text": heard or "A reply.", "heard_text": heard,
            "latency_ms": {"stt": 410.0}, "sources": [], "user_text": user}


def recorder(log: VoiceLog, conv: str) -> Any:
    return log.recorder(conversation_id=conv, assistant_id="default", session_id="sess_1",
                        user_id=None, source="voice")


async def messages(db: Database, conv: str) -> list[tuple[int, str, str]]:
    async with db.session() as s:
        rows = await s.execute(select(ChatMessage.seq, ChatMessage.role, ChatMessage.content)
                               .where(ChatMessage.conversation_id == conv)
                               .order_by(ChatMessage.seq))
        return [tuple(r) for r in rows]  # type: ignore[misc]


async def test_turns_of_many_sessions_share_a_batch_in_order(db: Database) -> None:
    log = VoiceLog(db)
    first, second = recorder(log, "conv_a"), recorder(log, "conv_b")
    first(turn(1, "What is the gateway?", "A voice server."))
    second(turn(1, "Hello there"))  # nothing heard: a barge-in before any audio
    first(turn(2, "And barge-in?", "You can interrupt it."))
    await log.flush()
    assert log.stored == 3 and log.dropped == 0
    assert await messages(db, "conv_a") == [
        (1, "user", "What is the gateway?"), (2, "assistant", "A voice server."),
        (3, "user", "And barge-in?"), (4, "assistant", "You can interrupt it.")]
    assert await messages(db, "conv_b") == [(1, "user", "Hello there")]
    async with db.session() as s:
        conv = await s.get(Conversation, "conv_a")
        assert conv is not None and conv.title == "What is the gateway?"
        assert conv.source == "voice" and conv.session_id == "sess_1"


async def test_an_existing_conversation_is_continued(db: Database) -> None:
    async with db.session() as s:  # made elsewhere (e.g. /api/chat), without a title
        await ensure_conversation(s, "conv_c", "default", user_id=None, session_id=None,
                                  title="", source="chat")
        await s.commit()
    for n, words in ((1, "First"), (2, "Second")):  # one writer per process, flushed
        log = VoiceLog(db)
        recorder(log, "conv_c")(turn(n, f"{words} question", f"{words} answer."))
        await log.flush()
    assert [seq for seq, _, _ in await messages(db, "conv_c")] == [1, 2, 3, 4]
    async with db.session() as s:
        conv = await s.get(Conversation, "conv_c")
        assert conv is not None and conv.title == "First question"  # titled by the turn
        assert conv.source == "chat"  # the rest is the creator's

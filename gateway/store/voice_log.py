"""Voice turns into the conversation store: what the user said, the reply as heard
(after a barge-in, only the part that was played), and the stage latencies.

Writes run as background tasks so the audio path never waits for the database; a
bounded number may be in flight per process (beyond it a turn's record is dropped and
logged, not queued without end). ``flush()`` awaits the pending writes (session end).
"""

from __future__ import annotations

import asyncio
from typing import Any

import structlog

from .conversations import (
    add_messages,
    ensure_conversation,
    get_conversation,
    recent_messages,
)
from .db import Database

log = structlog.get_logger("gateway.voice_log")
MAX_PENDING = 256


class VoiceLog:
    def __init__(self, db: Database) -> None:
        self.db = db
        self._pending: set[asyncio.Task[None]] = set()
        self.dropped = 0

    def recorder(self, *, conversation_id: str, assistant_id: str, session_id: str,
                 user_id: str | None, source: str) -> Any:
        """A per-session callback for ``Session.on_turn_end``."""
        # One writer at a time per session: turns are stored in order, and the first
        # write creates the conversation before the next one looks for it.
        lock = asyncio.Lock()

        def record(turn: dict[str, Any]) -> None:
            if len(self._pending) >= MAX_PENDING:
                self.dropped += 1
                log.warning("voice_turn_not_stored", session_id=session_id,
                            reason="too many pending writes")
                return
            task = asyncio.create_task(self._store_locked(
                lock, conversation_id, assistant_id, session_id, user_id, source, turn))
            self._pending.add(task)
            task.add_done_callback(self._pending.discard)

        return record

    async def _store_locked(self, lock: asyncio.Lock, *args: Any) -> None:
        async with lock:
            await self._store(*args)

    async def _store(self, conversation_id: str, assistant_id: str, session_id: str,
                     user_id: str | None, source: str, turn: dict[str, Any]) -> None:
        meta = {"turn_id": turn["turn_id"], "response_id": turn["response_id"],
                "session_id": session_id}
        reply_meta = {**meta, "interrupted": turn["interrupted"],
                      "played_ms": turn["played_ms"], "full_reply": turn["reply_text"],
                      "latency_ms": turn["latency_ms"], "sources": turn["sources"]}
        if turn.get("tools"):  # the function tools the reply called, with their results
            reply_meta["tools"] = turn["tools"]
        items = [("user", turn["user_text"], meta)]
        if turn["heard_text"]:
            items.append(("assistant", turn["heard_text"], reply_meta))
        try:
            async with self.db.session() as s:
                conv = await ensure_conversation(
                    s, conversation_id, assistant_id, user_id=user_id, session_id=session_id,
                    title=turn["user_text"], source=source)
                await add_messages(s, conv, items)
                await s.commit()
        except Exception as exc:  # storage trouble must not end the call
            log.error("voice_turn_store_failed", session_id=session_id, error=str(exc))

    async def history(self, conversation_id: str, assistant_id: str, limit: int) -> list[Any]:
        """Recent messages of an existing conversation of this assistant (to resume it)."""
        async with self.db.session() as s:
            if await get_conversation(s, assistant_id, conversation_id) is None:
                return []
            return list(await recent_messages(s, conversation_id, limit))

    async def flush(self, timeout: float = 5.0) -> None:
        if self._pending:
            await asyncio.wait(set(self._pending), timeout=timeout)

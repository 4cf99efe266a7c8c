"""Voice turns into the conversation store: what the user said, the reply as heard
(after a barge-in, only the part that was played), and the stage latencies.

The audio path never waits for the database: finished turns go into a bounded queue
(beyond it a record is dropped and logged, not queued without end), and one writer task
per process stores them in batches — one transaction, one fsync, for everything that
arrived meanwhile — in arrival order, so a conversation's turns stay in order.
``flush()`` waits for the queue to drain (shutdown).
"""

from __future__ import annotations

import asyncio
import contextlib
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
MAX_PENDING = 1024
MAX_BATCH = 128


class VoiceLog:
    def __init__(self, db: Database) -> None:
        self.db = db
        self._queue: asyncio.Queue[tuple[dict[str, Any], dict[str, Any]]] = asyncio.Queue(
            MAX_PENDING
        )
        self._writer: asyncio.Task[None] | None = None
        self.dropped = 0
        self.stored = 0

    def recorder(self, *, conversation_id: str, assistant_id: str, session_id: str,
                 user_id: str | None, source: str) -> Any:
        """A per-session callback for ``Session.on_turn_end``."""
        where = {"conversation_id": conversation_id, "assistant_id": assistant_id,
                 "session_id": session_id, "user_id": user_id, "source": source}

        def record(turn: dict[str, Any]) -> None:
            if self._writer is None or self._writer.done():
                self._writer = asyncio.create_task(self._write_forever())
            try:
                self._queue.put_nowait((where, turn))
            except asyncio.QueueFull:
                self.dropped += 1
                log.warning("voice_turn_not_stored", session_id=session_id,
                            reason="too many pending writes")

        return record

    async def _write_forever(self) -> None:
        while True:
            batch = [await self._queue.get()]
            while len(batch) < MAX_BATCH and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            try:
                await self._store(batch)
                self.stored += len(batch)
            except Exception as exc:  # storage trouble must not end any call
                log.error("voice_turns_store_failed", turns=len(batch), error=str(exc))
            finally:
                for _ in batch:
                    self._queue.task_done()

    async def _store(self, batch: list[tuple[dict[str, Any], dict[str, Any]]]) -> None:
        async with self.db.session() as s:
            for where, turn in batch:
                conv = await ensure_conversation(
                    s, where["conversation_id"], where["assistant_id"],
                    user_id=where["user_id"], session_id=where["session_id"],
                    title=turn["user_text"], source=where["source"])
                await add_messages(s, conv, _messages(where["session_id"], turn))
            await s.commit()

    async def history(self, conversation_id: str, assistant_id: str, limit: int) -> list[Any]:
        """Recent messages of an existing conversation of this assistant (to resume it)."""
        async with self.db.session() as s:
            if await get_conversation(s, assistant_id, conversation_id) is None:
                return []
            return list(await recent_messages(s, conversation_id, limit))

    async def flush(self, timeout: float = 5.0) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await self._queue.join()
        if self._writer is not None:
            self._writer.cancel()


def _messages(session_id: str, turn: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    meta = {"turn_id": turn["turn_id"], "response_id": turn["response_id"],
            "session_id": session_id}
    reply_meta = {**meta, "interrupted": turn["interrupted"], "played_ms": turn["played_ms"],
                  "full_reply": turn["reply_text"], "latency_ms": turn["latency_ms"],
                  "sources": turn["sources"]}
    if turn.get("tools"):  # the function tools the reply called, with their results
        reply_meta["tools"] = turn["tools"]
    items = [("user", turn["user_text"], meta)]
    if turn["heard_text"]:
        items.append(("assistant", turn["heard_text"], reply_meta))
    return items

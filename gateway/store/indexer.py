"""Writes sentence vectors for passages and messages that have none (or another model's).

Rows are written first and embedded after (the embedding runs in the runtime's bounded
pool, never in a database transaction): an import waits for its own passages, a message
search first embeds the messages written since the last one (within a time budget), and
at start a background task backfills everything else (the sample knowledge base, rows
from before the embedder existed, rows made by another model).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from typing import Any

import structlog
from sqlalchemy import text

from .db import Database
from .knowledge import split_sentences
from .vectors import EmbedFn, passage_text, to_blob

log = structlog.get_logger("gateway.indexer")

CHUNK_BATCH = 8  # passages per embedding call (with their sentences: ~30 texts, ~0.2 s)
MESSAGE_BATCH = 64


class Indexer:
    def __init__(self, db: Database, embed: EmbedFn, embedder: str,
                 on_chunks: Callable[[], None] = lambda: None) -> None:
        self.db = db
        self.on_chunks = on_chunks  # called after passage vectors were written
        self.embed = embed
        self.embedder = embedder
        self._chunks = asyncio.Lock()
        self._messages = asyncio.Lock()
        self._backfill: asyncio.Task[None] | None = None

    async def index_chunks(self, assistant_id: str | None = None,
                           budget_s: float | None = None) -> int:
        """Embed pending passages (of one assistant, or all) until none are left or the
        budget is spent; returns how many were embedded."""
        done = 0
        deadline = None if budget_s is None else time.monotonic() + budget_s
        async with self._chunks:
            while deadline is None or time.monotonic() < deadline:
                n = await self._chunk_batch(assistant_id)
                if not n:
                    break
                done += n
        return done

    async def _chunk_batch(self, assistant_id: str | None) -> int:
        where = "(embedder IS NULL OR embedder <> :m)"
        params: dict[str, Any] = {"m": self.embedder, "n": CHUNK_BATCH}
        if assistant_id is not None:
            where += " AND assistant_id = :a"
            params["a"] = assistant_id
        async with self.db.session() as s:
            rows = (await s.execute(text(
                f"SELECT id, title, heading, text FROM chunks WHERE {where} ORDER BY id "
                "LIMIT :n"), params)).all()
        if not rows:
            return 0
        sentences = [split_sentences(r[3]) for r in rows]
        texts = [passage_text(r[1], r[2], r[3]) for r in rows]
        for sents in sentences:
            texts.extend(sents)
        vectors = await self.embed(texts)
        if vectors is None:
            return 0
        updates, pos, now = [], len(rows), time.time()
        for i, r in enumerate(rows):
            n = len(sentences[i])
            updates.append({"id": r[0], "e": to_blob(vectors[i : i + 1]), "t": now,
                            "s": to_blob(vectors[pos : pos + n]), "m": self.embedder})
            pos += n
        async with self.db.session() as s:
            await s.execute(text("UPDATE chunks SET embedding = :e, sentence_embeddings = :s, "
                                 "embedder = :m, embedded_at = :t WHERE id = :id"), updates)
            await s.commit()
        self.on_chunks()
        return len(rows)

    async def index_messages(self, budget_s: float | None = None) -> int:
        """Embed pending messages, newest first, until none are left or the budget is
        spent; returns how many were embedded."""
        done = 0
        deadline = None if budget_s is None else time.monotonic() + budget_s
        async with self._messages:
            while deadline is None or time.monotonic() < deadline:
                n = await self._message_batch()
                if not n:
                    break
                done += n
        return done

    async def _message_batch(self) -> int:
        async with self.db.session() as s:
            rows = (await s.execute(text(
                "SELECT id, content FROM messages WHERE embedder IS NULL OR embedder <> :m "
                "ORDER BY created_at DESC LIMIT :n"),
                {"m": self.embedder, "n": MESSAGE_BATCH})).all()
        if not rows:
            return 0
        vectors = await self.embed([r[1] for r in rows])
        if vectors is None:
            return 0
        async with self.db.session() as s:
            await s.execute(text("UPDATE messages SET embedding = :e, embedder = :m "
                                 "WHERE id = :id"),
                            [{"id": r[0], "e": to_blob(vectors[i : i + 1]), "m": self.embedder}
                             for i, r in enumerate(rows)])
            await s.commit()
        return len(rows)

    def start_backfill(self) -> None:
        """Embed everything pending in the background (at start: idle time is free)."""
        if self._backfill is None or self._backfill.done():
            self._backfill = asyncio.ensure_future(self._run_backfill())

    async def wait_backfill(self, timeout: float) -> None:
        """Wait, at most ``timeout`` seconds, for the running backfill (it goes on after)."""
        if self._backfill is not None and not self._backfill.done():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self._backfill), timeout)

    async def _run_backfill(self) -> None:
        started = time.monotonic()
        try:
            chunks = await self.index_chunks()
            messages = await self.index_messages()
        except Exception as exc:  # a busy pool or a closed database: the next start retries
            log.warning("embedding_backfill_stopped", error=str(exc))
            return
        if chunks or messages:
            log.info("embedding_backfill_done", passages=chunks, messages=messages,
                     s=round(time.monotonic() - started, 2))

    async def aclose(self) -> None:
        if self._backfill is not None:
            self._backfill.cancel()
            with contextlib.suppress(BaseException):
                await self._backfill

"""Voice turns into the conversation store: what the user said, the reply as heard
(after a barge-in, only the part that was played), and the stage latencies.

The audio path never waits for the database: finished turns go into a bounded queue
(beyond it a record is dropped and logged, not queued without end), and one writer task
per process stores them in batches — one transaction, one fsync, for everything that
arrived meanwhile — in arrival order, so a conversation's turns stay in order.
``flush()`` waits for the queue to drain (shutdown).

One session's bad row must not cost the others theirs: a batch the database refuses
(a value too long for its column, a NUL PostgreSQL text cannot hold, a lone surrogate
no UTF-8 encoder takes, …) is stored again in halves, in order, each in its own
transaction, down to single turns: the good turns are stored, in their order, and one
bad turn in 128 costs ~14 transactions, not 128 (turn by turn cost ~28 ms each on
PostgreSQL: 3.6 s per batch, slower than turns arrive at 300 sessions). A turn that
fails on its own is logged once, without its contents (the error's class only: the
exception text can carry the statement and values), and its own session is told
through the recorder's ``on_failure``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any, cast

import structlog
from sqlalchemy import Table, bindparam, func, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from .conversations import Owner, owned, recent_messages, title_of
from .db import Database
from .models import ChatMessage, Conversation, new_id, now

log = structlog.get_logger("gateway.voice_log")
MAX_PENDING = 1024
MAX_BATCH = 128
COLLECT_S = 0.2

# Told the turn id of a turn that could not be stored (the session reports it).
OnFailure = Callable[[int], None]
# A queued turn: where it belongs, the turn, whom to tell if it cannot be stored.
Pending = tuple[dict[str, Any], dict[str, Any], OnFailure | None]


class VoiceLog:
    def __init__(self, db: Database) -> None:
        self.db = db
        self._queue: asyncio.Queue[Pending] = asyncio.Queue(MAX_PENDING)
        self._writer: asyncio.Task[None] | None = None
        self.dropped = 0  # refused: the queue was full
        self.failed = 0  # refused by the database, even on its own
        self.stored = 0

    def recorder(self, *, conversation_id: str, assistant_id: str, session_id: str,
                 user_id: str | None, source: str, transport: str,
                 on_failure: OnFailure | None = None) -> Callable[[dict[str, Any]], None]:
        """A per-session callback for ``Session.on_turn_end``. ``on_failure(turn_id)`` is
        called (on the event loop) for each of this session's turns that was not stored.
        ``transport``: the wire the session came over (``ws``, ``twilio``, ``realtime``,
        ``webrtc``: the metrics' names)."""
        where = {"conversation_id": conversation_id, "assistant_id": assistant_id,
                 "session_id": session_id, "user_id": user_id, "source": source,
                 "transport": transport}

        def record(turn: dict[str, Any]) -> None:
            if self._writer is None or self._writer.done():
                self._writer = asyncio.create_task(self._write_forever())
            try:
                self._queue.put_nowait((where, turn, on_failure))
            except asyncio.QueueFull:
                self.dropped += 1
                _not_stored((where, turn, on_failure), "too many pending writes")

        return record

    async def _write_forever(self) -> None:
        while True:
            batch = [await self._queue.get()]
            # A transaction costs ~40 hops to the database thread whatever its size, so
            # turns that end within COLLECT_S of each other share one (at 100 turns a
            # second, 50 ms windows kept that thread busy a tenth of the time).
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(COLLECT_S):
                    while len(batch) < MAX_BATCH:
                        batch.append(await self._queue.get())
            try:
                await self._store_or_split(batch, first=True)
            finally:
                for _ in batch:
                    self._queue.task_done()

    async def _store_or_split(self, batch: list[Pending], *, first: bool = False) -> None:
        """One transaction for ``batch``; if the database refuses it, each half in order
        (down to the single turn that cannot be stored: it costs only itself)."""
        try:
            await self._store(batch)
            self.stored += len(batch)
            return
        except Exception as exc:  # storage trouble must not end any call
            if len(batch) == 1:
                self.failed += 1
                _not_stored(batch[0], _error_kind(exc))
                return
            if first:  # once per batch, not per half
                log.warning("voice_turns_batch_refused", turns=len(batch),
                            error=_error_kind(exc))
        half = len(batch) // 2
        await self._store_or_split(batch[:half])
        await self._store_or_split(batch[half:])

    async def _store(self, batch: list[Pending]) -> None:
        # A handful of statements per batch, not a few ORM round trips per turn: at
        # hundreds of sessions the ORM path cost ~4 ms of event-loop CPU per turn.
        stamp = now()
        convs = cast(Table, Conversation.__table__)
        msgs = cast(Table, ChatMessage.__table__)
        ids = list(dict.fromkeys(where["conversation_id"] for where, _, _ in batch))
        async with self.db.session() as s:
            known = await s.execute(
                select(convs.c.id, convs.c.title, func.max(msgs.c.seq))
                .select_from(convs.outerjoin(msgs, msgs.c.conversation_id == convs.c.id))
                .where(convs.c.id.in_(ids)).group_by(convs.c.id, convs.c.title))
            found = known.all()
            top = {cid: seq or 0 for cid, _title, seq in found}
            untitled = {cid for cid, title, _seq in found if not title}
            fresh: list[dict[str, Any]] = []
            rows: list[dict[str, Any]] = []
            titles: dict[str, str] = {}
            for where, turn, _ in batch:
                cid = where["conversation_id"]
                if cid not in top:
                    top[cid] = 0
                    fresh.append(_conversation_row(where, turn, stamp))
                elif cid in untitled and turn["user_text"].strip():
                    titles.setdefault(cid, title_of(turn["user_text"]))
                for role, content, meta in _messages(where["session_id"], turn):
                    top[cid] += 1
                    rows.append({"id": new_id("msg"), "conversation_id": cid, "seq": top[cid],
                                 "role": role, "content": content, "metadata": meta,
                                 "created_at": stamp})
            if fresh:
                # Another process may create the same conversation meanwhile: keep theirs.
                await s.execute(self._insert_ignoring_conflicts(convs), fresh)
            await s.execute(msgs.insert(), rows)
            await s.execute(
                update(convs).where(convs.c.id == bindparam("cid"))
                .values(updated_at=stamp), [{"cid": cid} for cid in ids])
            for cid, title in titles.items():
                await s.execute(update(convs).where(convs.c.id == cid).values(title=title))
            await s.commit()

    def _insert_ignoring_conflicts(self, table: Any) -> Any:
        dialect = sqlite_insert if self.db.is_sqlite else pg_insert
        return dialect(table).on_conflict_do_nothing(index_elements=["id"])

    async def history(self, owner: Owner, conversation_id: str, limit: int
                      ) -> list[Any] | None:
        """Recent messages of a conversation ``owner`` may resume; None when it may not
        (another assistant's or user's, or unknown: the caller starts a new one)."""
        async with self.db.session() as s:
            if await owned(s, owner, conversation_id) is None:
                return None
            return list(await recent_messages(s, conversation_id, limit))

    async def flush(self, timeout: float = 5.0) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await self._queue.join()
        if self._writer is not None:
            self._writer.cancel()


def _not_stored(item: Pending, reason: str) -> None:
    """Logged once per turn, with ids only (never the words), and told to its session."""
    where, turn, on_failure = item
    log.error("voice_turn_not_stored", session_id=where["session_id"],
              turn_id=turn.get("turn_id"), reason=reason)
    if on_failure is not None:
        try:
            on_failure(turn["turn_id"])
        except Exception as exc:  # a closed session, a bug: never the writer's end
            log.warning("voice_turn_failure_not_told", session_id=where["session_id"],
                        error=type(exc).__name__)


def _error_kind(exc: BaseException) -> str:
    """The innermost cause's class (e.g. ``StringDataRightTruncationError``): what went
    wrong, without the exception's text, which can quote the statement and the values."""
    while True:
        inner = getattr(exc, "orig", None) or exc.__cause__
        if not isinstance(inner, BaseException) or inner is exc:
            return type(exc).__name__
        exc = inner


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


def _conversation_row(where: dict[str, Any], turn: dict[str, Any], stamp: float
                      ) -> dict[str, Any]:
    return {"id": where["conversation_id"], "assistant_id": where["assistant_id"],
            "user_id": where["user_id"], "session_id": where["session_id"],
            "title": title_of(turn["user_text"]), "source": where["source"],
            "transport": where["transport"],
            "template_name": None, "template_variables": {}, "metadata": {},
            "created_at": stamp, "updated_at": stamp}

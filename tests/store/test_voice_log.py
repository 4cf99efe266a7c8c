"""Voice turns into the conversation store, in batches (both backends)."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import select
from structlog.testing import capture_logs

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
                        user_id=None, source="voice", transport="ws")


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


# --- a writer that cannot be poisoned ------------------------------------------------
# These rows go straight to the recorder, past the edge validation (gateway/protocol/
# fields.py), to prove the writer itself holds: an LLM reply can carry a NUL too.

NORMAL = ("conv_n1", "conv_n2", "conv_n3", "conv_n4")


async def test_hostile_rows_beside_normal_ones_lose_no_normal_turn(db: Database) -> None:
    log = VoiceLog(db)
    failed: list[tuple[str, int]] = []

    def rec(conv: str, session: str) -> Any:
        return log.recorder(conversation_id=conv, assistant_id="default", session_id=session,
                            user_id=None, source="voice", transport="ws",
                            on_failure=lambda turn_id: failed.append((session, turn_id)))

    normal = [rec(conv, f"sess_n{i}") for i, conv in enumerate(NORMAL)]
    too_long = rec("c" * 80, "sess_long")  # the column holds 64
    nul = rec("conv_nul", "sess_nul")
    surrogate = rec("conv_sur", "sess_sur")
    with capture_logs() as logs:
        for n in (1, 2, 3):  # all in one batch, hostile rows in between
            for i, record in enumerate(normal):
                if (i, n) == (0, 2):  # a normal session's reply with a NUL in it
                    record(turn(n, f"secret question {i}.{n}", "bad\x00reply"))
                else:
                    record(turn(n, f"secret question {i}.{n}", f"secret answer {i}.{n}."))
            too_long(turn(n, f"hostile long {n}"))
            nul(turn(n, f"hostile nul\x00 {n}"))
            surrogate(turn(n, f"hostile surrogate {n}", "lone \ud800 half"))
        await log.flush()
    pg = not db.is_sqlite  # SQLite takes over-long ids and NUL; no UTF-8 encoder a surrogate
    expected = {("sess_sur", n) for n in (1, 2, 3)}
    if pg:
        expected |= {("sess_long", n) for n in (1, 2, 3)} | {("sess_nul", n) for n in (1, 2, 3)}
        expected.add(("sess_n0", 2))
    assert set(failed) == expected and len(failed) == len(expected)  # each told once
    assert log.failed == len(expected) and log.stored == 21 - len(expected)
    for i, conv in enumerate(NORMAL):  # every normal turn, in order, numbered without gaps
        rows = await messages(db, conv)
        want: list[tuple[str, str]] = []
        for n in (1, 2, 3):
            if pg and (i, n) == (0, 2):
                continue
            want.append(("user", f"secret question {i}.{n}"))
            want.append(("assistant", "bad\x00reply" if (i, n) == (0, 2)
                          else f"secret answer {i}.{n}."))
        assert [(role, text) for _, role, text in rows] == want
        assert [seq for seq, _, _ in rows] == list(range(1, len(want) + 1))
    not_stored = [e for e in logs if e["event"] == "voice_turn_not_stored"]
    assert len(not_stored) == len(expected)  # logged once per turn
    assert all(e["reason"] for e in not_stored)
    text = repr(logs)
    for word in ("secret", "hostile", "bad", "lone", "c" * 80):
        assert word not in text, (word, logs)  # nobody's words, no SQL parameters


async def test_a_failure_to_tell_a_session_does_not_stop_the_writer(db: Database) -> None:
    log = VoiceLog(db)

    def closed_session(turn_id: int) -> None:
        raise RuntimeError("session gone")

    log.recorder(conversation_id="conv_x", assistant_id="default", session_id="sess_x",
                 user_id=None, source="voice", transport="ws",
                 on_failure=closed_session)(turn(1, "\udfff"))
    recorder(log, "conv_y")(turn(1, "Still stored"))
    await log.flush()
    assert await messages(db, "conv_y") == [(1, "user", "Still stored")]
    assert (log.failed, log.stored) == (1, 1)


async def test_database_errors_carry_no_parameters(db: Database) -> None:
    async with db.session() as s:
        await ensure_conversation(s, "conv_dup", "default", user_id=None, session_id=None,
                                  title="first", source="chat")
        await s.commit()
    with pytest.raises(Exception) as caught:
        async with db.session() as s:  # the same id again: the database refuses it
            await s.execute(Conversation.__table__.insert(), [{
                "id": "conv_dup", "assistant_id": "default", "title": "my PIN is 4242",
                "source": "chat", "template_variables": {}, "metadata": {},
                "created_at": 0.0, "updated_at": 0.0}])
    assert "4242" not in str(caught.value) and "hidden" in str(caught.value)


async def test_a_bad_turn_costs_few_transactions_not_one_per_turn(db: Database) -> None:
    log = VoiceLog(db)
    real_store, transactions = log._store, []

    async def counted(batch: Any) -> None:
        transactions.append(len(batch))
        await real_store(batch)

    log._store = counted  # type: ignore[method-assign]
    for i in range(128):  # one batch; the 100th turn no UTF-8 encoder can take
        recorder(log, f"conv_many{i}")(turn(1, "\ud800" if i == 99 else f"question {i}"))
    await log.flush()
    assert (log.stored, log.failed) == (127, 1)
    assert transactions[0] == 128 and len(transactions) <= 15  # halves: 2 per level
    assert await messages(db, "conv_many100") == [(1, "user", "question 100")]

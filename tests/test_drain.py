"""SIGTERM during a spoken reply loses nothing (issues 9 and 12).

A real gateway process (espeak-ng speech, so the reply lasts seconds in real time) is
sent SIGTERM while a voice client is hearing a reply. With the default
``server.drain_timeout_s`` the reply, longer than the old 5 s deadline, plays to its
end and the session goes on until the caller hangs up; with a short one the reply is
cut like a barge-in at the deadline and the session closed with 1012 and a retryable
``UNAVAILABLE`` error. Either way the turn is in the database afterwards.
"""

from __future__ import annotations

import asyncio
import json
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import websockets
from sqlalchemy import select
from test_durability import GatewayProcess
from testdb import selected_backend

from gateway.config import Config
from gateway.store.db import Database
from gateway.store.models import ChatMessage

# Answered with the test knowledge base's longest passage: ~15 s of espeak-ng speech,
# longer than the old 5 s deadline, shorter than the 25 s default.
QUESTION = "What is barge-in?"


@dataclass
class SpeakingGateway(GatewayProcess):
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def env(self) -> dict[str, str]:
        return {**super().env, "GATEWAY_TTS__PROVIDER": "espeak",
                "GATEWAY_SERVER__ALLOW_ANONYMOUS": "auto", **self.extra}


async def reply_then_sigterm(gw: SpeakingGateway, after_audio_s: float, hang_up: bool,
                             signals: int = 1
                             ) -> tuple[list[dict[str, Any]], float, int | None]:
    """A text turn; SIGTERM once ``after_audio_s`` of its audio arrived (``signals`` of
    them, 0.5 s of audio apart); the client hangs up after the reply if ``hang_up``. The
    events, the audio seconds received and the close code (None: the client closed)."""
    url = f"ws://127.0.0.1:{gw.port}/api/v1/voice/ws"
    events: list[dict[str, Any]] = []
    audio_bytes, rate, signalled = 0, 24000, 0
    async with websockets.connect(url, max_size=2**21) as ws:
        await ws.send(json.dumps({"type": "text", "text": QUESTION}))
        try:
            async with asyncio.timeout(60):
                async for message in ws:
                    if isinstance(message, bytes):
                        audio_bytes += len(message)
                        due = after_audio_s + 0.5 * signalled
                        if signalled < signals and audio_bytes / 2 / rate >= due:
                            assert gw.proc is not None
                            gw.proc.send_signal(signal.SIGTERM)
                            signalled += 1
                        continue
                    event = json.loads(message)
                    events.append(event)
                    if event["type"] == "session_started":
                        rate = event["output"]["sample_rate"]
                    if event["type"] == "stream_end" and hang_up:
                        break  # the caller has heard the answer and hangs up
        except websockets.ConnectionClosed:
            pass
        code = None if hang_up else ws.close_code
    assert signalled, events
    return events, audio_bytes / 2 / rate, code


async def stored_turn(gw: SpeakingGateway, conversation_id: str) -> list[ChatMessage]:
    data = {"data_dir": str(gw.data_dir)}
    cfg = Config().replace(server=data, **({"database": {"url": gw.database_url}}
                                           if gw.database_url else {}))
    db = Database.from_config(cfg)
    try:
        async with db.session() as s:
            rows = await s.execute(select(ChatMessage).where(
                ChatMessage.conversation_id == conversation_id).order_by(ChatMessage.seq))
            return list(rows.scalars())
    finally:
        await db.close()


@pytest.fixture
def speaking_gateway(tmp_path: Path, new_database_url: Any) -> Any:
    made: list[SpeakingGateway] = []

    def make(**extra: str) -> SpeakingGateway:
        url = new_database_url() if selected_backend() == "postgres" else None
        gw = SpeakingGateway(tmp_path / f"data{len(made)}", url, extra=extra)
        made.append(gw)
        gw.start()
        return gw

    yield make
    for gw in made:
        gw.stop()


@pytest.mark.parametrize("drain", ["default", "short", "twice"])
async def test_sigterm_during_a_reply(speaking_gateway: Any, drain: str) -> None:
    """default: the reply plays out; short: cut at a 1 s deadline; twice: a second
    SIGTERM makes the (default, 25 s) deadline now."""
    extra = {"GATEWAY_SERVER__DRAIN_TIMEOUT_S": "1"} if drain == "short" else {}
    gw = speaking_gateway(**extra)
    started = time.monotonic()
    events, heard_s, code = await reply_then_sigterm(gw, after_audio_s=0.5,
                                                     hang_up=drain == "default",
                                                     signals=2 if drain == "twice" else 1)
    # (uvicorn re-raises the signal once it has shut down cleanly)
    assert gw.proc is not None and gw.proc.wait(timeout=40) in (0, -signal.SIGTERM)
    if drain == "twice":
        assert time.monotonic() - started < 15, "the second SIGTERM did not end the drain"
    kinds = [e["type"] for e in events]
    [done] = [e for e in events if e["type"] == "tts_complete"]
    conversation = events[0]["conversation_id"]
    rows = await stored_turn(gw, conversation)
    assert [r.role for r in rows] == ["user", "assistant"], rows
    assert rows[0].content == QUESTION
    reply = next(e for e in events if e["type"] == "agent_response")["text"]
    if drain == "default":
        # The whole reply (longer than the old 5 s deadline) was heard, then stored.
        assert done["interrupted"] is False and "interrupted" not in kinds
        assert kinds[-1] == "stream_end" and "error" not in kinds, kinds
        assert heard_s > 5.0 and time.monotonic() - started > 5.0, (heard_s, reply)
        assert rows[1].content == reply and rows[1].meta["interrupted"] is False
    else:
        # At the deadline: cut like a barge-in (interrupted, tts_complete (interrupted),
        # stream_end), then told to reconnect: a retryable error and close 1012.
        assert kinds[-4:] == ["interrupted", "tts_complete", "stream_end", "error"], kinds
        assert events[-1]["code"] == "UNAVAILABLE" and events[-1]["retryable"] is True
        assert code == 1012
        assert done["interrupted"] is True and 500 <= done["played_ms"] < 4000, done
        assert rows[1].meta["interrupted"] is True
        assert rows[1].content and reply.startswith(rows[1].content[:20])
        assert len(rows[1].content) < len(reply)

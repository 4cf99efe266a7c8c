"""Issue 9's reproduction, end to end: hostile sessions beside normal ones on one real
gateway (PostgreSQL in the PostgreSQL run). An 80-character conversation_id, NUL text,
lone surrogates, on v1, Twilio and Realtime: each gets its protocol's error and goes on;
every normal turn is stored, in order; an upstream reply with a NUL or a lone surrogate is
mended, sent and stored; a turn the database still refuses costs only itself
(INTERNAL_ERROR with its turn_id, the session goes on); no log line carries anyone's
words."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import websockets
from sqlalchemy import select
from sqlalchemy import text as sql
from structlog.testing import capture_logs
from voice_client import VoiceClient, silence, wav

from gateway.config import Config
from gateway.providers.null import NullTTS
from gateway.store.db import Database
from gateway.store.keys import KeyStore
from gateway.store.models import ChatMessage, Conversation
from gateway.transports.twilio import MARKS_KEPT, TwilioCall

SECRET = "my card PIN is 4242"
LONG_ID = "c" * 80  # the column holds 64


class EchoLLM:
    """Answers with the question; asked for "garbage", with a NUL and a lone surrogate,
    as a misbehaving upstream model might send them."""

    name = "echo"

    def generate(self, request: Any) -> Any:
        if "garbage" in request.question:
            yield "bad\x00reply with half \ud800 a pair."
        else:
            yield f"You said: {request.question}"


# The last line: a turn the database refuses for its own reasons (a constraint here; a
# full disk, a lost connection in life) beside everyone else's.
REFUSE_POISON = {
    "sqlite": "CREATE TRIGGER refuse_poison BEFORE INSERT ON messages "
              "WHEN instr(NEW.content, 'poison') > 0 BEGIN SELECT RAISE(ABORT, 'no'); END",
    "postgresql": "ALTER TABLE messages ADD CONSTRAINT refuse_poison "
                  "CHECK (position('poison' in content) = 0)",
}


async def text_turns(client: VoiceClient, texts: list[str]) -> None:
    for n, text in enumerate(texts, start=1):
        await client.send_json({"type": "text", "text": text})
        await client.wait_for("stream_end", count=n, timeout=30)


async def normal_session(gw: Any, i: int) -> tuple[str, list[str]]:
    client = await VoiceClient.connect(gw.ws_url)
    started = await client.wait_for("session_started")
    texts = [f"normal {i} turn {n}: {SECRET}" for n in (1, 2)]
    await text_turns(client, texts)
    assert not client.events("error")
    await client.close()
    return started["conversation_id"], texts


async def speech_session(gw: Any) -> tuple[str, list[str]]:
    client = await VoiceClient.connect(gw.ws_url)
    started = await client.wait_for("session_started")
    await client.stream(wav("what_is_the_gateway.wav") + silence(800), speed=2.0)
    final = await client.wait_for("transcription", final=True)
    await client.wait_for("stream_end")
    await client.close()
    return started["conversation_id"], [final["text"]]


async def expect_invalid(client: VoiceClient, count: int, fragment: str) -> None:
    err = await client.wait_for("error", count=count, timeout=10)
    assert err["code"] == "INVALID_REQUEST" and fragment in err["message"], err


async def hostile_start(gw: Any) -> tuple[str, list[str]]:
    client = await VoiceClient.connect(gw.ws_url)
    await client.send_json({"type": "start", "conversation_id": LONG_ID})
    started = await client.wait_for("session_started")  # the defaults apply
    await expect_invalid(client, 1, "conversation_id")
    assert started["conversation_id"] != LONG_ID
    await client.ws.send('{"type":"start","voice":"joe\\udc00"}')  # a lone surrogate
    await expect_invalid(client, 2, "voice")
    texts = [f"hostile start goes on: {SECRET}"]
    await text_turns(client, texts)
    await client.close()
    return started["conversation_id"], texts


async def hostile_text(gw: Any) -> tuple[str, list[str]]:
    client = await VoiceClient.connect(gw.ws_url)
    started = await client.wait_for("session_started")
    for _ in range(10):  # the issue's flood: NUL text every 100 ms
        await client.ws.send('{"type":"text","text":"x\\u0000y"}')
        await asyncio.sleep(0.1)
    await expect_invalid(client, 10, "NUL")
    await client.ws.send('{"type":"text","text":"half \\ud800 a pair"}')
    await expect_invalid(client, 11, "valid Unicode")
    texts = [f"hostile text goes on: {SECRET}"]
    await text_turns(client, texts)
    await client.close()
    return started["conversation_id"], texts


async def unstorable_turns(gw: Any) -> tuple[str, list[str]]:
    client = await VoiceClient.connect(gw.ws_url)
    started = await client.wait_for("session_started")
    await text_turns(client, ["tell me garbage"])  # mended: sent and stored
    reply = await client.wait_for("agent_response")
    assert reply["text"] == "badreply with half \ufffd a pair.", reply
    await client.send_json({"type": "text", "text": "a poison question"})
    turn_id = (await client.wait_for("stream_start", count=2))["turn_id"]
    error = await client.wait_for("error", timeout=10)
    assert error == {"type": "error", "code": "INTERNAL_ERROR", "retryable": False,
                     "message": "this turn could not be saved to the conversation history",
                     "turn_id": turn_id}, error
    await client.send_json({"type": "text", "text": f"after that one: {SECRET}"})
    await client.wait_for("stream_end", count=3, timeout=30)  # the session went on
    await asyncio.sleep(0.5)  # the third turn's batch
    assert len(client.events("error")) == 1
    await client.close()
    return started["conversation_id"], ["tell me garbage", f"after that one: {SECRET}"]


async def hostile_call(gw: Any) -> str:
    url = f"ws://127.0.0.1:{gw.cfg.server.port}/api/v1/voice/twilio"
    async with websockets.connect(url) as ws:
        await ws.send(json.dumps({"event": "start", "streamSid": "MZ1", "start": {
            "callSid": "CA1", "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000},
            "customParameters": {"voice": "joe\x00", "note": "\ud800", "big": "x" * 2000}}}))
        await ws.send('{"event":"dtmf","dtmf":{"digit":"1\\u0000"}}')
        await ws.send('{"event":"mark","mark":{"name":"\\ud800"}}')
        for i in range(500):  # marks it never asked for: kept bounded
            await ws.send(json.dumps({"event": "mark", "mark": {"name": f"m{i}"}}))
        for digit in "7#":  # the call went on: a turn from the keypad
            await ws.send(json.dumps({"event": "dtmf", "dtmf": {"digit": digit}}))
        async with asyncio.timeout(30):  # until the reply has been sent to the end
            while not (msg := json.loads(await ws.recv()))["event"] == "mark" or not msg[
                    "mark"]["name"].endswith(":end"):
                pass
        call = next(e.conn.wire for e in gw.app.state.sessions.live.values()
                    if isinstance(e.conn.wire, TwilioCall))
        assert len(call.marks_played) <= MARKS_KEPT and call.marks_count >= 500
    return "The caller pressed the keys 7."


async def hostile_realtime(gw: Any, key: str) -> None:
    url = f"ws://127.0.0.1:{gw.cfg.server.port}/v1/realtime?model=gpt-realtime"
    protocols = ["realtime", f"openai-insecure-api-key.{key}"]
    async with websockets.connect(url, subprotocols=protocols) as ws:
        assert json.loads(await ws.recv())["type"] == "session.created"
        for raw in ('{"type":"session.update","session":{"instructions":"a\\u0000b"}}',
                    '{"type":"conversation.item.create","item":{"type":"message",'
                    '"role":"user","content":[{"type":"input_text","text":"\\udfff"}]}}',
                    json.dumps({"type": "conversation.item.create", "previous_item_id":
                                LONG_ID, "item": {"type": "message", "role": "user",
                                                  "content": [{"type": "text", "text": "a"}]}})):
            await ws.send(raw)
            event = json.loads(await asyncio.wait_for(ws.recv(), 10))
            assert event["type"] == "error", event
            assert event["error"]["type"] == "invalid_request_error", event
        await ws.send(json.dumps({"type": "session.update", "session": {"instructions": "Hi"}}))
        assert json.loads(await asyncio.wait_for(ws.recv(), 10))["type"] == "session.updated"


async def stored(db: Database, conv: str | None, want: list[str]) -> list[str]:
    """The user turns of ``conv`` in order (None: the conversation holding ``want[0]``)."""
    async with db.session() as s:
        if conv is None:
            conv = (await s.execute(select(ChatMessage.conversation_id).where(
                ChatMessage.content == want[0]))).scalar()
        rows = await s.execute(select(ChatMessage.content).where(
            ChatMessage.conversation_id == conv, ChatMessage.role == "user")
            .order_by(ChatMessage.seq))
        return list(rows.scalars())


async def wait_stored(db: Database, conv: str | None, want: list[str],
                      timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while (got := await stored(db, conv, want)) != want and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    assert got == want, (conv, got, want)


async def test_hostile_sessions_beside_normal_ones(gateway_factory) -> None:
    gw = gateway_factory(server={"log_level": "info"},
                         providers={"llm": EchoLLM(), "tts": NullTTS.from_config(Config())})
    db = Database.from_config(gw.cfg)
    _, key = await KeyStore(db).create("edge-test")
    async with db.engine.begin() as conn:
        await conn.execute(sql(REFUSE_POISON[db.engine.dialect.name]))
    with capture_logs() as logs:
        results = await asyncio.gather(
            *(normal_session(gw, i) for i in range(4)), speech_session(gw),
            hostile_start(gw), hostile_text(gw), unstorable_turns(gw),
            hostile_call(gw), hostile_realtime(gw, key))
        conversations: list[tuple[str, list[str]]] = list(results[:8])
        for conv, texts in conversations:  # every normal turn, in order
            await wait_stored(db, conv, texts)
        async with db.session() as s:
            convs = list((await s.execute(select(Conversation.id))).scalars())
            assert LONG_ID not in convs and all(len(c) <= 64 for c in convs)
        await wait_stored(db, None, [results[8]])  # the call went on; its turn is stored
    await db.close()
    not_stored = [e for e in logs if e["event"] == "voice_turn_not_stored"]
    assert len(not_stored) == 1
    logged = repr(logs)
    for word in ("4242", "poison", "garbage", "x\\x00y", "hostile", "normal 1", "keys 7",
                 "\\ud800"):
        assert word not in logged, word

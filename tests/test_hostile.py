"""Issue 9's hostile-input campaign, bounded and on loopback: malformed messages of many
kinds on every transport (v1, Twilio and Realtime WebSockets, raw frames, HTTP, WebRTC
offers) against one real gateway process, while a normal voice session on the same
server goes on untouched. Each attack gets its documented answer (error event and
session going on, or the documented close code / HTTP status); the normal session gets
every reply with no error; the server's log stays one JSON object per line, with one
``ws_protocol_error`` line per connection that broke the WebSocket protocol and no
traceback anywhere.
"""

from __future__ import annotations

import asyncio
import json
import struct
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets
from test_durability import GatewayProcess
from testdb import selected_backend
from websockets.frames import Frame, Opcode

HANDSHAKE = ("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
             "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
             "Sec-WebSocket-Version: 13\r\n\r\n")
ROUNDS = 3  # attack waves; the normal session takes one turn per wave


class OpenGateway(GatewayProcess):
    """Anonymous sessions on loopback, as a browser demo runs it (the attackers need no key)."""

    @property
    def env(self) -> dict[str, str]:
        return {**super().env, "GATEWAY_SERVER__ALLOW_ANONYMOUS": "auto"}


@pytest.fixture
def hostile_target(tmp_path: Path, new_database_url: Any) -> Any:
    url = new_database_url() if selected_backend() == "postgres" else None
    gw = OpenGateway(tmp_path / "data", url)
    gw.start()
    yield gw
    gw.stop()


# --- the normal session --------------------------------------------------------------


class NormalSession:
    def __init__(self, ws: Any) -> None:
        self.ws = ws
        self.events: list[dict[str, Any]] = []
        self.audio = 0
        self.ended = asyncio.Event()

    async def read(self) -> None:
        async for message in self.ws:
            if isinstance(message, bytes):
                self.audio += len(message)
                continue
            event = json.loads(message)
            self.events.append(event)
            if event["type"] == "stream_end":
                self.ended.set()

    async def turn(self, text: str) -> None:
        self.ended.clear()
        await self.ws.send(json.dumps({"type": "text", "text": text}))
        await asyncio.wait_for(self.ended.wait(), 20)

    async def stream_silence(self) -> None:
        frame = bytes(640)  # 20 ms at 16 kHz: the audio path stays busy throughout
        while True:
            await self.ws.send(frame)
            await asyncio.sleep(0.02)


# --- attacks --------------------------------------------------------------------------


async def v1_errors(base: str, messages: list[str | bytes]) -> list[dict[str, Any]]:
    """Each message on one v1 session; then a ping. The errors, and the session must
    still answer (it goes on)."""
    async with websockets.connect(f"{base}/api/v1/voice/ws", max_size=2**21) as ws:
        for m in messages:
            await ws.send(m)
        await ws.send(json.dumps({"type": "ping"}))
        errors = []
        while True:
            event = json.loads(await asyncio.wait_for(_next_text(ws), 10))
            if event["type"] == "pong":
                return errors
            if event["type"] == "error":
                errors.append(event)


async def _next_text(ws: Any) -> str:
    while isinstance(message := await ws.recv(), bytes):
        pass
    return str(message)


async def raw_frames(port: int, path: str, payload: bytes) -> int | None:
    """A WebSocket opened by hand, then ``payload`` (frames); the close code we get."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(HANDSHAKE.format(path=path).encode())
    await reader.readuntil(b"\r\n\r\n")
    await asyncio.sleep(0.6)  # the session starts with defaults
    writer.write(payload)
    data = b""
    try:
        async with asyncio.timeout(10):
            while chunk := await reader.read(65536):
                data += chunk
    except (TimeoutError, ConnectionError):
        pass
    writer.close()
    at = data.find(b"\x88")  # the server's close frame (after any text frames)
    while at >= 0:
        length = data[at + 1] & 0x7F
        if 2 <= length < 126 and at + 4 <= len(data):
            return int(struct.unpack("!H", data[at + 2 : at + 4])[0])
        at = data.find(b"\x88", at + 1)
    return None


async def close_code(url: str, messages: list[str], **kwargs: Any) -> int | None:
    try:
        async with websockets.connect(url, **kwargs) as ws:
            for m in messages:
                await ws.send(m)
            async with asyncio.timeout(10):
                while True:
                    await ws.recv()
    except websockets.ConnectionClosed as closed:
        return closed.rcvd.code if closed.rcvd else None
    except websockets.InvalidStatus as refused:
        return refused.response.status_code
    return None


async def realtime_errors(base: str, messages: list[str]) -> list[dict[str, Any]]:
    async with websockets.connect(f"{base}/v1/realtime?model=gpt-realtime") as ws:
        for m in messages:
            await ws.send(m)
        await ws.send(json.dumps({"type": "input_audio_buffer.clear", "event_id": "last"}))
        errors = []
        while True:
            event = json.loads(await asyncio.wait_for(ws.recv(), 10))
            if event["type"] == "error":
                errors.append(event["error"])
            if event["type"] == "input_audio_buffer.cleared":
                return errors


def masked(opcode: Opcode, data: bytes, fin: bool = True) -> bytes:
    return Frame(opcode, data, fin=fin).serialize(mask=True)


def attacks(port: int) -> dict[str, Callable[[], Awaitable[Any]]]:
    ws = f"ws://127.0.0.1:{port}"
    http = f"http://127.0.0.1:{port}"
    huge_type = json.dumps({"type": "x" * 500_000})
    bad_v1: list[str | bytes] = [
        "not json", "[1, 2]", '{"no":"type"}', huge_type, '{"type":"audio","data":"!!"}',
        json.dumps({"type": "text", "text": "x\u0000y"}), '{"type":"text","text":"   "}',
        json.dumps({"type": "text", "text": "long " * 2000}), b"\x01\x02\x03",
        bytes(64_000), json.dumps({"type": "start", "sample_rate": 12345}),
        json.dumps({"type": "start", "conversation_id": "c" * 80}), '{"type":"start"}',
        '{"type":"start"}', "9" * 5000, '{"type": ' * 10_000,
    ]

    async def twilio_media_first() -> int | None:
        return await close_code(f"{ws}/api/v1/voice/twilio",
                                ['{"event":"media","media":{"payload":"AAAA"}}'])

    async def webrtc_garbage() -> tuple[int, str]:
        async with httpx.AsyncClient(timeout=10) as client:
            r = await client.post(f"{http}/api/v1/voice/webrtc/offer",
                                  json={"sdp": "v=0\r\nm=audio x\r\n", "type": "offer"})
        return r.status_code, r.json()["error"]["code"]

    async def chat_garbage() -> list[tuple[int, str]]:
        out = []
        async with httpx.AsyncClient(base_url=http, timeout=10) as client:
            for body in ("{", '{"message": "x\\u0000y"}', '{"message": 5}', "[]"):
                r = await client.post("/api/chat", content=body,
                                      headers={"content-type": "application/json"})
                out.append((r.status_code, r.json()["error"]["code"]))
        return out

    return {
        "v1 messages": lambda: v1_errors(ws, bad_v1),
        "bad utf-8": lambda: raw_frames(port, "/api/v1/voice/ws",
                                        masked(Opcode.TEXT, b'{"type":"\xff"}')),
        "unmasked": lambda: raw_frames(port, "/api/v1/voice/ws",
                                       Frame(Opcode.BINARY, b"abc").serialize(mask=False)),
        # Refused from its header: the rest of the megabyte is never waited for (sending
        # on after the refusal would only get the client a reset).
        "too big": lambda: raw_frames(port, "/api/v1/voice/ws",
                                      masked(Opcode.BINARY, bytes((1 << 20) + 1))[:64]),
        "reserved bits": lambda: raw_frames(port, "/v1/realtime",
                                            b"\xc2" + masked(Opcode.BINARY, b"x")[1:]),
        "forged token": lambda: close_code(f"{ws}/api/v1/voice/ws?token=eyJhbGciOiJub25lIn0."
                                           "eyJzdWIiOiJ4In0.", []),
        "twilio media first": twilio_media_first,
        "realtime messages": lambda: realtime_errors(ws, [
            "{", '{"type":"no.such.event"}', '{"type":"input_audio_buffer.append","audio":"A"}',
            '{"type":"session.update","session":{"voice":5}}',
            '{"type":"conversation.item.create","item":{"type":"message","role":"user",'
            '"content":[{"type":"input_text","text":"x\\u0000y"}]}}']),
        "webrtc garbage": webrtc_garbage,
        "chat garbage": chat_garbage,
    }


def check(results: dict[str, Any]) -> None:
    v1 = results["v1 messages"]
    # 16 bad messages, one error each, except the first plain start (accepted: no audio
    # came before it); the second is refused.
    assert len(v1) == 15 and {e["code"] for e in v1} == {"INVALID_REQUEST"}, v1
    assert all(len(e["message"]) < 300 for e in v1)
    assert results["bad utf-8"] == 1007 and results["unmasked"] == 1002
    assert results["too big"] == 1009 and results["reserved bits"] == 1002
    assert results["forged token"] == 4401 and results["twilio media first"] == 1008
    realtime = results["realtime messages"]
    assert len(realtime) == 5 and {e["type"] for e in realtime} == {"invalid_request_error"}
    assert results["webrtc garbage"] == (400, "INVALID_REQUEST")
    assert results["chat garbage"] == [(400, "INVALID_REQUEST")] * 4


async def test_hostile_clients_beside_a_normal_session(hostile_target: GatewayProcess) -> None:
    gw = hostile_target
    async with websockets.connect(f"ws://127.0.0.1:{gw.port}/api/v1/voice/ws") as ws:
        normal = NormalSession(ws)
        reading = asyncio.create_task(normal.read())
        streaming = asyncio.create_task(normal.stream_silence())
        for _ in range(ROUNDS):
            named = attacks(gw.port)
            wave = asyncio.gather(*(attack() for attack in named.values()))
            await normal.turn("What is the gateway?")
            check(dict(zip(named, await wave, strict=True)))
        await normal.turn("Does it work offline?")
        streaming.cancel()
        await ws.close()
        await reading
    kinds = [e["type"] for e in normal.events]
    assert "error" not in kinds and kinds.count("stream_end") == ROUNDS + 1, kinds
    assert kinds.count("agent_response") == ROUNDS + 1 and normal.audio > 0
    gw.stop()
    lines = gw.log.read_text().splitlines()
    records = [json.loads(line) for line in lines if line.strip()]  # every line is JSON
    assert not [r for r in records if "Traceback" in json.dumps(r) or r.get("exception")]
    broken = [r for r in records if r["event"] == "ws_protocol_error"]
    assert sorted(r["code"] for r in broken) == sorted([1007, 1002, 1009, 1002] * ROUNDS)


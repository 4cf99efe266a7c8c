"""A small protocol-v1 test client: records every message with its arrival time."""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import soundfile as sf
import websockets

DATA = Path(__file__).resolve().parent / "data"
RATE = 16000
FRAME = RATE * 20 // 1000 * 2  # bytes per 20 ms frame


def wav(name: str) -> bytes:
    data, rate = sf.read(DATA / name, dtype="int16")
    assert rate == RATE
    return bytes(data.tobytes())


def silence(ms: int) -> bytes:
    return bytes(RATE * ms // 1000 * 2)


@dataclass
class Received:
    at: float
    event: dict[str, Any] | None = None
    audio: bytes | None = None


@dataclass
class VoiceClient:
    ws: Any
    log: list[Received] = field(default_factory=list)
    _reader: asyncio.Task[None] | None = None
    closed: asyncio.Event = field(default_factory=asyncio.Event)

    @classmethod
    async def connect(cls, url: str, **kwargs: Any) -> VoiceClient:
        ws = await websockets.connect(url, max_size=2**21, **kwargs)
        client = cls(ws)
        client._reader = asyncio.create_task(client._read())
        return client

    async def _read(self) -> None:
        try:
            async for message in self.ws:
                now = time.monotonic()
                if isinstance(message, bytes):
                    self.log.append(Received(now, audio=message))
                else:
                    self.log.append(Received(now, event=json.loads(message)))
        except websockets.ConnectionClosed:
            pass
        finally:
            self.closed.set()

    async def send_json(self, obj: dict[str, Any]) -> None:
        await self.ws.send(json.dumps(obj))

    async def stream(self, audio: bytes, speed: float = 1.0) -> float:
        """Send 20 ms frames at ``speed`` x real time; returns when the last one went."""
        start = time.monotonic()
        for i, off in enumerate(range(0, len(audio), FRAME)):
            delay = start + i * 0.02 / speed - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            await self.ws.send(audio[off : off + FRAME])
        return time.monotonic()

    def events(self, kind: str | None = None) -> list[dict[str, Any]]:
        return [r.event for r in self.log
                if r.event is not None and (kind is None or r.event["type"] == kind)]

    def types(self) -> list[str]:
        return [r.event["type"] if r.event else "<audio>" for r in self.log]

    async def wait_for(self, kind: str, timeout: float = 30.0, count: int = 1,
                       **match: Any) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = [e for e in self.events(kind)
                     if all(e.get(k) == v for k, v in match.items())]
            if len(found) >= count:
                return found[count - 1]
            if self.closed.is_set():
                break
            await asyncio.sleep(0.01)
        raise AssertionError(f"no {kind} {match} within {timeout}s; got {self.types()[-30:]}")

    def audio_between(self, start_kind: str, end_kind: str, response_id: str) -> bytes:
        out = bytearray()
        inside = False
        for r in self.log:
            if r.event and r.event.get("response_id") == response_id:
                if r.event["type"] == start_kind:
                    inside = True
                elif r.event["type"] == end_kind:
                    inside = False
            elif r.audio is not None and inside:
                out += r.audio
        return bytes(out)

    async def close(self) -> None:
        await self.ws.close()
        if self._reader:
            await self._reader

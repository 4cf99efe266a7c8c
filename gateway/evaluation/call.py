"""One scripted caller on the v1 WebSocket: a microphone that never stops, and a log.

The microphone sends a 20 ms frame every 20 ms, like a real one: silence, or the frames
of the clip being played. It stamps when each clip's first and last voiced frames went
out; the reader stamps every message that comes back.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import websockets

from gateway.evaluation.analysis import Rec
from gateway.evaluation.audio import FRAME_BYTES, FRAME_MS, RATE, Clip

CONNECT_TIMEOUT_S = 10.0
SEND_TIMEOUT_S = 5.0
MAX_MESSAGE = 2**21


@dataclass(frozen=True, slots=True)
class Played:
    first_voiced: float
    last_voiced: float


class Mic:
    def __init__(self, ws: Any) -> None:
        self._ws = ws
        self._pending: list[tuple[Clip, asyncio.Future[Played]]] = []
        self.max_lag_ms = 0.0  # the latest a frame went out after its time (a busy client)

    def play(self, clip: Clip) -> asyncio.Future[Played]:
        """Queue a clip; the future resolves once its last frame was sent."""
        done: asyncio.Future[Played] = asyncio.get_running_loop().create_future()
        self._pending.append((clip, done))
        return done

    async def run(self) -> None:
        start, i = time.monotonic(), 0
        clip: Clip | None = None
        done: asyncio.Future[Played] | None = None
        pos, first = 0, 0.0
        quiet = bytes(FRAME_BYTES)
        while True:
            if clip is None and self._pending:
                (clip, done), pos = self._pending.pop(0), 0
            frame = quiet if clip is None else clip.audio[pos * FRAME_BYTES:(pos + 1) * FRAME_BYTES]
            delay = start + i * FRAME_MS / 1000 - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            else:
                self.max_lag_ms = max(self.max_lag_ms, -delay * 1000)
            async with asyncio.timeout(SEND_TIMEOUT_S):
                await self._ws.send(frame)
            now, i = time.monotonic(), i + 1
            if clip is None or done is None:
                continue
            if pos == clip.first_voiced:
                first = now
            if pos == clip.last_voiced and not done.done():
                done.set_result(Played(first, now))
            pos += 1
            if pos >= clip.frames:
                clip = None


class Call:
    """A v1 voice session: ``async with Call.open(url, headers) as call: ...``."""

    def __init__(self, ws: Any) -> None:
        self.ws = ws
        self.log: list[Rec] = []
        self.mic = Mic(ws)
        self._new = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self.closed = False

    @classmethod
    @contextlib.asynccontextmanager
    async def open(cls, url: str, headers: dict[str, str]) -> Any:
        async with asyncio.timeout(CONNECT_TIMEOUT_S):
            ws = await websockets.connect(url, additional_headers=headers,
                                          max_size=MAX_MESSAGE, open_timeout=None)
        call = cls(ws)
        try:
            await ws.send(json.dumps({"type": "start", "sample_rate": RATE}))
            call._tasks = [asyncio.create_task(call._read()), asyncio.create_task(call.mic.run())]
            if await call.wait(lambda r: _type(r) == "session_started", CONNECT_TIMEOUT_S) is None:
                raise ConnectionError(f"no session_started; got {call.types()}")
            yield call
        finally:
            for task in call._tasks:
                task.cancel()
            await asyncio.gather(*call._tasks, return_exceptions=True)
            with contextlib.suppress(Exception):
                async with asyncio.timeout(5):
                    await ws.close()

    async def _read(self) -> None:
        try:
            async for message in self.ws:
                now = time.monotonic()
                if isinstance(message, bytes):
                    self.log.append(Rec(now, audio=len(message)))
                else:
                    self.log.append(Rec(now, event=json.loads(message)))
                self._new.set()
        except websockets.ConnectionClosed:
            pass
        finally:
            self.closed = True
            self._new.set()

    def types(self) -> list[str]:
        return [_type(r) or "<audio>" for r in self.log][-20:]

    async def wait(self, pred: Callable[[Rec], bool], timeout: float) -> Rec | None:
        """The first received message matching ``pred`` (already there or arriving in time)."""
        deadline = time.monotonic() + timeout
        seen = 0
        while True:
            for r in self.log[seen:]:
                if pred(r):
                    return r
            seen = len(self.log)
            left = deadline - time.monotonic()
            if left <= 0 or self.closed:
                return None
            self._new.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(left):
                    await self._new.wait()


def _type(r: Rec) -> str | None:
    return None if r.event is None else str(r.event.get("type"))

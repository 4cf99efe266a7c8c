"""The session's outgoing message queue: ordered, bounded, and purgeable on barge-in.

Events and reply audio share one queue so their order on the wire is the order the
pipeline produced them (``tts_start`` before the audio, ``interrupted`` after the
last chunk that was sent). On barge-in the queued audio of the interrupted response
is dropped before it reaches the socket.

Overflow policy: the client is not reading. The outbox is marked overflowed and the
transport closes the session; nothing blocks the pipeline.
"""

from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import dataclass

from gateway.errors import Closed

from .events import Event


@dataclass(frozen=True, slots=True)
class AudioOut:
    response_id: str
    pcm: bytes  # s16le at the session's output rate
    duration_ms: float


OutItem = Event | AudioOut


class OutboxClosed(Closed):
    """The client's socket has gone; nothing more is sent."""


class Outbox:
    def __init__(self, maxsize: int) -> None:
        self.maxsize = maxsize
        self._items: deque[OutItem] = deque()
        self._ready = asyncio.Event()
        self.closed = False
        self.overflowed = False

    def __len__(self) -> int:
        return len(self._items)

    def put(self, item: OutItem) -> None:
        if self.closed:
            return
        if len(self._items) >= self.maxsize:
            self.overflowed = True
            self.close()
            return
        self._items.append(item)
        self._ready.set()

    def purge_audio(self, response_id: str) -> float:
        """Drop queued audio of one response; returns how many ms were dropped."""
        kept: deque[OutItem] = deque()
        dropped = 0.0
        for item in self._items:
            if isinstance(item, AudioOut) and item.response_id == response_id:
                dropped += item.duration_ms
            else:
                kept.append(item)
        self._items = kept
        return dropped

    async def get(self) -> OutItem:
        while not self._items:
            if self.closed:
                raise OutboxClosed
            self._ready.clear()
            await self._ready.wait()
        return self._items.popleft()

    def take_all(self) -> list[OutItem]:
        """Everything queued now, in order (the writer sends it in one go)."""
        items = list(self._items)
        self._items.clear()
        return items

    def close(self) -> None:
        self.closed = True
        self._ready.set()

"""A real uvicorn server for an ASGI app, in a background thread on 127.0.0.1.

Base of the local vendor stand-ins (ElevenLabs, hybrid backend): real sockets, real HTTP
and WebSocket framing, so the official clients run their whole stack against them.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from types import TracebackType
from typing import Any

import uvicorn
from fastapi import Request


class ThreadedServer:
    """Subclasses build ``self.app`` and call ``super().__init__()`` first."""

    thread_name = "local-test-server"

    def __init__(self) -> None:
        self._sock: socket.socket | None = None
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._release: asyncio.Event | None = None
        self.hang_cap_s = 30.0

    @property
    def port(self) -> int:
        if self._sock is None:
            raise RuntimeError("server not started")
        return int(self._sock.getsockname()[1])

    def start(self, app: Any, timeout: float = 5.0) -> None:
        # IPPROTO_TCP: asyncio sets TCP_NODELAY on accepted sockets only then.
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        self._sock.bind(("127.0.0.1", 0))
        config = uvicorn.Config(app, loop="asyncio", http="h11", ws="websockets-sansio",
                                lifespan="off", log_level="warning", access_log=False,
                                timeout_graceful_shutdown=1)
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._run, name=self.thread_name, daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError(f"{self.thread_name} did not start")
            time.sleep(0.01)

    def _run(self) -> None:
        asyncio.run(self._serve())

    async def _serve(self) -> None:
        assert self._server is not None and self._sock is not None
        self._loop, self._release = asyncio.get_running_loop(), asyncio.Event()
        await self._server.serve(sockets=[self._sock])

    def stop(self) -> None:
        self.release_hung()
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=5.0)
        if self._sock is not None:
            self._sock.close()
        self._server = self._thread = self._sock = None
        self._loop = None

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    # --- hanging handlers ---------------------------------------------------------------

    def release_hung(self) -> None:
        """Let every hanging or stalled handler return (their clients are gone)."""
        loop = self._loop
        if loop is not None and not loop.is_closed():
            try:
                loop.call_soon_threadsafe(self._swap_release)
            except RuntimeError:
                pass

    def _swap_release(self) -> None:
        old, self._release = self._release, asyncio.Event()
        if old is not None:
            old.set()

    async def wait_released(self) -> bool:
        """Hang until released by the test (True) or the cap passes (False)."""
        assert self._release is not None
        try:
            async with asyncio.timeout(self.hang_cap_s):
                await self._release.wait()
            return True
        except TimeoutError:
            return False

    async def hang(self, request: Request) -> None:
        """Send nothing until the client goes away or the test releases the handler."""
        async def gone() -> None:
            while (await request.receive())["type"] != "http.disconnect":
                pass

        poll = asyncio.create_task(gone())
        release = asyncio.create_task(self.wait_released())
        _, pending = await asyncio.wait({poll, release}, return_when=asyncio.FIRST_COMPLETED)
        for task in pending:
            task.cancel()

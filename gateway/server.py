"""Run the app on uvicorn with WebSocket limits set (uvicorn's defaults allow 16 MiB)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
from collections.abc import Callable
from typing import Any

import structlog
import uvicorn
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol

from gateway.app import create_app
from gateway.config import Config
from gateway.logs import configure_logging
from gateway.transports.websocket import BINARY_SINK

log = structlog.get_logger("gateway.server")


# Messages a WebSocket may have waiting for the app before reading from it pauses.
WS_QUEUE_HIGH = 16


class WebSocketProtocol(WebSocketsSansIOProtocol):
    """uvicorn's sans-I/O WebSocket protocol, made cheaper per audio frame.

    Stock, it pauses the socket after every message and resumes it when the app takes
    the message: two epoll_ctl calls per frame, about a tenth of the gateway's CPU at
    hundreds of sessions. Here reading pauses once WS_QUEUE_HIGH messages wait (each at
    most ``ws_max_size``) and resumes when the app has taken them all, so memory stays
    bounded and a client that floods still gets backpressure. And an app may take
    binary messages through a direct callback (``BINARY_SINK``).
    """

    binary_sink: Callable[[bytes], None] | None = None

    def handle_connect(self, event: Any) -> None:
        super().handle_connect(event)
        scope = getattr(self, "scope", None)  # absent when the handshake was refused
        if scope is not None:
            scope["extensions"][BINARY_SINK] = self._set_sink  # type: ignore[index]

    def _set_sink(self, sink: Callable[[bytes], None] | None) -> None:
        self.binary_sink = sink

    def send_receive_event_to_app(self) -> None:
        sink = self.binary_sink
        if (sink is not None and self.curr_msg_data_type == "bytes" and not self.close_sent
                and self.queue.empty()):
            data = self.frames[0] if len(self.frames) == 1 else b"".join(self.frames)
            self.frames = []
            try:
                sink(data)
            except Exception:  # the sink's bug must not take the connection's reader
                log.exception("binary_sink_failed")
                self.binary_sink = None
            return
        if self.read_paused or self.queue.qsize() >= WS_QUEUE_HIGH - 1:
            super().send_receive_event_to_app()  # pauses reading, as stock
            return
        self.read_paused = True  # so the stock method queues without pausing
        try:
            super().send_receive_event_to_app()
        finally:
            self.read_paused = False


def uvicorn_config(cfg: Config, app: Any) -> uvicorn.Config:
    return uvicorn.Config(
        app,
        host=cfg.server.host,
        port=cfg.server.port,
        # The sans-I/O implementation (cheaper than the legacy one), with reads paused
        # only when the app falls behind. No per-message deflate: audio does not
        # compress, and it doubled the memory per socket.
        ws=WebSocketProtocol,
        ws_per_message_deflate=False,
        ws_max_size=cfg.server.max_message_bytes,
        ws_ping_interval=20.0,
        ws_ping_timeout=20.0,
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=int(cfg.server.session_close_timeout_s),
        lifespan="on",
    )


class DrainingServer(uvicorn.Server):
    """On shutdown, lets live voice sessions finish their reply and closes them with 1001.

    Plain uvicorn closes every WebSocket at once with 1012, cutting replies mid-word.
    """

    def __init__(self, config: uvicorn.Config, app: Any) -> None:
        super().__init__(config)
        self.gateway_app = app

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        for server in self.servers:
            server.close()  # no new connections while draining
        registry = getattr(self.gateway_app.state, "sessions", None)
        if registry is not None:
            await registry.drain(self.config.timeout_graceful_shutdown or 5)
        await super().shutdown(sockets)


def make_server(cfg: Config, app: Any) -> DrainingServer:
    return DrainingServer(uvicorn_config(cfg, app), app)


def serve(cfg: Config) -> None:
    configure_logging(cfg)
    if cfg.server.workers <= 1:
        make_server(cfg, create_app(cfg)).run()
        return
    serve_prefork(cfg)


def serve_prefork(cfg: Config) -> None:
    """Several worker processes on one listening socket (one event loop per core).

    The parent binds, prepares the database once, forks, and forwards SIGTERM/SIGINT;
    each child loads its own models and runs the usual server (drain on shutdown
    included). Sessions are independent, so the kernel's accept spreading is enough.
    In-memory rate limits are then per worker: use Redis to share them.
    """
    asyncio.run(_prepare(cfg))
    sock = socket.create_server((cfg.server.host, cfg.server.port), backlog=2048)
    sock.set_inheritable(True)
    children: list[int] = []
    for _ in range(cfg.server.workers):
        pid = os.fork()
        if pid == 0:  # the worker
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            make_server(cfg, create_app(cfg)).run(sockets=[sock])
            os._exit(0)
        children.append(pid)
    log.info("workers_started", pids=children, port=cfg.server.port)

    def forward(signum: int, _frame: Any) -> None:
        for child in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(child, signal.SIGTERM)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    for child in children:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(child, 0)
    sock.close()


async def _prepare(cfg: Config) -> None:
    """Migrations, the default assistant and the token secret: once, before forking."""
    from gateway.api.auth import load_token_secret
    from gateway.store.assistants import ensure_default_assistant
    from gateway.store.db import Database

    db = Database.from_config(cfg)
    try:
        await db.migrate()
        await ensure_default_assistant(db, cfg)
    finally:
        await db.close()
    load_token_secret(cfg)

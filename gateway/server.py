"""Run the app on uvicorn with WebSocket limits set (uvicorn's defaults allow 16 MiB)."""

from __future__ import annotations

import socket
from typing import Any

import uvicorn

from gateway.app import create_app
from gateway.config import Config
from gateway.logs import configure_logging


def uvicorn_config(cfg: Config, app: Any) -> uvicorn.Config:
    return uvicorn.Config(
        app,
        host=cfg.server.host,
        port=cfg.server.port,
        # The sans-I/O implementation pauses reading until the app takes each message:
        # real backpressure, and cheaper than the legacy one. No per-message deflate:
        # audio does not compress, and it doubled the memory per socket.
        ws="websockets-sansio",
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
    make_server(cfg, create_app(cfg)).run()

"""Run the app on uvicorn with WebSocket limits set (uvicorn's defaults allow 16 MiB)."""

from __future__ import annotations

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
        ws="websockets",
        ws_max_size=cfg.server.max_message_bytes,
        ws_max_queue=cfg.server.ws_max_queue,
        ws_ping_interval=20.0,
        ws_ping_timeout=20.0,
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=int(cfg.server.session_close_timeout_s),
        lifespan="on",
    )


def serve(cfg: Config) -> None:
    configure_logging(cfg)
    server = uvicorn.Server(uvicorn_config(cfg, create_app(cfg)))
    server.run()

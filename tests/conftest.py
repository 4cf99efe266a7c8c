"""Shared fixtures: the embedded models (loaded once), and real gateway servers.

A gateway server here is the real ASGI app on a real uvicorn with real sockets on
127.0.0.1, in a background thread with its own event loop. Models are loaded once per
test run and injected, so each server starts in milliseconds.
"""

from __future__ import annotations

import asyncio
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from gateway.app import create_app
from gateway.config import Config
from gateway.providers import registry
from gateway.server import make_server

TESTS = Path(__file__).resolve().parent
DATA = TESTS / "data"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def models() -> dict[str, Any]:
    """The embedded offline providers, loaded once for the whole run."""
    cfg = Config()
    return {
        "vad": registry.create("vad", "webrtcvad", cfg),
        "stt": registry.create("stt", "whisper", cfg),
        "tts": registry.create("tts", "piper", cfg),
    }


@dataclass
class RunningGateway:
    cfg: Config
    app: Any
    server: Any
    thread: threading.Thread

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.cfg.server.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.cfg.server.port}/api/v1/voice/ws"

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=15)


def start_gateway(cfg: Config, providers: dict[str, Any]) -> RunningGateway:
    app = create_app(cfg, providers=providers)
    server = make_server(cfg, app)
    server.install_signal_handlers = lambda: None  # type: ignore[method-assign]
    thread = threading.Thread(target=lambda: asyncio.run(server.serve()), daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("gateway did not start")
        time.sleep(0.02)
    return RunningGateway(cfg, app, server, thread)


@pytest.fixture
def gateway_factory(
    tmp_path: Path, models: dict[str, Any]
) -> Iterator[Callable[..., RunningGateway]]:
    """Start gateways with config overrides: ``gateway_factory(llm={...}, providers={...})``."""
    running: list[RunningGateway] = []

    def make(providers: dict[str, Any] | None = None, **sections: dict[str, Any]) -> RunningGateway:
        server = {"port": free_port(), "data_dir": str(tmp_path / f"data{len(running)}"),
                  "log_level": "warning", **sections.pop("server", {})}
        base = {"llm": {"provider": "extractive"},
                "knowledge": {"path": str(DATA / "knowledge")}}
        for key, value in sections.items():
            base[key] = {**base.get(key, {}), **value}
        cfg = Config().replace(server=server, **base)
        injected = dict(models)
        injected["llm"] = registry.create("llm", cfg.llm.provider, cfg)
        injected.update(providers or {})
        gw = start_gateway(cfg, injected)
        running.append(gw)
        return gw

    yield make
    for gw in running:
        gw.stop()


@pytest.fixture
def gateway(gateway_factory: Callable[..., RunningGateway]) -> RunningGateway:
    return gateway_factory()

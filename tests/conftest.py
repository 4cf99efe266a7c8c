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

from leakcheck import client_errors  # noqa: F401  (autouse: no error leaks internals)
from testdb import BACKENDS, TestDatabases, selected_backend

from gateway.app import create_app
from gateway.config import Config
from gateway.providers import registry
from gateway.providers.smart_turn import SmartTurn
from gateway.server import make_server

TESTS = Path(__file__).resolve().parent
DATA = TESTS / "data"
# The backend gateway servers use: GATEWAY_TEST_DB=sqlite (default) or postgres.
TEST_DB = selected_backend()


def pytest_report_header() -> str:
    return f"gateway test database: {TEST_DB}"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The PostgreSQL run keeps the tests that use a database (GATEWAY_TEST_ALL=1: all).

    A test uses one through ``test_databases`` (``gateway_factory``, ``database_url``,
    ``new_database_url``); the others, and the SQLite cases of tests parametrized over
    both backends, ran in the SQLite run already and cannot depend on the backend.
    """
    if TEST_DB != "postgres" or os.environ.get("GATEWAY_TEST_ALL", "") not in ("", "0"):
        return
    keep: list[pytest.Item] = []
    for item in items:
        callspec = getattr(item, "callspec", None)
        params = callspec.params.values() if callspec is not None else ()
        uses_db = "test_databases" in getattr(item, "fixturenames", ())
        (keep if uses_db and "sqlite" not in params and _about_the_database(item)
         else []).append(item)
    if len(keep) < len(items):
        config.hook.pytest_deselected(items=[i for i in items if i not in keep])
        items[:] = keep


# Voice, provider and page tests start a gateway (so they have a database) but test the
# audio path: a turn is stored by the same turn writer whatever the backend, and that
# writer is tested on PostgreSQL in api/, store/ and by @pytest.mark.postgres tests here.
_AUDIO_PATH_DIRS = frozenset({"transports", "providers", "web", "pipeline", "evaluation",
                              "audio", "protocol"})


def _about_the_database(item: pytest.Item) -> bool:
    """Whether the PostgreSQL run keeps ``item`` (see _AUDIO_PATH_DIRS)."""
    if item.get_closest_marker("postgres") is not None:
        return True
    parts = Path(str(item.fspath)).relative_to(TESTS).parts
    return not (len(parts) > 1 and parts[0] in _AUDIO_PATH_DIRS)


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
        # As the runtime loads it: turn-taking's decodes on the quick model ([stt]).
        "stt_quick": registry.create(
            "stt", "whisper", registry.with_model(cfg, "stt", "whisper", cfg.stt.quick_model)),
        "tts": registry.create("tts", "piper", cfg),
        "turn": SmartTurn.from_config(cfg),
        "embedder": registry.create("embedder", "minilm", cfg),
    }


@pytest.fixture(scope="session")
def test_databases() -> Iterator[TestDatabases]:
    dbs = TestDatabases()
    yield dbs
    dbs.drop_all()


@pytest.fixture(params=BACKENDS)
def database_url(
    request: pytest.FixtureRequest, tmp_path: Path, test_databases: TestDatabases
) -> Iterator[str]:
    """A new, empty database on each backend (SQLite file, fresh PostgreSQL database)."""
    url = test_databases.new_url(request.param, tmp_path / f"db-{request.param}")
    yield url
    test_databases.drop(url)


@pytest.fixture
def new_database_url(
    tmp_path: Path, test_databases: TestDatabases
) -> Iterator[Callable[..., str]]:
    """``new_database_url(backend=TEST_DB)``: more empty databases, dropped after the test."""
    made: list[str] = []

    def make(backend: str = TEST_DB) -> str:
        url = test_databases.new_url(backend, tmp_path / f"newdb{len(made)}")
        made.append(url)
        return url

    yield make
    for url in made:
        test_databases.drop(url)


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
    tmp_path: Path, models: dict[str, Any], test_databases: TestDatabases
) -> Iterator[Callable[..., RunningGateway]]:
    """Start gateways with config overrides: ``gateway_factory(llm={...}, providers={...})``.

    Each gateway gets its own database on the selected backend (with PostgreSQL, a fresh
    database), unless ``database={"url": ...}`` is given, e.g. to share one between two.
    """
    running: list[RunningGateway] = []
    databases: list[str] = []

    def make(providers: dict[str, Any] | None = None, **sections: dict[str, Any]) -> RunningGateway:
        # A short drain: stopping a gateway waits for live sessions up to the deadline.
        server = {"port": free_port(), "data_dir": str(tmp_path / f"data{len(running)}"),
                  "log_level": "warning", "drain_timeout_s": 0.5, **sections.pop("server", {})}
        base: dict[str, dict[str, Any]] = {"llm": {"provider": "extractive"},
                                           "knowledge": {"path": str(DATA / "knowledge")}}
        if TEST_DB == "postgres" and "database" not in sections:
            databases.append(test_databases.new_url("postgres", tmp_path))
            base["database"] = {"url": databases[-1]}
        for key, value in sections.items():
            base[key] = {**base.get(key, {}), **value}
        cfg = Config().replace(server=server, **base)
        injected = dict(models)
        injected["llm"] = registry.create("llm", cfg.llm.provider, cfg)
        if providers and "stt" in providers and "stt_quick" not in providers:
            injected.pop("stt_quick")  # a test's own STT decodes everything
        injected.update(providers or {})
        gw = start_gateway(cfg, injected)
        running.append(gw)
        return gw

    yield make
    for gw in running:
        gw.stop()
    for url in databases:
        test_databases.drop(url)


@pytest.fixture
def gateway(gateway_factory: Callable[..., RunningGateway]) -> RunningGateway:
    return gateway_factory()

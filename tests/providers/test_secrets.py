"""Secrets never leak: a real gateway process with fake keys, upstreams that reject them.

The gateway runs as ``python -m gateway serve`` with an OpenAI key in its environment and
the ElevenLabs key, the hybrid backend's token, a hybrid header and the token-signing
secret in a secrets file (mode 600). Every cloud provider points at a local wire-format
server that answers 401 quoting the key it got, as a careless upstream might (the hybrid
backend takes its token, then fails with a 500 that quotes it).
Voice turns, an HTTP chat, an upload transcription and the health and config endpoints
are driven; then the captured log and every HTTP body and WebSocket message are searched
for the secrets: none may appear, not even their tails.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from elevenlabs_server import LocalElevenLabsServer
from hybrid_server import LocalHybridServer
from openai_server import LocalOpenAIServer
from voice_client import VoiceClient, silence, wav

from gateway.audio import pcm
from gateway.protocol.errors import PROVIDER_MESSAGES

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "tests" / "data"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def fake(prefix: str) -> str:
    return f"{prefix}-FAKE-{secrets.token_hex(12)}"


KEYS = {
    "openai": fake("sk-proj"),  # in the environment (OPENAI_API_KEY)
    "elevenlabs": fake("xi"),  # in the secrets file (ELEVENLABS_API_KEY)
    "hybrid": fake("hyb"),  # in the secrets file (GATEWAY_HYBRID__API_KEY)
    "header": fake("hdr"),  # in the secrets file (a hybrid header's value)
    "token_secret": fake("tok"),  # in the secrets file (GATEWAY_AUTH__TOKEN_SECRET)
}


class Gateway:
    def __init__(self, tmp: Path, env: dict[str, str]) -> None:
        self.port = free_port()
        self.log = tmp / "gateway.log"
        env = {**env, "GATEWAY_SERVER__PORT": str(self.port)}
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen([sys.executable, "-m", "gateway", "serve"], env=env,
                                         cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 90
        while True:
            try:
                if httpx.get(f"{self.base}/api/health", timeout=2).status_code < 500:
                    return
            except httpx.HTTPError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"gateway did not start:\n{self.log.read_text()[-3000:]}")
            time.sleep(0.1)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)


@pytest.fixture
def servers(openai_server: LocalOpenAIServer, elevenlabs_server: LocalElevenLabsServer,
            hybrid_server: LocalHybridServer) -> Iterator[tuple]:
    for server in (openai_server, elevenlabs_server):
        server.echo_key_in_errors = True  # their 401s quote the key they got
    # The backend takes the token, then fails with a 500 that quotes it: scrubbed.
    hybrid_server.token = KEYS["hybrid"]
    hybrid_server.behaviour = "server_error"
    hybrid_server.echo_token_in_errors = True
    yield openai_server, elevenlabs_server, hybrid_server


@pytest.fixture
def secret_gateway(tmp_path: Path, servers: tuple) -> Iterator[Gateway]:
    openai_srv, eleven, hybrid = servers
    secrets_file = tmp_path / "gateway.secrets"
    secrets_file.write_text(
        "# secrets for the gateway\n"
        f"ELEVENLABS_API_KEY={KEYS['elevenlabs']}\n"
        f"export GATEWAY_HYBRID__API_KEY=\"{KEYS['hybrid']}\"\n"
        f"GATEWAY_HYBRID__HEADERS=X-Backend-Secret: {KEYS['header']}\n"
        f"GATEWAY_AUTH__TOKEN_SECRET={KEYS['token_secret']}\n")
    secrets_file.chmod(0o600)
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("GATEWAY_") and k not in ("OPENAI_API_KEY", "ELEVENLABS_API_KEY")}
    env.update({
        "HF_HUB_OFFLINE": "1", "OPENAI_API_KEY": KEYS["openai"],
        "GATEWAY_SECRETS__FILE": str(secrets_file),
        "GATEWAY_SERVER__DATA_DIR": str(tmp_path / "data"),
        "GATEWAY_SERVER__LOG_LEVEL": "debug", "GATEWAY_SERVER__LOG_FORMAT": "json",
        "GATEWAY_KNOWLEDGE__PATH": str(DATA / "knowledge"),
        "GATEWAY_STT__PROVIDER": "openai", "GATEWAY_OPENAI__BASE_URL": openai_srv.base_url,
        "GATEWAY_OPENAI__MAX_RETRIES": "0",
        "GATEWAY_LLM__PROVIDER": "hybrid", "GATEWAY_LLM__FALLBACKS": "extractive",
        "GATEWAY_HYBRID__URL": hybrid.url,
        "GATEWAY_TTS__PROVIDER": "elevenlabs", "GATEWAY_ELEVENLABS__BASE_URL": eleven.base_url,
        "GATEWAY_ELEVENLABS__WS_URL": eleven.ws_url,
    })
    gw = Gateway(tmp_path, env)
    yield gw
    gw.stop()


async def voice_turns(gw: Gateway) -> list[str]:
    """A spoken turn (STT fails) and a typed one (LLM and TTS fail); every message."""
    client = await VoiceClient.connect(f"ws://127.0.0.1:{gw.port}/api/v1/voice/ws")
    await client.wait_for("session_started")
    await client.stream(wav("what_is_the_gateway.wav") + silence(600), speed=3.0)
    await client.wait_for("error", timeout=20)
    await client.send_json({"type": "text", "text": "What is the gateway?"})
    await client.wait_for("stream_end", timeout=20)
    await client.close()
    return [json.dumps(r.event) for r in client.log if r.event is not None]


async def http_requests(gw: Gateway) -> list[httpx.Response]:
    upload = pcm.wav_bytes(wav("hello_weather.wav"), 16000)
    async with httpx.AsyncClient(base_url=gw.base, timeout=20) as http:
        return [
            await http.post("/api/chat", json={"message": "What is the gateway?"}),
            await http.post("/api/chat?stream=true", json={"message": "What is the gateway?"}),
            await http.post("/api/transcribe", files={"audio": ("a.wav", upload, "audio/wav")}),
            await http.get("/api/health"),
            await http.get("/api/websocket/config"),
        ]


def leaks(text: str) -> list[str]:
    """Which secrets (or their last 12 characters) appear in ``text``."""
    return [name for name, key in KEYS.items() if key in text or key[-12:] in text]


async def test_no_secret_in_logs_or_responses(secret_gateway: Gateway, servers: tuple) -> None:
    gateway = secret_gateway
    openai_srv, eleven, hybrid = servers
    messages = await voice_turns(gateway)
    responses = await http_requests(gateway)
    gateway.stop()
    log = gateway.log.read_text(errors="replace")

    # The keys were loaded (environment and secrets file) and really sent upstream...
    assert openai_srv.requests[0].headers["authorization"] == f"Bearer {KEYS['openai']}"
    assert any(r.headers.get("xi-api-key") == KEYS["elevenlabs"] for r in eleven.requests)
    assert hybrid.last["headers"]["authorization"] == f"Bearer {KEYS['hybrid']}"
    assert hybrid.last["headers"]["x-backend-secret"] == KEYS["header"]
    # ...every upstream refused them, and the failures were reported and logged.
    errors = [json.loads(m) for m in messages if '"error"' in m]
    by_message = {message: stage for stage, message in PROVIDER_MESSAGES.items()}
    stages = {by_message.get(e["message"]) for e in errors if e.get("code") == "PROVIDER_ERROR"}
    assert {"stt", "tts"} <= stages, errors
    assert responses[0].status_code == 200  # the extractive fallback answered the chat
    assert responses[2].status_code == 502 and "PROVIDER_ERROR" in responses[2].text
    for stage in ("stt", "llm", "tts"):
        assert f'"stage": "{stage}"' in log and "provider_failed" in log, log[-2000:]
    assert "HTTP 500: database unavailable (token ***)" in log  # the backend's quote, masked

    # None of it carries a secret.
    assert leaks(log) == [], "secret in the gateway log"
    for message in messages:
        assert leaks(message) == [], message
    for rsp in responses:
        assert leaks(rsp.text) == [] and leaks(str(rsp.headers)) == [], rsp.text[:500]

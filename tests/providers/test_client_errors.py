"""Issue 9 reproduced: upstreams that fail with internals in their answers, and what
the client reads of it on every path (v1 and Realtime events, /api/chat and its SSE,
/api/chat/voice, /api/transcribe, the knowledge-base query): the stage's fixed
message. The details are in the server log, bound to the session id. The autouse
``client_errors`` check (tests/leakcheck.py) inspects everything these servers sent.
"""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Any

import httpx
import structlog
import websockets
from openai_server import INTERNAL_TRACEBACK
from test_failover import openai_llm
from voice_client import VoiceClient

from gateway.protocol import errors
from gateway.providers.openai_stt import OpenAISTT
from gateway.providers.openai_tts import OpenAITTS
from gateway.store.db import Database
from gateway.store.keys import KeyStore

LLM_DOWN = errors.provider_message("llm")
DATA = Path(__file__).resolve().parents[1] / "data"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def text_turn(url: str, text: str = "What is the gateway?") -> VoiceClient:
    client = await VoiceClient.connect(url)
    await client.wait_for("session_started")
    await client.send_json({"type": "text", "text": text})
    await client.wait_for("error", timeout=30)
    await client.close()
    return client


async def api_key(gw: Any) -> str:
    db = Database.from_config(gw.cfg)
    _, key = await KeyStore(db).create("faults")
    await db.close()
    return key


async def realtime_error(gw: Any, key: str) -> dict[str, Any]:
    url = f"ws://127.0.0.1:{gw.cfg.server.port}/v1/realtime?model=gpt-realtime"
    async with websockets.connect(url, additional_headers={"Authorization": f"Bearer {key}"}
                                  ) as ws:
        await ws.send(json.dumps({"type": "conversation.item.create", "item": {
            "type": "message", "role": "user",
            "content": [{"type": "input_text", "text": "What is the gateway?"}]}}))
        await ws.send(json.dumps({"type": "response.create",
                                  "response": {"output_modalities": ["text"]}}))
        while True:
            event = json.loads(await ws.recv())
            if event["type"] == "error":
                return dict(event["error"])


async def test_an_llm_answering_500_with_a_traceback(gateway_factory, openai_server,
                                                     client_errors) -> None:
    gw = gateway_factory(providers={"llm": [openai_llm(openai_server, "traceback")]})
    with structlog.testing.capture_logs() as logs:
        client = await text_turn(gw.ws_url)
    [err] = client.events("error")
    assert err == {"type": "error", "code": "PROVIDER_ERROR", "message": LLM_DOWN,
                   "retryable": True}
    # The details went to the log, with the session they belong to.
    session_id = client.events("session_started")[0]["session_id"]
    logged = [e for e in logs if e["event"] == "provider_error"]
    assert logged and logged[0]["session_id"] == session_id and logged[0]["stage"] == "llm"
    assert "worker.py" in logged[0]["error"]
    assert openai_server.requests[-1].behaviour == "traceback"

    key = await api_key(gw)
    assert (await realtime_error(gw, key))["message"] == LLM_DOWN
    async with httpx.AsyncClient(base_url=gw.base, timeout=60,
                                 headers={"Authorization": f"Bearer {key}"}) as http:
        chat = await http.post("/api/chat", json={"message": "What is the gateway?"})
        assert chat.status_code == 502
        assert chat.json()["error"] == {"code": "PROVIDER_ERROR", "message": LLM_DOWN}
        async with http.stream("POST", "/api/chat?stream=true",
                               json={"message": "What is the gateway?"}) as sse:
            body = (await sse.aread()).decode()
        assert f'"message":"{LLM_DOWN}"' in body.replace(": ", ":")
        query = await http.post("/api/v1/chat/query", json={
            "chatModelId": "default", "query": "What is the gateway?"})
        assert query.status_code == 502
        assert query.json()["error"]["message"] == LLM_DOWN
    # Every one of them was seen at the wire (and checked for internals after the test).
    seen = [text for _, text in client_errors.errors]
    assert seen.count(LLM_DOWN) >= 5, client_errors.errors
    assert INTERNAL_TRACEBACK[:40] in "".join(client_errors.raised)


async def test_tts_at_a_closed_port_and_a_failing_stt(gateway_factory, openai_server,
                                                      client_errors) -> None:
    dead = f"http://127.0.0.1:{free_port()}/v1"
    tts = OpenAITTS(base_url=dead, model="gpt-4o-mini-tts", api_key="sk-test",
                    connect_timeout_s=1.0, max_retries=0)
    stt = OpenAISTT(base_url=openai_server.base_url, model="traceback",
                    api_key=openai_server.api_key, stream=False, max_retries=0)
    gw = gateway_factory(providers={"tts": [tts], "stt": [stt]})
    client = await text_turn(gw.ws_url)
    err = client.events("error")[0]
    assert (err["code"], err["message"]) == ("PROVIDER_ERROR", errors.provider_message("tts"))
    async with httpx.AsyncClient(base_url=gw.base, timeout=60) as http:
        upload = (DATA / "what_is_the_gateway.wav").read_bytes()
        heard = await http.post("/api/transcribe",
                                files={"audio": ("a.wav", upload, "audio/wav")})
        assert heard.status_code == 502
        assert heard.json()["error"]["message"] == errors.provider_message("stt")
    seen = [text for _, text in client_errors.errors]
    assert errors.provider_message("tts") in seen and errors.provider_message("stt") in seen
    assert any("ConnectError" in r for r in client_errors.raised)  # what stays inside

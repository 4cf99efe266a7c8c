"""One session host for every transport: a spoken turn over each of the four (v1
WebSocket, Twilio, the OpenAI Realtime endpoint with the official ``openai`` client,
WebRTC with aiortc) is answered with its assistant's voice, language, prompt and tools,
and stored — the user's words, the reply as heard, its sources — with its transport.

The LLM is OpenAILLM against the local OpenAI-format server (it records the prompt and
the tools it was offered, and calls the first tool); Whisper and Piper are the real
models, wrapped to record the language and voice each call asked for.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "api"))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "providers"))
from chat_helpers import make_key
from openai_server import LocalOpenAIServer
from test_realtime import Recorder, speech
from test_twilio import PhoneCall, stream_url, twiml_token
from test_voice_tools import tool_gateway
from test_webrtc import LOOPBACK, Peer
from voice_client import VoiceClient, silence, wav

ASSISTANT = "concierge"
VOICE = "concierge_voice"
LANGUAGE = "en-GB"
PROMPT = "You are {assistant_name}, the front desk of the {hotel}."
# What the LLM is told: the assistant's own prompt, or its template (which comes first).
TOLD = {"prompt": "You are Concierge, the front desk of the Harbour Hotel.",
        "template": "You are Concierge, a friendly customer support agent for the Harbour "
                    "Hotel. Be patient and polite"}
KB = "The gateway is a voice server for browsers and kiosks."


class VoiceBank:
    """Piper under a second voice name: records the voice each sentence asked for."""

    def __init__(self, piper: Any) -> None:
        self.piper = piper
        self.voices = (piper.voice, VOICE)
        self.asked: list[str | None] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.piper, name)

    def synthesize(self, text: str, *, voice: str | None = None) -> Any:
        self.asked.append(voice)
        return self.piper.synthesize(text)


class Languages:
    """Whisper (English) that records the language each transcription asked for."""

    def __init__(self, whisper: Any) -> None:
        self.whisper = whisper
        self.asked: list[str | None] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.whisper, name)

    def transcribe(self, pcm16k: bytes, *, language: str | None = None) -> str:
        self.asked.append(language)
        text: str = self.whisper.transcribe(pcm16k, language=(language or "en")[:2])
        return text


@pytest.fixture(scope="module")
def upstream() -> Iterator[LocalOpenAIServer]:
    with LocalOpenAIServer() as server:
        yield server


@pytest.fixture
def recording(models: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield {"tts": VoiceBank(models["tts"]), "stt": Languages(models["stt"])}


async def concierge(gw: Any, prompt: str) -> str:
    """The assistant under test, through the assistants API (its prompt, or a template
    beside it); an API key bound to it."""
    template = {"template_name": "customer_support_assistant"} if prompt == "template" else {}
    admin = await make_key(gw)
    async with httpx.AsyncClient(base_url=gw.base, timeout=30,
                                 headers={"Authorization": f"Bearer {admin}"}) as http:
        resp = await http.post("/api/v1/assistants", json={
            "id": ASSISTANT, "name": "Concierge", "system_prompt": PROMPT, "voice": VOICE,
            **template, "template_variables": {"hotel": "Harbour Hotel",
                                               "company_name": "the Harbour Hotel"},
            "language": LANGUAGE, "tools": ["get_current_datetime"],
            "documents": [{"title": "About the gateway", "content": KB}]})
    assert resp.status_code in (200, 201), resp.text
    return await make_key(gw, ASSISTANT)


async def stored_turn(gw: Any, key: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The conversation the turn went into (polled: turns are written in batches)."""
    async with httpx.AsyncClient(base_url=gw.base, timeout=30,
                                 headers={"Authorization": f"Bearer {key}"}) as http:
        deadline = time.monotonic() + 10
        while True:
            convs = (await http.get("/api/conversations")).json()["conversations"]
            if convs:
                conv = convs[0]
                page = (await http.get(f"/api/conversation/{conv['id']}/messages")).json()
                if len(page["messages"]) >= 2:
                    return conv, page["messages"]
            assert time.monotonic() < deadline, f"nothing stored: {convs}"
            await asyncio.sleep(0.1)


async def v1_turn(gw: Any, key: str) -> str:
    client = await VoiceClient.connect(gw.ws_url,
                                       additional_headers={"Authorization": f"Bearer {key}"})
    await client.wait_for("session_started")
    await client.stream(wav("what_is_the_gateway.wav") + silence(600), speed=3.0)
    await client.wait_for("stream_end", timeout=90)
    await client.close()
    reply: str = client.events("agent_response")[0]["text"]
    return reply


async def twilio_turn(gw: Any, key: str) -> str:
    token = await twiml_token(gw, key)
    async with websockets.connect(stream_url(gw)) as ws:
        call = PhoneCall(ws)
        await call.start({"token": token})
        await call.speak(wav("what_is_the_gateway.wav") + silence(700))
        deadline = time.monotonic() + 90
        while not any(m["mark"]["name"].endswith(":end") for m in call.events("mark")):
            assert time.monotonic() < deadline, "the reply did not end"
            await asyncio.sleep(0.05)
        session = next(iter(gw.app.state.sessions.live.values())).conn.session
        reply = session.history[-1].content  # a phone shows no text: the words it played
        await call.send("stop", stop={"accountSid": "AC1", "callSid": "CA1"})
    return str(reply)


REALTIME_SESSION = {
    "type": "realtime",
    "audio": {
        "input": {"format": {"type": "audio/pcm", "rate": 24000},
                  "transcription": {"model": "whisper-1"},
                  "turn_detection": {"type": "server_vad", "silence_duration_ms": 500}},
        "output": {"format": {"type": "audio/pcm", "rate": 24000}},
    },
}


async def realtime_turn(gw: Any, key: str) -> str:
    from openai import AsyncOpenAI

    api = AsyncOpenAI(base_url=f"{gw.base}/v1", api_key=key)
    async with api.realtime.connect(model="gpt-realtime") as conn:
        rec = Recorder(conn)
        created = await rec.wait("session.created")
        told = created.session.instructions  # the assistant's, not the gateway's
        assert told.startswith(TOLD["prompt"]) or told.startswith(TOLD["template"]), told
        await conn.session.update(session=REALTIME_SESSION)
        await rec.wait("session.updated")
        await rec.speak(speech("what_is_the_gateway.wav"))
        done = await rec.wait("response.done", timeout=90)
    assert done.response.status == "completed"
    transcript: str = done.response.output[0].content[0].transcript
    return transcript


async def webrtc_turn(gw: Any, key: str) -> str:
    peer = Peer()
    try:
        await peer.connect(gw.base, headers={"Authorization": f"Bearer {key}"})
        await peer.wait("session_started")
        await peer.mic.speak(wav("what_is_the_gateway.wav") + silence(700))
        end = await peer.wait("agent_response", timeout=90)
        await peer.wait("stream_end", timeout=90, response_id=end["response_id"])
    finally:
        await peer.close()
    reply: str = end["text"]
    return reply


TURNS = {"ws": v1_turn, "twilio": twilio_turn, "realtime": realtime_turn,
         "webrtc": webrtc_turn}


@pytest.mark.postgres
@pytest.mark.parametrize("prompt", list(TOLD))
@pytest.mark.parametrize("transport", list(TURNS))
async def test_a_turn_is_answered_as_the_assistant_and_stored(
        transport: str, prompt: str, gateway_factory: Any, upstream: LocalOpenAIServer,
        recording: dict[str, Any]) -> None:
    upstream.reset()
    gw = tool_gateway(gateway_factory, upstream, providers=recording,
                      server={"allow_anonymous": "false"}, **LOOPBACK)
    key = await concierge(gw, prompt)
    reply = await TURNS[transport](gw, key)

    # The assistant's prompt and tools reached the LLM, its language the STT, its voice
    # the TTS.
    first = upstream.requests[0].body
    assert first["messages"][0]["content"].startswith(TOLD[prompt])
    assert [t["function"]["name"] for t in first["tools"]] == ["get_current_datetime"]
    assert "Here is what I found" in reply  # the model called the tool and read its result
    assert recording["stt"].asked and set(recording["stt"].asked) == {LANGUAGE}
    assert recording["tts"].asked and set(recording["tts"].asked) == {VOICE}

    # Stored like every other transport's turn: the words, the reply as heard, sources.
    conv, messages = await stored_turn(gw, key)
    assert conv["transport"] == transport
    user, assistant = messages[0], messages[1]
    assert user["role"] == "user" and "gateway" in user["content"].lower()
    assert assistant["role"] == "assistant" and assistant["content"] == reply.strip()
    assert assistant["metadata"]["interrupted"] is False
    assert [s["title"] for s in assistant["metadata"]["sources"]] == ["About the gateway"]
    assert [t["name"] for t in assistant["metadata"]["tools"]] == ["get_current_datetime"]


async def test_one_voice_budget_for_every_transport(gateway_factory: Any) -> None:
    """The host rate-limits every transport's sessions alike (group ``voice``, per caller):
    one v1 session spends the minute's budget; the caller's WebRTC offer, Realtime
    connection and phone call are refused, each in its wire's way, and nothing is left
    admitted."""
    gw = gateway_factory(ratelimit={"group_voice": "1/minute"})
    key = await make_key(gw)
    bearer = {"Authorization": f"Bearer {key}"}
    token = await twiml_token(gw, key)  # an HTTP route: not a voice session
    async with websockets.connect(gw.ws_url, additional_headers=bearer) as ws:
        assert json.loads(await asyncio.wait_for(ws.recv(), 5))["type"] == "session_started"

    async with httpx.AsyncClient(base_url=gw.base, timeout=15) as http:
        offer = await http.post("/api/v1/voice/webrtc/offer", headers=bearer,
                                json={"sdp": "v=0\r\n", "type": "offer"})
    assert offer.status_code == 429 and offer.json()["error"]["code"] == "RATE_LIMITED"

    realtime = f"ws://127.0.0.1:{gw.cfg.server.port}/v1/realtime?model=gpt-realtime"
    async with websockets.connect(realtime, subprotocols=[
            "realtime", f"openai-insecure-api-key.{key}"]) as ws:
        refused = json.loads(await asyncio.wait_for(ws.recv(), 5))
        with pytest.raises(websockets.ConnectionClosed):
            await asyncio.wait_for(ws.recv(), 5)
    assert refused["error"]["code"] == "rate_limit_exceeded" and ws.close_code == 4429

    async with websockets.connect(stream_url(gw)) as ws:
        call = PhoneCall(ws)
        await call.start({"token": token})
        await asyncio.wait_for(call.reader, 5)  # it reads until the gateway closes
    assert ws.close_code == 4429 and not call.log
    registry = gw.app.state.sessions
    assert not registry.live and registry.active == 0

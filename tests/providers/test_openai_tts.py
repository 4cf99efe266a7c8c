"""OpenAITTS against a real local server speaking OpenAI's speech wire format.

The body is streamed raw PCM (chunked transfer encoding), read with the official
client's ``with_streaming_response``. ``live`` tests run the same calls on the real API.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import numpy as np
import openai
import pytest
from openai_server import LocalOpenAIServer

from gateway.audio import pcm
from gateway.config import Config
from gateway.providers import registry
from gateway.providers.base import ProviderError
from gateway.providers.openai_tts import GPT_VOICES, TTS1_VOICES, OpenAITTS

TEXT = "Hello there."  # 12 characters: 720 ms of the server's fake speech


@asynccontextmanager
async def make_tts(server: LocalOpenAIServer, **openai_cfg: Any) -> AsyncIterator[OpenAITTS]:
    tts_cfg = {"timeout_s": openai_cfg.pop("timeout_s", 1.0),
               "speed": openai_cfg.pop("speed", 1.0)}
    settings = {"base_url": server.base_url, "api_key": server.api_key, **openai_cfg}
    tts = OpenAITTS.from_config(Config().replace(openai=settings, tts=tts_cfg))
    try:
        yield tts
    finally:
        await tts.aclose()


async def test_speech_is_24k_pcm_as_sent(openai_server: LocalOpenAIServer) -> None:
    async with make_tts(openai_server, tts_voice="coral",
                        tts_instructions="Speak warmly.") as tts:
        speech = await tts.synthesize(TEXT, voice=None)
    assert speech.sample_rate == 24000 and speech.phonemes == ()  # no timings from OpenAI
    assert speech.duration_ms == pytest.approx(720, abs=1)
    # Loud where the letters are, silent at the space (the server's fake speech).
    samples = np.frombuffer(speech.pcm, dtype="<i2").astype(float)
    per_char = 24000 * 60 // 1000
    levels = [np.abs(samples[i * per_char:(i + 1) * per_char]).mean() for i in range(12)]
    assert levels[5] == 0 and min(levels[:5]) > 1000
    sent = openai_server.last
    assert sent.path == "/v1/audio/speech"
    assert sent.body == {"input": TEXT, "model": "gpt-4o-mini-tts", "voice": "coral",
                         "response_format": "pcm", "speed": 1.0,
                         "instructions": "Speak warmly."}
    assert sent.wait() == "completed"


async def test_tts_1_has_no_instructions_and_fewer_voices(
    openai_server: LocalOpenAIServer,
) -> None:
    async with make_tts(openai_server, tts_model="tts-1", tts_instructions="x",
                        speed=1.5) as tts:
        assert tts.voice_list == TTS1_VOICES and "ballad" not in tts.voices
        await tts.synthesize(TEXT, voice="ballad")  # not a tts-1 voice: the default
    body = openai_server.last.body
    assert "instructions" not in body and body["voice"] == "alloy" and body["speed"] == 1.5
    with pytest.raises(ProviderError, match="unknown OpenAI voice"):
        OpenAITTS(base_url=openai_server.base_url, model="tts-1", voice="verse")


async def test_session_voice_is_used_when_known(openai_server: LocalOpenAIServer) -> None:
    async with make_tts(openai_server) as tts:
        await tts.synthesize(TEXT, voice="Shimmer")
        assert openai_server.last.body["voice"] == "shimmer"
        await tts.synthesize(TEXT, voice="joe")  # a Piper voice: this TTS is a fallback
        assert openai_server.last.body["voice"] == "alloy"
        assert tts.voice_list == GPT_VOICES


async def test_audio_streams_in_as_it_is_sent(openai_server: LocalOpenAIServer) -> None:
    openai_server.audio.chunk_delay_s = 0.05  # 100 ms of audio every 50 ms
    arrivals: list[tuple[float, int]] = []
    async with make_tts(openai_server) as tts:
        began = time.monotonic()
        async for chunk in tts.stream_pcm("Streaming speech arrives in pieces."):
            arrivals.append((time.monotonic() - began, len(chunk)))
    total = sum(n for _, n in arrivals)
    assert total == 35 * 60 * 48  # 35 characters of 60 ms, 48 bytes per ms
    assert arrivals[0][0] < 0.3 < arrivals[-1][0]  # the first audio long before the last


async def test_empty_text_sends_nothing(openai_server: LocalOpenAIServer) -> None:
    async with make_tts(openai_server) as tts:
        assert (await tts.synthesize("  ")).pcm == b""
    assert openai_server.requests == []


async def test_registry_and_repr(openai_server: LocalOpenAIServer) -> None:
    cfg = Config().replace(tts={"provider": "openai"},
                           openai={"base_url": openai_server.base_url, "api_key": "sk-zzz123"})
    tts = registry.create_tts(cfg)
    try:
        assert isinstance(tts, OpenAITTS) and tts.sample_rate == 24000
        assert "sk-zzz123" not in repr(tts)
    finally:
        await tts.aclose()


# --- errors -------------------------------------------------------------------------------


async def test_401_is_not_retryable_and_hides_the_key(openai_server: LocalOpenAIServer) -> None:
    secret = "sk-wrong-secret-key-987654321"
    openai_server.echo_key_in_errors = True
    async with make_tts(openai_server, api_key=secret) as tts:
        with pytest.raises(ProviderError) as info:
            await tts.synthesize(TEXT)
    err = info.value
    assert not err.retryable and "HTTP 401" in str(err)
    assert secret not in str(err) and secret[-8:] not in str(err)
    assert isinstance(err.__cause__, openai.AuthenticationError)


@pytest.mark.parametrize(("behaviour", "retryable"), [
    ("rate_limit", True), ("server_error", True), ("quota", False)])
async def test_status_errors(openai_server: LocalOpenAIServer, behaviour: str,
                             retryable: bool) -> None:
    openai_server.echo_key_in_errors = True
    async with make_tts(openai_server, tts_model=behaviour, tts_voice="alloy",
                        timeout_s=2.0) as tts:
        with pytest.raises(ProviderError) as info:
            await tts.synthesize(TEXT)
    assert info.value.retryable is retryable
    assert openai_server.api_key not in str(info.value)


async def test_stall_mid_body_fails_within_the_timeout(openai_server: LocalOpenAIServer) -> None:
    openai_server.stall_after = 1
    async with make_tts(openai_server, tts_model="stall", timeout_s=0.5, max_retries=0) as tts:
        began = time.monotonic()
        with pytest.raises(ProviderError) as info:
            await tts.synthesize("A sentence long enough to need several chunks of audio.")
        elapsed = time.monotonic() - began
    assert elapsed < 1.2 and info.value.retryable and "timed out" in str(info.value)
    assert openai_server.last.wait() == "disconnected"


# --- voices in the platform API ------------------------------------------------------------


async def test_websocket_config_lists_the_voices(gateway_factory, openai_server) -> None:
    tts = OpenAITTS(base_url=openai_server.base_url, model="gpt-4o-mini-tts", voice="nova",
                    api_key=openai_server.api_key)
    gw = gateway_factory(providers={"tts": tts})
    async with httpx.AsyncClient() as client:
        rsp = await client.get(f"{gw.base}/api/websocket/config")
    assert rsp.status_code == 200, rsp.text
    info = rsp.json()
    voices = info["tts"]["voices"]
    assert [v["id"] for v in voices] == ["nova", *(v for v in GPT_VOICES if v != "nova")]
    assert voices[0] == {"provider": "openai", "id": "nova", "name": "Nova", "gender": "neutral"}
    assert info["tts"]["providers"] == {"openai": "OpenAI speech"}
    assert info["defaults"]["voice"] == "nova"


# --- against the real API (only with OPENAI_API_KEY) ------------------------------------------


@pytest.mark.live
async def test_live_speech(openai_live_key: str) -> None:
    tts = OpenAITTS(base_url="https://api.openai.com/v1", model="gpt-4o-mini-tts",
                    voice="alloy", api_key=openai_live_key, timeout_s=30.0)
    try:
        speech = await tts.synthesize("The gateway is a voice server.")
    finally:
        await tts.aclose()
    assert speech.sample_rate == 24000 and 1000 < speech.duration_ms < 6000
    assert pcm.rms_dbfs(speech.pcm) > -40

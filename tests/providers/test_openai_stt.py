"""OpenAISTT against a real local server speaking OpenAI's transcription wire format.

The official client runs unpatched on our side (multipart upload, SSE parsing, retries);
only the server is ours. ``live`` tests run the same calls against api.openai.com.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import openai
import pytest
from openai_server import LocalOpenAIServer

from gateway.audio import pcm
from gateway.config import Config
from gateway.providers import registry
from gateway.providers.base import ProviderError
from gateway.providers.openai_stt import OpenAISTT

ONE_SECOND = b"\x10\x00\xf0\xff" * 8000  # 1 s of 16 kHz s16le


@asynccontextmanager
async def make_stt(server: LocalOpenAIServer, **openai_cfg: Any) -> AsyncIterator[OpenAISTT]:
    timeout = openai_cfg.pop("timeout_s", 1.0)
    settings = {"base_url": server.base_url, "api_key": server.api_key, **openai_cfg}
    cfg = Config().replace(openai=settings, stt={"timeout_s": timeout})
    stt = OpenAISTT.from_config(cfg)
    try:
        yield stt
    finally:
        await stt.aclose()


async def failure(stt: OpenAISTT, **kwargs: Any) -> ProviderError:
    with pytest.raises(ProviderError) as info:
        await stt.transcribe(ONE_SECOND, **kwargs)
    return info.value


# --- the happy path -----------------------------------------------------------------------


@pytest.mark.parametrize("model", ["gpt-4o-mini-transcribe", "gpt-4o-transcribe", "whisper-1"])
async def test_transcribes_a_wav_upload(openai_server: LocalOpenAIServer, model: str,
                                        speech_wavs: dict[str, bytes]) -> None:
    audio = speech_wavs["what_is_the_gateway.wav"]
    async with make_stt(openai_server, stt_model=model, stt_prompt="Gym Pulse") as stt:
        text = await stt.transcribe(audio, language="en-US")
    assert text == "What is the gateway?"
    sent = openai_server.last
    assert sent.path == "/v1/audio/transcriptions"
    assert sent.headers["authorization"] == f"Bearer {openai_server.api_key}"
    assert sent.headers["content-type"].startswith("multipart/form-data; boundary=")
    assert sent.body["model"] == model and sent.body["language"] == "en"  # ISO-639-1
    assert sent.body["prompt"] == "Gym Pulse" and sent.body["response_format"] == "json"
    assert "stream" not in sent.body  # no partial-text callback: a plain JSON answer
    upload = openai_server.audio.uploads[-1]
    assert upload == {"rate": 16000, "channels": 1, "width": 2, "frames": len(audio) // 2}


async def test_streamed_deltas_arrive_as_partials(openai_server: LocalOpenAIServer) -> None:
    openai_server.audio.transcript = "Tell me about barge in."
    openai_server.audio.delta_delay_s = 0.05
    partials: list[tuple[float, str]] = []
    async with make_stt(openai_server) as stt:
        began = time.monotonic()
        text = await stt.transcribe(
            ONE_SECOND, on_partial=lambda t: partials.append((time.monotonic(), t)))
        done = time.monotonic()
    assert text == "Tell me about barge in."
    assert [t for _, t in partials] == ["Tell", "Tell me", "Tell me about",
                                        "Tell me about barge", "Tell me about barge in."]
    assert partials[0][0] - began < done - began - 0.15  # shown while the rest decodes
    assert openai_server.last.body["stream"] == "true"
    assert openai_server.last.wait() == "completed"  # the handler ends just after its last byte


async def test_whisper_1_is_never_asked_to_stream(openai_server: LocalOpenAIServer) -> None:
    partials: list[str] = []
    async with make_stt(openai_server, stt_model="whisper-1") as stt:
        assert await stt.transcribe(ONE_SECOND, on_partial=partials.append) != ""
    assert "stream" not in openai_server.last.body and partials == []


async def test_streaming_can_be_switched_off(openai_server: LocalOpenAIServer) -> None:
    partials: list[str] = []
    async with make_stt(openai_server, stt_stream=False) as stt:
        await stt.transcribe(ONE_SECOND, on_partial=partials.append)
    assert "stream" not in openai_server.last.body and partials == []


async def test_too_short_audio_is_not_sent(openai_server: LocalOpenAIServer) -> None:
    async with make_stt(openai_server) as stt:
        assert await stt.transcribe(b"\x00\x00" * 1500) == ""  # < 0.1 s: the API's 400
    assert openai_server.requests == []


async def test_registry_builds_the_provider(openai_server: LocalOpenAIServer) -> None:
    cfg = Config().replace(stt={"provider": "openai"},
                           openai={"base_url": openai_server.base_url, "api_key": "sk-x"})
    stt = registry.create_stt(cfg)
    try:
        assert isinstance(stt, OpenAISTT) and stt.name == "openai"
        assert "sk-x" not in repr(stt) and "sk-x" not in str(stt)
    finally:
        await stt.aclose()


# --- errors -------------------------------------------------------------------------------


async def test_401_is_not_retryable_and_hides_the_key(openai_server: LocalOpenAIServer) -> None:
    secret = "sk-wrong-secret-key-987654321"
    openai_server.echo_key_in_errors = True  # even if the server quotes the whole key
    async with make_stt(openai_server, api_key=secret) as stt:
        err = await failure(stt)
    assert not err.retryable and "HTTP 401" in str(err) and "openai.api_key" in str(err)
    assert secret not in str(err) and secret[-8:] not in str(err)
    assert isinstance(err.__cause__, openai.AuthenticationError)
    assert len(openai_server.requests) == 1


@pytest.mark.parametrize(("behaviour", "status", "retryable"), [
    ("rate_limit", 429, True), ("server_error", 500, True), ("quota", 429, False)])
async def test_status_errors_map_to_retryable(openai_server: LocalOpenAIServer, behaviour: str,
                                              status: int, retryable: bool) -> None:
    openai_server.echo_key_in_errors = True
    async with make_stt(openai_server, stt_model=behaviour, timeout_s=2.0) as stt:
        err = await failure(stt)
    assert err.retryable is retryable and f"HTTP {status}" in str(err)
    assert "request id req_" in str(err) and openai_server.api_key not in str(err)
    assert len(openai_server.requests) == 2  # the client's own single retry


async def test_bad_audio_is_a_400(openai_server: LocalOpenAIServer) -> None:
    async with make_stt(openai_server) as stt:
        client = stt._client  # the same official client, sending a file that is no WAV
        with pytest.raises(openai.BadRequestError) as info:
            await client.audio.transcriptions.create(
                model="gpt-4o-transcribe", file=("x.wav", b"RIFFnope", "audio/wav"))
    assert info.value.code == "invalid_value" and info.value.param == "file"


async def test_hang_hits_the_request_timeout(openai_server: LocalOpenAIServer) -> None:
    async with make_stt(openai_server, stt_model="hang", timeout_s=0.5, max_retries=0) as stt:
        began = time.monotonic()
        err = await failure(stt)
        elapsed = time.monotonic() - began
    assert 0.45 <= elapsed < 1.2 and err.retryable and "timed out" in str(err)
    assert openai_server.last.wait() == "disconnected"


async def test_stall_mid_stream_fails_fast(openai_server: LocalOpenAIServer) -> None:
    openai_server.stall_after = 1
    partials: list[str] = []
    async with make_stt(openai_server, stt_model="stall", timeout_s=0.5,
                        max_retries=0) as stt:
        began = time.monotonic()
        err = await failure(stt, on_partial=partials.append)
        elapsed = time.monotonic() - began
    assert partials == ["What"] and elapsed < 1.2 and err.retryable
    assert openai_server.last.wait() == "disconnected"


async def test_unreachable_server_is_retryable() -> None:
    stt = OpenAISTT(base_url="http://127.0.0.1:9/v1", model="whisper-1", timeout_s=1.0,
                    max_retries=0)
    try:
        err = await failure(stt)
    finally:
        await stt.aclose()
    assert err.retryable and "cannot reach transcription server" in str(err)


# --- the server's own wire format ---------------------------------------------------------


async def test_server_text_and_verbose_formats(openai_server: LocalOpenAIServer) -> None:
    client = openai.AsyncOpenAI(base_url=openai_server.base_url, api_key=openai_server.api_key)
    wav = pcm.wav_bytes(ONE_SECOND, 16000)
    try:
        text = await client.audio.transcriptions.create(
            model="whisper-1", file=("a.wav", wav, "audio/wav"), response_format="text")
        with pytest.raises(openai.BadRequestError) as info:
            await client.audio.transcriptions.create(
                model="gpt-4o-transcribe", file=("a.wav", wav, "audio/wav"),
                response_format="verbose_json")
    finally:
        await client.close()
    assert text == "What is the gateway?\n"
    assert info.value.code == "unsupported_value"


# --- against the real API (only with OPENAI_API_KEY) ---------------------------------------


@pytest.mark.live
@pytest.mark.parametrize("model", ["gpt-4o-mini-transcribe", "whisper-1"])
async def test_live_transcription(openai_live_key: str, model: str,
                                  speech_wavs: dict[str, bytes]) -> None:
    stt = OpenAISTT(base_url="https://api.openai.com/v1", model=model,
                    api_key=openai_live_key, timeout_s=30.0)
    partials: list[str] = []
    try:
        text = await stt.transcribe(speech_wavs["what_is_the_gateway.wav"], language="en",
                                    on_partial=partials.append)
    finally:
        await stt.aclose()
    assert "gateway" in text.lower()
    assert bool(partials) is (model != "whisper-1")

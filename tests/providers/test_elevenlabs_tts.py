"""ElevenLabsTTS against a real local server speaking ElevenLabs' wire format.

WebSocket stream-input (``websockets`` on our side, as the package has no async helper)
and HTTP streaming with timestamps (the official ``AsyncElevenLabs`` client). The server's
fake speech gives every character 60 ms, so audio and alignment can be checked exactly.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from elevenlabs_server import LocalElevenLabsServer
from fake_speech import speech

from gateway.audio import pcm
from gateway.config import Config
from gateway.providers import registry, visemes
from gateway.providers.base import ProviderError
from gateway.providers.elevenlabs_tts import ElevenLabsTTS, pick_format, text_pieces

TEXT = "Don't worry, it works!"
WORDS = ["Don't", "worry", "it", "works"]
WORD_STARTS = [0, 360, 780, 960]  # character index x 60 ms


def make_tts(server: LocalElevenLabsServer, **elevenlabs: Any) -> ElevenLabsTTS:
    timeout = elevenlabs.pop("timeout_s", 2.0)
    settings = {"base_url": server.base_url, "ws_url": server.ws_url,
                "api_key": server.api_key, "voice_id": "voice-A", "voices": ["voice-B"],
                **elevenlabs}
    return ElevenLabsTTS.from_config(Config().replace(elevenlabs=settings,
                                                      tts={"timeout_s": timeout}))


async def synth(server: LocalElevenLabsServer, text: str = TEXT, *, rate: int | None = 24000,
                voice: str | None = None, **cfg: Any) -> Any:
    tts = make_tts(server, **cfg)
    try:
        return await tts.synthesize(text, voice=voice, sample_rate=rate)
    finally:
        await tts.aclose()


async def failure(server: LocalElevenLabsServer, **cfg: Any) -> ProviderError:
    with pytest.raises(ProviderError) as info:
        await synth(server, **cfg)
    return info.value


# --- formats, audio and alignment -------------------------------------------------------------


@pytest.mark.parametrize("mode", ["websocket", "http"])
@pytest.mark.parametrize(("rate", "fmt"), [
    (8000, "ulaw_8000"), (16000, "pcm_16000"), (22050, "pcm_22050"), (24000, "pcm_24000"),
    (44100, "pcm_44100"), (48000, "pcm_24000")])
async def test_format_follows_the_session(elevenlabs_server: LocalElevenLabsServer, mode: str,
                                          rate: int, fmt: str) -> None:
    result = await synth(elevenlabs_server, rate=rate, mode=mode)
    assert elevenlabs_server.last.query["output_format"] == fmt
    made = int(fmt.split("_")[1])
    assert result.sample_rate == made  # 48 kHz: the runtime resamples from 24 kHz
    sent = TEXT + " " if mode == "websocket" else TEXT  # the WebSocket wants a final space
    expected, _ = speech(sent, made)
    if fmt.startswith("ulaw"):  # telephony: μ-law in, PCM out, no resampling anywhere
        expected = pcm.mulaw_decode(pcm.mulaw_encode(expected))
    assert result.pcm == expected
    assert result.duration_ms == pytest.approx(len(sent) * 60, abs=1)


@pytest.mark.parametrize("mode", ["websocket", "http"])
async def test_alignment_becomes_word_timings_and_visemes(
    elevenlabs_server: LocalElevenLabsServer, mode: str,
) -> None:
    result = await synth(elevenlabs_server, mode=mode)
    words = visemes.word_timings(TEXT, result.phonemes)
    assert [w.word for w in words] == WORDS
    assert [w.start_ms for w in words] == WORD_STARTS
    assert words[0].end_ms == 300 and words[-1].end_ms == 1260  # "Don't" = 5 letters
    cues = visemes.visemes(result.phonemes)
    shapes = [c.viseme for c in cues]
    assert shapes[:3] == ["DD", "oh", "nn"] and shapes[-1] == "sil"
    assert cues[-1].offset_ms <= result.duration_ms


async def test_alignment_only_on_a_generations_first_message(
    elevenlabs_server: LocalElevenLabsServer,
) -> None:
    elevenlabs_server.sync_alignment = False  # the endpoint's default behaviour
    result = await synth(elevenlabs_server)
    words = visemes.word_timings(TEXT, result.phonemes)
    assert [w.start_ms for w in words] == WORD_STARTS


async def test_websocket_messages_follow_the_protocol(
    elevenlabs_server: LocalElevenLabsServer,
) -> None:
    await synth(elevenlabs_server, stability=0.3)
    rec = elevenlabs_server.last
    assert rec.kind == "ws" and rec.path == "/v1/text-to-speech/voice-A/stream-input"
    assert rec.query == {"model_id": "eleven_flash_v2_5", "output_format": "pcm_24000",
                         "sync_alignment": "true", "auto_mode": "true"}
    assert rec.headers["xi-api-key"] == elevenlabs_server.api_key
    init, text, end = rec.messages
    assert init == {"text": " ", "voice_settings": {"stability": 0.3, "similarity_boost": 0.75,
                                                   "speed": 1.0}}
    assert "xi_api_key" not in init  # the key travels in the handshake header only
    assert text == {"text": TEXT + " ", "try_trigger_generation": True}
    assert end == {"text": ""} and rec.wait() == "completed"


async def test_http_request_shape(elevenlabs_server: LocalElevenLabsServer) -> None:
    await synth(elevenlabs_server, mode="http", voice="voice-B", rate=16000)
    rec = elevenlabs_server.last
    assert rec.path == "/v1/text-to-speech/voice-B/stream/with-timestamps"
    assert rec.query == {"output_format": "pcm_16000"}
    assert rec.body["text"] == TEXT and rec.body["model_id"] == "eleven_flash_v2_5"
    assert rec.headers["xi-api-key"] == elevenlabs_server.api_key


async def test_unknown_voice_falls_back_to_the_default(
    elevenlabs_server: LocalElevenLabsServer,
) -> None:
    await synth(elevenlabs_server, voice="joe")  # a Piper voice: this TTS is a fallback
    assert elevenlabs_server.last.path == "/v1/text-to-speech/voice-A/stream-input"
    await synth(elevenlabs_server, voice="voice-B")
    assert elevenlabs_server.last.path == "/v1/text-to-speech/voice-B/stream-input"


# --- text in as the LLM writes it ---------------------------------------------------------------


async def tokens(text: str, delay: float, done: asyncio.Event) -> AsyncIterator[str]:
    for word in text.split(" "):
        yield word + " "
        await asyncio.sleep(delay)
    done.set()


async def test_stream_speaks_before_the_text_is_complete(
    elevenlabs_server: LocalElevenLabsServer,
) -> None:
    text = ("The gateway is a voice server for browsers and kiosks. It speaks while the "
            "model is still writing the rest of its answer.")
    tts = make_tts(elevenlabs_server)
    done = asyncio.Event()
    chunks = []
    first_before_done = None
    try:
        async for chunk in tts.stream(tokens(text, 0.03, done), sample_rate=16000):
            if first_before_done is None:
                first_before_done = not done.is_set()
            chunks.append(chunk)
    finally:
        await tts.aclose()
    assert first_before_done  # audio came while text was still going in
    rec = elevenlabs_server.last
    assert rec.query.get("auto_mode") is None
    assert rec.messages[0]["generation_config"] == {"chunk_length_schedule": [50, 120, 160, 250]}
    sent = "".join(m["text"] for m in rec.messages[1:])
    assert sent.split() == text.split()  # every word, none split in two
    audio = b"".join(c.pcm for c in chunks)
    assert pcm.duration_ms(len(audio), 16000) == pytest.approx((len(text) + 1) * 60, abs=130)
    phonemes = [p for c in chunks for p in c.phonemes]
    starts = [p.start_ms for p in phonemes]
    assert starts == sorted(starts)  # one timeline over every generation
    words = visemes.word_timings(text, tuple(phonemes))
    assert [w.word for w in words] == text.replace(".", "").split()


async def test_text_pieces_end_at_word_boundaries() -> None:
    async def source() -> AsyncIterator[str]:
        for t in ["Hel", "lo wor", "ld, how", " are", " you?"]:
            yield t

    assert [p async for p in text_pieces(source())] == ["Hello ", "world, ", "how ", "are ",
                                                         "you? "]


async def test_a_failing_text_source_ends_the_stream_at_once(
    elevenlabs_server: LocalElevenLabsServer,
) -> None:
    async def broken() -> AsyncIterator[str]:
        yield "Hello there "
        await asyncio.sleep(0.05)
        raise ProviderError("the LLM broke off")

    tts = make_tts(elevenlabs_server)
    began = time.monotonic()
    with pytest.raises(ProviderError, match="LLM broke off"):
        async for _ in tts.stream(broken()):
            pass
    await tts.aclose()
    assert time.monotonic() - began < 1.5  # not the server's inactivity timeout


# --- errors -------------------------------------------------------------------------------


@pytest.mark.parametrize(("behaviour", "retryable", "fragment"), [
    ("unauthorized", False, "API key was rejected"),
    ("quota", False, "quota_exceeded"),
    ("reject_handshake", False, "HTTP 403"),
    ("busy", True, "HTTP 429 (too_many_concurrent_requests)"),
    ("server_error", True, "closed the stream (1011)"),
])
async def test_websocket_errors(elevenlabs_server: LocalElevenLabsServer, behaviour: str,
                                retryable: bool, fragment: str) -> None:
    elevenlabs_server.behaviour = behaviour
    elevenlabs_server.echo_key_in_errors = True
    err = await failure(elevenlabs_server)
    assert err.retryable is retryable and fragment in str(err), str(err)
    assert elevenlabs_server.api_key not in str(err)


async def test_wrong_key_on_the_websocket(elevenlabs_server: LocalElevenLabsServer) -> None:
    secret = "sk_wrong_0123456789abcdef"
    elevenlabs_server.echo_key_in_errors = True
    err = await failure(elevenlabs_server, api_key=secret)
    assert not err.retryable and "invalid_api_key" in str(err) and secret not in str(err)


@pytest.mark.parametrize(("behaviour", "status", "retryable"), [
    ("unauthorized", 401, False), ("quota", 401, False), ("unprocessable", 422, False),
    ("busy", 429, True), ("server_error", 500, True)])
async def test_http_errors(elevenlabs_server: LocalElevenLabsServer, behaviour: str,
                           status: int, retryable: bool) -> None:
    elevenlabs_server.behaviour = behaviour
    elevenlabs_server.echo_key_in_errors = True
    err = await failure(elevenlabs_server, mode="http")
    assert err.retryable is retryable and f"HTTP {status}" in str(err), str(err)
    assert elevenlabs_server.api_key not in str(err)


async def test_http_validation_list_is_reported(elevenlabs_server: LocalElevenLabsServer) -> None:
    tts = make_tts(elevenlabs_server)
    try:  # the official client, sending what the server cannot take
        with pytest.raises(Exception) as info:
            async for _ in tts._client.text_to_speech.stream_with_timestamps(
                    "voice-A", text="hi", output_format="mp3_44100_128"):
                pass
    finally:
        await tts.aclose()
    assert getattr(info.value, "status_code", None) == 422


@pytest.mark.parametrize("mode", ["websocket", "http"])
async def test_stall_fails_within_the_timeout(elevenlabs_server: LocalElevenLabsServer,
                                              mode: str) -> None:
    elevenlabs_server.behaviour = "stall"
    began = time.monotonic()
    err = await failure(elevenlabs_server, mode=mode, timeout_s=0.5)
    assert time.monotonic() - began < 1.5 and err.retryable
    elevenlabs_server.release_hung()


async def test_unreachable_server() -> None:
    tts = ElevenLabsTTS(voice_id="v", model_id="m", ws_url="ws://127.0.0.1:9",
                        base_url="http://127.0.0.1:9", connect_timeout_s=1.0)
    with pytest.raises(ProviderError, match="cannot reach ElevenLabs") as info:
        await tts.synthesize("Hello")
    await tts.aclose()
    assert info.value.retryable


def test_registry_format_choice_and_repr(elevenlabs_server: LocalElevenLabsServer) -> None:
    cfg = Config().replace(tts={"provider": "elevenlabs"},
                           elevenlabs={"api_key": "xi-very-secret-1", "output_format": "pcm_16000"})
    tts = registry.create_tts(cfg)
    assert isinstance(tts, ElevenLabsTTS) and tts.sample_rate == 16000
    assert "xi-very-secret-1" not in repr(tts)
    assert pick_format(8000) == "ulaw_8000" and pick_format(32000) == "pcm_24000"
    assert pick_format(8000, "pcm_16000") == "pcm_16000"  # a configured format wins


# --- against the real API (only with ELEVENLABS_API_KEY) ------------------------------------------


@pytest.mark.live
@pytest.mark.parametrize("mode", ["websocket", "http"])
async def test_live_speech_with_alignment(elevenlabs_live_key: str, mode: str) -> None:
    tts = ElevenLabsTTS(voice_id="JBFqnCBsd6RMkjVDRZzb", model_id="eleven_flash_v2_5",
                        api_key=elevenlabs_live_key, mode=mode, timeout_s=30.0)
    try:
        result = await tts.synthesize("The gateway is a voice server.", sample_rate=16000)
    finally:
        await tts.aclose()
    assert result.sample_rate == 16000 and result.duration_ms > 800
    words = visemes.word_timings("The gateway is a voice server.", result.phonemes)
    assert [w.word for w in words] == ["The", "gateway", "is", "a", "voice", "server"]

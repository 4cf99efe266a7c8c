"""OpenAI's audio endpoints for the local OpenAI server (tests/providers/openai_server.py).

- ``POST /v1/audio/transcriptions``: multipart upload (``file``, ``model``, ``language``,
  ``prompt``, ``response_format``, ``stream``); answers ``json`` ({"text", "usage"}),
  ``text`` (text/plain), or with ``stream=true`` on gpt-4o-* models SSE events
  (``transcript.text.delta`` ... ``transcript.text.done``, no ``[DONE]``). ``whisper-1``
  ignores ``stream``, as the API does. The transcript is ``server.audio.transcript``.
- ``POST /v1/audio/speech``: JSON; ``response_format="pcm"`` streams 24 kHz s16le in
  chunks (chunked transfer encoding), ``wav`` the same with a header.

Errors use OpenAI's ``{"error": {message, type, param, code}}`` bodies: 400 for a missing
or unreadable file, audio under 0.1 s, a format the model does not offer, an unknown
voice, input over 4096 characters; 401/429/500 and hangs/stalls by behaviour, as for chat.
"""

from __future__ import annotations

import asyncio
import io
import json
import re
import wave
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from fake_speech import speech, split_bytes
from fastapi import Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from openai_server import BEHAVIOURS, RecordedRequest, _request_id, openai_error

GPT_VOICES = {"alloy", "ash", "ballad", "coral", "echo", "fable", "nova", "onyx", "sage",
              "shimmer", "verse", "marin", "cedar"}
TTS1_VOICES = {"alloy", "ash", "coral", "echo", "fable", "nova", "onyx", "sage", "shimmer"}
SPEECH_RATE = 24000


@dataclass
class AudioSettings:
    """Knobs of the audio endpoints; a fresh set per test (``server.reset()``)."""

    transcript: str = "What is the gateway?"
    delta_delay_s: float = 0.0
    ms_per_char: float = 60.0
    chunk_bytes: int = 4800  # speech body chunks (100 ms)
    chunk_delay_s: float = 0.0
    uploads: list[dict[str, Any]] = field(default_factory=list)  # what each upload held


def add_audio_routes(server: Any) -> None:
    server.audio = AudioSettings()
    plain_reset = server.reset

    def reset() -> None:
        plain_reset()
        server.audio = AudioSettings()

    server.reset = reset

    @server.app.post("/v1/audio/transcriptions")
    async def transcriptions(request: Request) -> Response:
        rec = await server.record(request)
        denied = server.check_auth(request)
        if denied is not None:
            rec.finish("error:401")
            return denied
        form = await request.form()
        fields = {k: v for k, v in form.multi_items() if isinstance(v, str)}
        rec.body = fields
        rec.behaviour = _behaviour(server, fields.get("model", ""))
        upload = form.get("file")
        data = await upload.read() if upload is not None and not isinstance(upload, str) else None
        return await _transcribe(server, request, rec, fields, data)

    @server.app.post("/v1/audio/speech")
    async def speech_route(request: Request) -> Response:
        rec = await server.record(request)
        denied = server.check_auth(request)
        if denied is not None:
            rec.finish("error:401")
            return denied
        body = rec.body if isinstance(rec.body, dict) else {}
        rec.behaviour = _behaviour(server, str(body.get("model", "")))
        return await _speak(server, request, rec, body)


def _behaviour(server: Any, model: str) -> str:
    return str(server.behaviour or (model if model in BEHAVIOURS else "normal"))


# --- transcriptions --------------------------------------------------------------------


async def _transcribe(server: Any, request: Request, rec: RecordedRequest,
                      fields: dict[str, str], data: bytes | None) -> Response:
    problem = _upload_problem(server, fields, data)
    if problem is None:
        problem = server._error_for(rec.behaviour)
    if problem is not None:
        rec.finish(f"error:{problem.status_code}")
        return problem
    if rec.behaviour == "hang":
        return await server._hang(request, rec)
    text = server.audio.transcript
    model = fields["model"]
    streaming = fields.get("stream", "false").lower() == "true" and model != "whisper-1"
    if streaming:
        return StreamingResponse(_transcript_events(server, rec, text), media_type=
                                 "text/event-stream", headers={"x-request-id": _request_id()})
    rec.finish("completed")
    if fields.get("response_format", "json") == "text":
        return PlainTextResponse(text + "\n", headers={"x-request-id": _request_id()})
    body: dict[str, Any] = {"text": text}
    body["usage"] = ({"type": "duration", "seconds": 2} if model == "whisper-1"
                     else _token_usage(text))
    return JSONResponse(body, headers={"x-request-id": _request_id()})


def _upload_problem(server: Any, fields: dict[str, str], data: bytes | None) -> Response | None:
    model = fields.get("model", "")
    if not model:
        return openai_error(400, "you must provide a model parameter",
                            "invalid_request_error", None, "model")
    if data is None:
        return openai_error(400, "Missing required parameter: 'file'.",
                            "invalid_request_error", "missing_required_parameter", "file")
    fmt = fields.get("response_format", "json")
    if model != "whisper-1" and fmt not in ("json", "text"):
        return openai_error(400, f"response_format '{fmt}' is not compatible with model "
                            f"'{model}'. Use 'json' or 'text' instead.",
                            "invalid_request_error", "unsupported_value", "response_format")
    try:
        with wave.open(io.BytesIO(data)) as wav:
            info = {"rate": wav.getframerate(), "channels": wav.getnchannels(),
                    "width": wav.getsampwidth(), "frames": wav.getnframes()}
    except (wave.Error, EOFError):
        return openai_error(400, "Audio file might be corrupted or unsupported",
                            "invalid_request_error", "invalid_value", "file")
    server.audio.uploads.append(info)
    if info["frames"] / info["rate"] < 0.1:
        return openai_error(400, "Audio file is too short. Minimum audio length is 0.1 "
                            "seconds.", "invalid_request_error", "audio_too_short", "file")
    return None


def _token_usage(text: str) -> dict[str, Any]:
    words = len(text.split())
    return {"type": "tokens", "input_tokens": 50, "output_tokens": words,
            "total_tokens": 50 + words,
            "input_token_details": {"text_tokens": 0, "audio_tokens": 50}}


async def _transcript_events(server: Any, rec: RecordedRequest, text: str
                             ) -> AsyncIterator[str]:
    try:
        for i, delta in enumerate(re.findall(r"\s*\S+", text)):
            if rec.behaviour == "stall" and i == server.stall_after:
                rec.finish("released" if await server.wait_released() else "capped")
                return
            if server.audio.delta_delay_s:
                await asyncio.sleep(server.audio.delta_delay_s)
            yield _sse({"type": "transcript.text.delta", "delta": delta, "logprobs": None})
        yield _sse({"type": "transcript.text.done", "text": text, "logprobs": None,
                    "usage": _token_usage(text)})
        rec.finish("completed")
    finally:
        rec.finish("disconnected")


def _sse(data: dict[str, Any]) -> str:
    return f"data: {json.dumps(data, separators=(',', ':'))}\n\n"


# --- speech ------------------------------------------------------------------------------


async def _speak(server: Any, request: Request, rec: RecordedRequest,
                 body: dict[str, Any]) -> Response:
    problem = _speech_problem(body) or server._error_for(rec.behaviour)
    if problem is not None:
        rec.finish(f"error:{problem.status_code}")
        return problem
    if rec.behaviour == "hang":
        return await server._hang(request, rec)
    speed = float(body.get("speed") or 1.0)
    pcm, _ = speech(str(body["input"]), SPEECH_RATE, server.audio.ms_per_char / speed)
    fmt = body.get("response_format") or "mp3"
    if fmt == "wav":
        pcm = _wav_header(len(pcm)) + pcm
    return StreamingResponse(_speech_chunks(server, rec, pcm),
                             media_type="audio/wav" if fmt == "wav" else "audio/pcm",
                             headers={"x-request-id": _request_id()})


def _speech_problem(body: dict[str, Any]) -> Response | None:
    model, text, voice = body.get("model"), body.get("input"), body.get("voice")
    if not model:
        return openai_error(400, "you must provide a model parameter",
                            "invalid_request_error", None, "model")
    if not isinstance(text, str) or not text:
        return openai_error(400, "Missing required parameter: 'input'.",
                            "invalid_request_error", "missing_required_parameter", "input")
    if len(text) > 4096:
        return openai_error(400, "Invalid 'input': string too long. Expected a string with "
                            f"maximum length 4096, but got a string with length {len(text)} "
                            "instead.", "invalid_request_error", "string_above_max_length",
                            "input")
    voices = TTS1_VOICES if str(model).startswith("tts-1") else GPT_VOICES
    name = voice.get("id") if isinstance(voice, dict) else voice
    if name not in voices:
        return openai_error(400, f"Invalid value: '{name}'. Supported values are: "
                            f"{', '.join(sorted(voices))}.", "invalid_request_error",
                            "invalid_value", "voice")
    if body.get("response_format", "mp3") not in ("pcm", "wav"):
        return openai_error(400, "the local test server makes pcm and wav only",
                            "invalid_request_error", "unsupported_value", "response_format")
    return None


async def _speech_chunks(server: Any, rec: RecordedRequest, audio: bytes
                         ) -> AsyncIterator[bytes]:
    try:
        for i, chunk in enumerate(split_bytes(audio, server.audio.chunk_bytes)):
            if rec.behaviour == "stall" and i == server.stall_after:
                rec.finish("released" if await server.wait_released() else "capped")
                return
            if server.audio.chunk_delay_s:
                await asyncio.sleep(server.audio.chunk_delay_s)
            yield chunk
        rec.finish("completed")
    finally:
        rec.finish("disconnected")


def _wav_header(data_len: int) -> bytes:
    out = io.BytesIO()
    with wave.open(out, "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(SPEECH_RATE)
        wav.writeframes(b"")
    header = bytearray(out.getvalue())
    header[4:8] = (36 + data_len).to_bytes(4, "little")
    header[40:44] = data_len.to_bytes(4, "little")
    return bytes(header)

"""``elevenlabs`` TTS: streaming speech with character timings for lip-sync.

Two wire paths (``[elevenlabs] mode``):

- ``websocket`` (default): the stream-input WebSocket
  (``/v1/text-to-speech/{voice_id}/stream-input``). ``stream()`` takes text as it comes
  (LLM tokens) and yields audio with its character alignment as ElevenLabs generates it;
  ``synthesize()`` sends one sentence. The ``elevenlabs`` package's only helper for this
  endpoint (``convert_realtime``) is synchronous and drops the alignment, so the
  documented messages are spoken here with the ``websockets`` library.
- ``http``: the official ``AsyncElevenLabs`` client's ``stream_with_timestamps`` (chunks
  of base64 audio with alignment in seconds).

The output format follows the session: ``ulaw_8000`` for 8 kHz (telephony: decoded to
PCM here and re-encoded by the transport, never resampled), ``pcm_<rate>`` for the rates
ElevenLabs makes, else ``pcm_24000`` (the runtime resamples). Character alignment becomes
``Speech.phonemes`` (letters as rough phonemes, ``visemes.alignment_phonemes``), so the
session emits ``viseme`` and ``word_timing`` events as it does for Piper.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import json
from collections.abc import AsyncIterable, AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlencode

import httpx
import websockets
from elevenlabs import VoiceSettings
from elevenlabs.client import AsyncElevenLabs
from elevenlabs.core.api_error import ApiError
from websockets.asyncio.client import ClientConnection

from gateway.audio import pcm
from gateway.config import Config
from gateway.providers.visemes import alignment_phonemes
from gateway.redact import Redactor

from .base import PhonemeTiming, ProviderError, Speech
from .openai_audio import safe_url

# Session rate -> the format ElevenLabs makes at that rate (pcm_44100 needs a Pro plan).
FORMAT_BY_RATE = {8000: "ulaw_8000", 16000: "pcm_16000", 22050: "pcm_22050",
                  24000: "pcm_24000", 44100: "pcm_44100"}
DEFAULT_FORMAT = "pcm_24000"
# Characters buffered before a generation when text streams in (ElevenLabs' default,
# 120 first, trades latency for prosody; 50 is its minimum).
CHUNK_LENGTH_SCHEDULE = [50, 120, 160, 250]
_FATAL_ERRORS = frozenset({"invalid_api_key", "quota_exceeded", "voice_not_found",
                           "invalid_input_message", "unauthorized", "payment_required"})
_MAX_DETAIL = 300


def pick_format(sample_rate: int | None, configured: str = "auto") -> str:
    if configured != "auto":
        return configured
    return FORMAT_BY_RATE.get(sample_rate or 0, DEFAULT_FORMAT)


def format_rate(fmt: str) -> int:
    return int(fmt.split("_")[1])


@dataclass(frozen=True, slots=True)
class SpeechChunk:
    """Audio as it arrives (s16le mono) with its phonemes, timed from the stream start."""

    pcm: bytes
    sample_rate: int
    phonemes: tuple[PhonemeTiming, ...] = ()


class _Decoder:
    """One output format's bytes -> s16le, an odd byte carried to the next chunk."""

    def __init__(self, fmt: str) -> None:
        self.rate = format_rate(fmt)
        self.mulaw = fmt.startswith("ulaw")
        self._carry = b""
        self.total_ms = 0.0

    def push(self, data: bytes) -> bytes:
        if self.mulaw:
            out = pcm.mulaw_decode(data)
        else:
            data = self._carry + data
            cut = len(data) // 2 * 2
            out, self._carry = data[:cut], data[cut:]
        self.total_ms += pcm.duration_ms(len(out), self.rate)
        return out


class ElevenLabsTTS:
    name = "elevenlabs"

    def __init__(
        self,
        *,
        voice_id: str,
        model_id: str,
        api_key: str = "",
        base_url: str = "https://api.elevenlabs.io",
        ws_url: str = "wss://api.elevenlabs.io",
        voices: tuple[str, ...] = (),
        mode: str = "websocket",
        output_format: str = "auto",
        stability: float = 0.5,
        similarity_boost: float = 0.75,
        speed: float = 1.0,
        timeout_s: float = 15.0,
        connect_timeout_s: float = 5.0,
    ) -> None:
        if not voice_id or not model_id:
            raise ProviderError("elevenlabs.voice_id and elevenlabs.model_id must be set",
                                retryable=False)
        self.voice = voice_id
        self.voice_list = (voice_id, *(v for v in voices if v != voice_id))
        self.voices = frozenset(self.voice_list)
        self.model_id = model_id
        self.mode = mode
        self.format = output_format
        self.sample_rate = format_rate(pick_format(None, output_format))
        # The API's range for speed is 0.7..1.2.
        self.settings = {"stability": stability, "similarity_boost": similarity_boost,
                         "speed": min(max(speed, 0.7), 1.2)}
        self.timeout_s = timeout_s
        self.connect_timeout_s = connect_timeout_s
        self._ws_base = ws_url.rstrip("/")
        self._where = safe_url(base_url)
        self._key = api_key
        self._redactor = Redactor([api_key] if api_key else [])
        self._http = httpx.AsyncClient(timeout=httpx.Timeout(timeout_s,
                                                             connect=connect_timeout_s))
        # The SDK applies its own per-request timeout (240 s unless given) over the client's.
        self._client = AsyncElevenLabs(api_key=api_key or None, base_url=base_url.rstrip("/"),
                                       httpx_client=self._http, timeout=timeout_s)

    @classmethod
    def from_config(cls, cfg: Config) -> ElevenLabsTTS:
        e = cfg.elevenlabs
        return cls(voice_id=e.voice_id, model_id=e.model_id, api_key=e.api_key,
                   base_url=e.base_url, ws_url=e.ws_url, voices=e.voices, mode=e.mode,
                   output_format=e.output_format, stability=e.stability,
                   similarity_boost=e.similarity_boost, speed=cfg.tts.speed,
                   timeout_s=cfg.tts.timeout_s, connect_timeout_s=e.connect_timeout_s)

    def __repr__(self) -> str:  # never show the key
        return (f"ElevenLabsTTS(model_id={self.model_id!r}, voice={self.voice!r}, "
                f"mode={self.mode!r}, base_url={self._where!r})")

    async def aclose(self) -> None:
        await self._http.aclose()

    def pick_voice(self, voice: str | None) -> str:
        """The session's voice if it is one of ours, else the configured one (a session
        may carry another engine's voice when this TTS is a fallback)."""
        return voice if voice in self.voices else self.voice

    # --- one sentence ---------------------------------------------------------------

    async def synthesize(self, text: str, *, voice: str | None = None,
                         sample_rate: int | None = None) -> Speech:
        fmt = pick_format(sample_rate, self.format)
        if not text.strip():
            return Speech(b"", format_rate(fmt))
        if self.mode == "http":
            chunks = self._http_chunks(text, self.pick_voice(voice), fmt)
        else:
            chunks = self._ws_chunks(_once(text), self.pick_voice(voice), fmt, whole=True)
        audio = bytearray()
        phonemes: list[PhonemeTiming] = []
        async for chunk in chunks:
            audio += chunk.pcm
            phonemes.extend(chunk.phonemes)
        return Speech(bytes(audio), format_rate(fmt), tuple(phonemes))

    # --- text in as it comes (WebSocket input streaming) -------------------------------

    def stream(self, texts: AsyncIterable[str], *, voice: str | None = None,
               sample_rate: int | None = None) -> AsyncIterator[SpeechChunk]:
        """Audio for text that is still being written (LLM tokens), as it is generated."""
        fmt = pick_format(sample_rate, self.format)
        return self._ws_chunks(texts, self.pick_voice(voice), fmt, whole=False)

    def ws_endpoint(self, voice: str, fmt: str, *, whole: bool) -> str:
        params = {"model_id": self.model_id, "output_format": fmt, "sync_alignment": "true"}
        if whole:  # complete sentences: no buffering schedule (lower latency)
            params["auto_mode"] = "true"
        return (f"{self._ws_base}/v1/text-to-speech/{quote(voice, safe='')}/stream-input?"
                f"{urlencode(params)}")

    async def _ws_chunks(self, texts: AsyncIterable[str], voice: str, fmt: str,
                         *, whole: bool) -> AsyncIterator[SpeechChunk]:
        url = self.ws_endpoint(voice, fmt, whole=whole)
        try:
            async with websockets.connect(
                url, additional_headers={"xi-api-key": self._key},
                open_timeout=self.connect_timeout_s, max_size=1 << 24,
                # A stalled server is not waited for on close (the failover is waiting).
                close_timeout=0.25, user_agent_header="gateway",
            ) as ws:
                sender = asyncio.create_task(self._send_text(ws, texts, whole))
                try:
                    async for chunk in self._receive(ws, _Decoder(fmt)):
                        yield chunk
                    await asyncio.wait({sender}, timeout=1.0)
                    if sender.done():
                        sender.result()  # a failure while sending text surfaces here
                finally:
                    sender.cancel()
                    with contextlib.suppress(BaseException):
                        await sender
        except websockets.InvalidStatus as exc:
            raise self._handshake_error(exc) from exc
        except websockets.ConnectionClosedError as exc:
            raise self._closed_error(exc) from exc
        except (OSError, websockets.InvalidHandshake, websockets.InvalidURI,
                TimeoutError) as exc:
            raise ProviderError(f"cannot reach ElevenLabs at {safe_url(self._ws_base)} "
                                f"({type(exc).__name__})") from exc
        except websockets.WebSocketException as exc:  # a protocol violation, an oversize frame
            raise ProviderError(f"ElevenLabs stream failed ({type(exc).__name__})") from exc

    async def _send_text(self, ws: ClientConnection, texts: AsyncIterable[str],
                         whole: bool) -> None:
        init: dict[str, Any] = {"text": " ", "voice_settings": self.settings}
        if not whole:
            init["generation_config"] = {"chunk_length_schedule": CHUNK_LENGTH_SCHEDULE}
        await ws.send(json.dumps(init))
        pieces = _whole(texts) if whole else text_pieces(texts)
        try:
            async for piece in pieces:
                await ws.send(json.dumps({"text": piece, "try_trigger_generation": True}))
        except Exception:
            # The text source failed (the LLM broke off): end the stream now rather than
            # wait for the server's inactivity timeout; the failure is raised afterwards.
            await ws.close(1000, "input ended")
            raise
        await ws.send(json.dumps({"text": ""}))  # end of input: generate the rest, close

    async def _receive(self, ws: ClientConnection,
                       decoder: _Decoder) -> AsyncIterator[SpeechChunk]:
        while True:
            try:
                async with asyncio.timeout(self.timeout_s):
                    raw = await ws.recv()
            except TimeoutError:
                raise ProviderError(
                    f"ElevenLabs sent nothing for {self.timeout_s:g} s") from None
            except websockets.ConnectionClosedOK:
                return  # closed normally after the last audio
            msg = _json_object(raw)
            if msg.get("error") or (msg.get("message") and not msg.get("audio")):
                raise self._message_error(msg)
            if msg.get("audio"):
                offset = decoder.total_ms
                data = decoder.push(_b64(msg["audio"]))
                yield SpeechChunk(data, decoder.rate, _ws_phonemes(msg, offset))
            if msg.get("isFinal"):
                return

    # --- HTTP streaming with timestamps ---------------------------------------------

    async def _http_chunks(self, text: str, voice: str, fmt: str) -> AsyncIterator[SpeechChunk]:
        decoder = _Decoder(fmt)
        settings = VoiceSettings(stability=self.settings["stability"],
                                 similarity_boost=self.settings["similarity_boost"],
                                 speed=self.settings["speed"])
        try:
            async for item in self._client.text_to_speech.stream_with_timestamps(
                voice, text=text, model_id=self.model_id, output_format=fmt,
                voice_settings=settings,
            ):
                offset = decoder.total_ms
                data = decoder.push(_b64(item.audio_base_64 or ""))
                yield SpeechChunk(data, decoder.rate, _http_phonemes(item.alignment, offset))
        except ApiError as exc:
            raise self._api_error(exc.status_code or 0, exc.body) from exc
        except httpx.TimeoutException as exc:
            raise ProviderError(f"ElevenLabs at {self._where} timed out") from exc
        except httpx.HTTPError as exc:
            raise ProviderError(f"cannot reach ElevenLabs at {self._where} "
                                f"({type(exc).__name__})") from exc

    # --- errors -----------------------------------------------------------------------

    def _scrub(self, text: str) -> str:
        return self._redactor.scrub(str(text))[:_MAX_DETAIL]

    def _api_error(self, status: int, body: Any) -> ProviderError:
        code, message = _detail(body)
        retryable = status in (408, 409, 429) or status >= 500
        if status == 401 and code != "quota_exceeded":
            message = "the API key was rejected; check elevenlabs.api_key"
        return ProviderError(f"ElevenLabs returned HTTP {status} ({code}): "
                             f"{self._scrub(message)}", retryable=retryable)

    def _handshake_error(self, exc: websockets.InvalidStatus) -> ProviderError:
        response = exc.response
        try:
            body: Any = json.loads(response.body or b"")
        except ValueError:
            body = (response.body or b"").decode("utf-8", "replace")
        return self._api_error(response.status_code, body)

    def _message_error(self, msg: Mapping[str, Any]) -> ProviderError:
        code = str(msg.get("error") or "error")
        message = str(msg.get("message") or "")
        if code == "invalid_api_key":
            message = "the API key was rejected; check elevenlabs.api_key"
        return ProviderError(f"ElevenLabs stream error ({code}): {self._scrub(message)}",
                             retryable=code not in _FATAL_ERRORS)

    def _closed_error(self, exc: websockets.ConnectionClosedError) -> ProviderError:
        close = exc.rcvd
        code = close.code if close else 1006
        reason = close.reason if close else "connection lost"
        fatal = any(word in reason.lower() for word in ("api key", "quota", "unauthor"))
        if "api key" in reason.lower():
            reason = "the API key was rejected; check elevenlabs.api_key"
        return ProviderError(f"ElevenLabs closed the stream ({code}): {self._scrub(reason)}",
                             retryable=not fatal)


# --- helpers ------------------------------------------------------------------------------


async def _once(text: str) -> AsyncIterator[str]:
    yield text


async def _whole(texts: AsyncIterable[str]) -> AsyncIterator[str]:
    async for text in texts:
        if text.strip():
            yield text.strip() + " "


async def text_pieces(texts: AsyncIterable[str]) -> AsyncIterator[str]:
    """Streamed text -> pieces that end at a word boundary, each ending in one space (the
    endpoint's rule), so a word is never split between two generations."""
    buffer = ""
    async for text in texts:
        buffer += text
        cut = max(buffer.rfind(" "), buffer.rfind("\n"))
        if cut >= 0:
            piece, buffer = buffer[:cut].strip(), buffer[cut + 1:]
            if piece:
                yield piece + " "
    if buffer.strip():
        yield buffer.strip() + " "


def _json_object(raw: str | bytes) -> dict[str, Any]:
    try:
        msg = json.loads(raw)
    except ValueError:
        raise ProviderError("ElevenLabs sent a message that is not JSON",
                            retryable=False) from None
    if not isinstance(msg, dict):
        raise ProviderError("ElevenLabs sent a message that is not a JSON object",
                            retryable=False)
    return msg


def _b64(text: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise ProviderError("ElevenLabs sent audio that is not base64", retryable=False) from None


def _ws_phonemes(msg: Mapping[str, Any], offset_ms: float) -> tuple[PhonemeTiming, ...]:
    """WebSocket alignment (ms, relative to this message's audio) as phonemes. The
    original text's alignment is used so words match what was sent; else the
    normalized one (numbers spelled out)."""
    for key in ("alignment", "normalizedAlignment"):
        al = msg.get(key)
        if isinstance(al, Mapping) and al.get("chars"):
            return alignment_phonemes(al["chars"], al.get("charStartTimesMs") or [],
                                      al.get("charDurationsMs") or [], offset_ms)
    return ()


def _http_phonemes(alignment: Any, offset_ms: float) -> tuple[PhonemeTiming, ...]:
    """HTTP alignment (seconds). Times already past this chunk's start are taken as
    absolute, earlier ones as relative to the chunk (either way they line up)."""
    if alignment is None or not alignment.characters:
        return ()
    starts = [s * 1000.0 for s in alignment.character_start_times_seconds]
    ends = [e * 1000.0 for e in alignment.character_end_times_seconds]
    durations = [max(e - s, 0.0) for s, e in zip(starts, ends, strict=False)]
    shift = offset_ms if starts and starts[0] < offset_ms / 2 else 0.0
    return alignment_phonemes(alignment.characters, starts, durations, shift)


def _detail(body: Any) -> tuple[str, str]:
    """(status, message) from ElevenLabs' ``{"detail": {"status", "message"}}`` bodies,
    FastAPI-style validation lists, or plain text."""
    detail = body.get("detail", body) if isinstance(body, Mapping) else body
    if isinstance(detail, Mapping):
        return str(detail.get("status") or "error"), str(detail.get("message") or "")
    if isinstance(detail, list) and detail and isinstance(detail[0], Mapping):
        first = detail[0]
        where = ".".join(str(p) for p in first.get("loc", []))
        return "validation_error", f"{where}: {first.get('msg', '')}".strip(": ")
    return "error", str(detail or "")

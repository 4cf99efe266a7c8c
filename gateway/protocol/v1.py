"""Protocol v1 of ``/api/v1/voice/ws``: a sans-I/O parser, and the server events: the
pipeline's typed events rendered (``render``) and the few the transport builds itself.

``ProtocolState`` is fed each incoming message (text or binary) and returns what it
means: a client event, or a ``ProtocolError`` to send back. Bad input never raises;
it becomes an error value and the session goes on (see docs/protocol.md).
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass, field
from typing import Any, Final

from gateway.audio import pcm
from gateway.audio.pcm import AudioFormat as AudioFormat
from gateway.pipeline import events as ev
from gateway.protocol import errors, fields
from gateway.protocol.errors import INTERNAL_ERROR as INTERNAL_ERROR
from gateway.protocol.errors import INVALID_REQUEST as INVALID_REQUEST
from gateway.protocol.errors import PROVIDER_ERROR as PROVIDER_ERROR
from gateway.protocol.errors import RATE_LIMITED as RATE_LIMITED
from gateway.protocol.errors import UNAUTHORIZED as UNAUTHORIZED

SAMPLE_RATES: Final = (8000, 16000, 24000, 48000)
ENCODINGS: Final = ("pcm_s16le", "mulaw")


# --- client events -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Start:
    input: AudioFormat
    output_sample_rate: int | None = None
    language: str | None = None
    voice: str | None = None
    system_prompt: str | None = None
    conversation_id: str | None = None


@dataclass(frozen=True, slots=True)
class Audio:
    """Audio decoded to s16le at the session's input rate."""

    pcm: bytes


@dataclass(frozen=True, slots=True)
class Text:
    text: str


@dataclass(frozen=True, slots=True)
class Interrupt:
    pass


@dataclass(frozen=True, slots=True)
class EndOfSpeech:
    pass


@dataclass(frozen=True, slots=True)
class Ping:
    pass


@dataclass(frozen=True, slots=True)
class ProtocolError:
    code: str
    message: str
    retryable: bool = False

    def event(self) -> dict[str, Any]:
        return error(self.code, self.message, retryable=self.retryable)


ClientEvent = Start | Audio | Text | Interrupt | EndOfSpeech | Ping | ProtocolError


def _err(message: str) -> ProtocolError:
    return ProtocolError(INVALID_REQUEST, message)


@dataclass(slots=True)
class ProtocolState:
    """Per-connection parser state: the negotiated input format and what came before."""

    input: AudioFormat = field(default_factory=AudioFormat)
    max_chunk_ms: int = 1000
    max_text_chars: int = fields.TEXT_CHARS
    started: bool = False
    audio_seen: bool = False

    def receive_bytes(self, data: bytes) -> Audio | ProtocolError:
        return self._audio(data)

    def receive_text(self, text: str) -> ClientEvent:
        try:
            msg = json.loads(text)
        except (ValueError, RecursionError):  # incl. the int-digits limit
            return _err("message is not valid JSON")
        if not isinstance(msg, dict):
            return _err("message must be a JSON object")
        kind = msg.get("type")
        if not isinstance(kind, str):
            return _err("missing field: type")
        handler = _HANDLERS.get(kind)
        if handler is None:
            return _err(f"unknown message type: {fields.shown(kind)}")
        event: ClientEvent = handler(self, msg)
        return event

    # -- handlers ------------------------------------------------------------------

    def _start(self, msg: dict[str, Any]) -> Start | ProtocolError:
        if self.started:
            return _err("start may be sent only once, as the first message")
        encoding = msg.get("encoding", self.input.encoding)
        rate = msg.get("sample_rate", self.input.sample_rate)
        if encoding not in ENCODINGS:
            return _err(f"encoding must be one of {list(ENCODINGS)}")
        if type(rate) is not int or rate not in SAMPLE_RATES:
            return _err(f"sample_rate must be one of {list(SAMPLE_RATES)}")
        out_rate = msg.get("output_sample_rate")
        if out_rate is not None and (type(out_rate) is not int or out_rate not in SAMPLE_RATES):
            return _err(f"output_sample_rate must be one of {list(SAMPLE_RATES)}")
        fmt = AudioFormat(encoding, rate)
        if self.audio_seen and fmt != self.input:
            return _err("start after audio may not change the audio format")
        try:
            strings = _start_strings(msg)
        except fields.FieldError as exc:
            return _err(str(exc))
        self.started = True
        self.input = fmt
        return Start(input=fmt, output_sample_rate=out_rate, **strings)

    def _audio_msg(self, msg: dict[str, Any]) -> Audio | ProtocolError:
        data = msg.get("data")
        if not isinstance(data, str):
            return _err("missing field: data (base64 audio)")
        try:
            raw = base64.b64decode(data, validate=True)
        except (binascii.Error, ValueError):
            return _err("data is not valid base64")
        return self._audio(raw)

    def _audio(self, raw: bytes) -> Audio | ProtocolError:
        if not raw:
            return _err("empty audio chunk")
        if self.input.encoding == "pcm_s16le" and len(raw) % 2:
            return _err("pcm_s16le audio must have an even number of bytes")
        if self.input.chunk_ms(len(raw)) > self.max_chunk_ms:
            return _err(f"audio chunk longer than {self.max_chunk_ms} ms")
        self.audio_seen = True
        if self.input.encoding == "mulaw":
            raw = pcm.mulaw_decode(raw)
        return Audio(raw)

    def _text(self, msg: dict[str, Any]) -> Text | ProtocolError:
        text = msg.get("text")
        if not isinstance(text, str) or not text.strip():
            return _err("missing field: text")
        try:
            return Text(fields.text(text.strip(), "text", self.max_text_chars))
        except fields.FieldError as exc:
            return _err(str(exc))


# The optional strings of ``start``: each with its rule and limit (see fields.py).
_START_FIELDS: Final = (
    ("language", fields.name, fields.LANGUAGE_CHARS),
    ("voice", fields.name, fields.VOICE_CHARS),
    ("system_prompt", fields.text, fields.PROMPT_CHARS),
    ("conversation_id", fields.ident, fields.ID_CHARS),
)


def _start_strings(msg: dict[str, Any]) -> dict[str, str | None]:
    return {key: fields.optional(rule, msg.get(key), key, limit)
            for key, rule, limit in _START_FIELDS}


_HANDLERS: dict[str, Any] = {
    "start": ProtocolState._start,
    "audio": ProtocolState._audio_msg,
    "text": ProtocolState._text,
    "interrupt": lambda self, msg: Interrupt(),
    "end_of_speech": lambda self, msg: EndOfSpeech(),
    "ping": lambda self, msg: Ping(),
}


# --- server events -----------------------------------------------------------------


def error(code: str, message: str, *, retryable: bool = False) -> dict[str, Any]:
    """An ``error`` event. ``message`` is written by the gateway (gateway.protocol.errors
    for server-side failures), never an exception's or a provider's text."""
    return {"type": "error", "code": code, "message": message, "retryable": retryable}


def ended(reason: str) -> dict[str, Any]:
    """The ``error`` a session ended from outside gets (``errors.ENDINGS``)."""
    code, message, retryable = errors.ENDINGS[reason]
    return error(code, message, retryable=retryable)


def turn_not_stored(turn_id: int) -> dict[str, Any]:
    """``INTERNAL_ERROR`` for a turn the database refused: the session goes on (the
    ``turn_id`` tells a client which turn its history lacks)."""
    return {**error(INTERNAL_ERROR, errors.TURN_NOT_STORED), "turn_id": turn_id}


def provider_error(stage: str, *, retryable: bool = True) -> dict[str, Any]:
    """``PROVIDER_ERROR`` for a stage whose providers all failed (fixed message)."""
    return error(PROVIDER_ERROR, errors.provider_message(stage), retryable=retryable)


def internal_error(message: str = errors.INTERNAL_MESSAGE) -> dict[str, Any]:
    return error(INTERNAL_ERROR, message)


def encode(event: dict[str, Any]) -> str:
    return json.dumps(event, separators=(",", ":"), ensure_ascii=False)


# --- the pipeline's events on the wire ------------------------------------------------


def render(event: ev.Event) -> dict[str, Any] | None:
    """A pipeline event as its v1 JSON object; None for one v1 does not show (a
    telephony mark, a call hand-off). A transport's own message passes as it is."""
    message: dict[str, Any] | None = _RENDER[type(event)](event)
    return message


def _reply(kind: str, e: Any, **rest: Any) -> dict[str, Any]:
    return {"type": kind, "response_id": e.response_id, **rest}


def _tool_started(e: ev.ToolStarted) -> dict[str, Any]:
    return _reply("tool_start", e, tool_call_id=e.tool_call_id, name=e.name,
                  arguments=e.arguments)


def _tool_ended(e: ev.ToolEnded) -> dict[str, Any]:
    return _reply("tool_end", e, tool_call_id=e.tool_call_id, name=e.name,
                  result_summary=e.result_summary, duration_ms=e.duration_ms, ok=e.ok)


def _speech_started(e: ev.SpeechStarted) -> dict[str, Any]:
    if e.late_ms is None:
        return {"type": "speech_started", "turn_id": e.turn_id}
    return {"type": "speech_started", "turn_id": e.turn_id, "late_ms": e.late_ms}


_RENDER: Final[dict[type, Any]] = {
    ev.SpeechStarted: _speech_started,
    ev.SpeechStopped: lambda e: {"type": "speech_stopped", "turn_id": e.turn_id},
    ev.SpeechIgnored: lambda e: {"type": "speech_ignored", "turn_id": e.turn_id,
                                 "reason": e.reason, "text": e.text},
    ev.ReplyPaused: lambda e: {"type": "reply_paused", "response_id": e.response_id,
                               "turn_id": e.turn_id},
    ev.ReplyResumed: lambda e: {"type": "reply_resumed", "response_id": e.response_id,
                                "paused_ms": e.paused_ms},
    ev.Transcription: lambda e: {"type": "transcription", "text": e.text, "final": e.final,
                                 "turn_id": e.turn_id},
    ev.StreamStart: lambda e: {"type": "stream_start", "turn_id": e.turn_id,
                               "response_id": e.response_id},
    ev.Token: lambda e: {"type": "token", "text": e.text, "response_id": e.response_id},
    ev.AgentResponse: lambda e: {"type": "agent_response", "text": e.text,
                                 "response_id": e.response_id, "sources": [
                                     {"title": s.title, "url": s.url,
                                      "document_id": s.document_id, "relevance": s.relevance}
                                     for s in e.sources]},
    ev.ToolStarted: _tool_started,
    ev.ToolEnded: _tool_ended,
    ev.FunctionCall: lambda e: None,  # client functions are declared on Realtime only
    ev.TtsStart: lambda e: _reply("tts_start", e, encoding=e.encoding,
                                  sample_rate=e.sample_rate),
    ev.Visemes: lambda e: _reply("viseme", e, visemes=[
        {"offset_ms": c.offset_ms, "viseme": c.viseme} for c in e.cues]),
    ev.WordTimings: lambda e: _reply("word_timing", e, words=[
        {"word": w.word, "start_ms": w.start_ms, "end_ms": w.end_ms} for w in e.words]),
    ev.SegmentPlayed: lambda e: None,
    ev.Interrupted: lambda e: _reply("interrupted", e),
    ev.TtsComplete: lambda e: _reply("tts_complete", e, duration_ms=e.duration_ms,
                                     interrupted=e.interrupted, played_ms=e.played_ms),
    ev.StreamEnd: lambda e: _reply("stream_end", e),
    ev.Handoff: lambda e: None,
    ev.Metrics: lambda e: {"type": "metrics", "turn_id": e.turn_id,
                           "response_id": e.response_id, **e.latency_ms},
    ev.ProviderFailed: lambda e: provider_error(e.stage, retryable=e.retryable),
    ev.SttBehind: lambda e: error(PROVIDER_ERROR, errors.STT_BEHIND, retryable=True),
    ev.SessionCrashed: lambda e: internal_error(errors.SESSION_ENDS),
    ev.ReplyCrashed: lambda e: internal_error(),
    ev.TurnNotStored: lambda e: turn_not_stored(e.turn_id),
    ev.SessionEnded: lambda e: ended(e.reason),
    ev.Passthrough: lambda e: e.message,
}

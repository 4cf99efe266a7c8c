"""Protocol v1 of ``/api/v1/voice/ws``: a sans-I/O parser and the server event builders.

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
from gateway.protocol import errors, fields
from gateway.protocol.errors import INTERNAL_ERROR as INTERNAL_ERROR
from gateway.protocol.errors import INVALID_REQUEST as INVALID_REQUEST
from gateway.protocol.errors import PROVIDER_ERROR as PROVIDER_ERROR
from gateway.protocol.errors import RATE_LIMITED as RATE_LIMITED
from gateway.protocol.errors import UNAUTHORIZED as UNAUTHORIZED

SAMPLE_RATES: Final = (8000, 16000, 24000, 48000)
ENCODINGS: Final = ("pcm_s16le", "mulaw")


@dataclass(frozen=True, slots=True)
class AudioFormat:
    encoding: str = "pcm_s16le"
    sample_rate: int = 16000

    @property
    def bytes_per_sample(self) -> int:
        return 2 if self.encoding == "pcm_s16le" else 1

    def chunk_ms(self, nbytes: int) -> float:
        return nbytes / self.bytes_per_sample / self.sample_rate * 1000.0

    def as_dict(self) -> dict[str, Any]:
        return {"encoding": self.encoding, "sample_rate": self.sample_rate}


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

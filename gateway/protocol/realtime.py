"""OpenAI Realtime API wire format (``/v1/realtime``), sans-I/O: client events.

``RealtimeParser`` holds the session configuration and turns each client text frame into
a typed client event, or a ``ClientError`` value to send back (bad input never raises).
Both shapes of the session fields are accepted in ``session.update``, whichever protocol
the client speaks: the GA ``audio.input.format`` objects (``audio/pcm`` at 24 kHz,
``audio/pcmu``, ``audio/pcma``) and the beta ``input_audio_format: "pcm16" | "g711_ulaw" |
"g711_alaw"``, ``turn_detection``, ``input_audio_transcription``, ``modalities``, ``voice``.
The server events are built in ``gateway.protocol.realtime_events``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from dataclasses import dataclass, field
from typing import Any, Final

from gateway.audio import pcm
from gateway.errors import ClientError as BadInput
from gateway.protocol import audio_json, fields

# Wire format name -> (codec name for gateway.audio.pcm, sample rate).
FORMATS: Final = {
    "audio/pcm": ("pcm_s16le", 24000),
    "audio/pcmu": ("mulaw", 8000),
    "audio/pcma": ("alaw", 8000),
}
BETA_FORMATS: Final = {"pcm16": "audio/pcm", "g711_ulaw": "audio/pcmu", "g711_alaw": "audio/pcma"}
MAX_ID_CHARS = fields.ID_CHARS
MAX_CALL_ID_CHARS = 128  # tool call ids come from upstream LLMs too
MAX_TEXT_CHARS = 32_000
MAX_TOOLS = 128
MAX_METADATA_KEYS = 16  # as OpenAI's metadata: 16 pairs
VAD_TYPES = ("server_vad", "semantic_vad")
# ``input_audio_buffer.append`` as clients write it (compact or with Python's spaces, an
# optional event_id before, between or after): plain ASCII, no escapes, nothing else. It
# is taken without a JSON parse, 50 times a second (``gateway.protocol.audio_json``); any
# other shape goes to ``receive``.
_EID = rb'"event_id": ?"([A-Za-z0-9][A-Za-z0-9_.:-]{0,%d})"' % (MAX_ID_CHARS - 1)
_APPEND_HEAD = re.compile(rb'\{(?:%s, ?)?"type": ?"input_audio_buffer\.append", ?(?:%s, ?)?'
                          rb'"audio": ?"' % (_EID, _EID))
_APPEND_TAIL = re.compile(rb'"(?:, ?%s)?\}' % _EID)
EAGERNESS = ("low", "medium", "high", "auto")
# Client events of the Realtime API that this server does not implement: an ``error``
# with code ``unsupported_event`` says so (unknown types: ``invalid_event``).
UNSUPPORTED: Final = {
    "transcription_session.update": "transcription-only sessions are not supported: open a "
    "realtime session and set audio.input.transcription",
}


class Invalid(BadInput):
    """Raised inside the parser only; ``receive`` turns it into a ``ClientError`` value."""

    def __init__(self, message: str, param: str | None = None,
                 code: str = "invalid_value") -> None:
        super().__init__(message)
        self.param = param
        self.code = code


def _check(rule: Any, value: Any, param: str, *limit: int) -> Any:
    """A field rule of ``gateway.protocol.fields``, its refusal as ``Invalid``."""
    try:
        return rule(value, param, *limit)
    except fields.FieldError as exc:
        raise Invalid(str(exc), param) from None


def new_id(prefix: str) -> str:
    # 80 random bits as 20 hex digits (a uuid4 object per event cost 3x as much)
    return f"{prefix}_{os.urandom(10).hex()}"


# --- session configuration -----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TurnDetection:
    """``server_vad`` (``semantic_vad`` runs as it). None fields: the gateway's VAD config."""

    type: str = "server_vad"
    threshold: float | None = None
    prefix_padding_ms: int | None = None
    silence_duration_ms: int | None = None
    create_response: bool = True
    interrupt_response: bool = True
    idle_timeout_ms: int | None = None
    eagerness: str | None = None


@dataclass(frozen=True, slots=True)
class RealtimeConfig:
    model: str = "gpt-realtime"
    instructions: str = ""
    voice: str = "alloy"
    input_format: str = "audio/pcm"
    output_format: str = "audio/pcm"
    output_modalities: tuple[str, ...] = ("audio",)
    turn_detection: TurnDetection | None = field(default_factory=TurnDetection)
    transcription: dict[str, Any] | None = None
    noise_reduction: dict[str, Any] | None = None
    speed: float = 1.0
    tools: tuple[Any, ...] = ()
    tool_choice: Any = "auto"
    max_output_tokens: int | str = "inf"
    temperature: float = 0.8

    @property
    def speaks(self) -> bool:
        return "audio" in self.output_modalities

    def codec(self, direction: str) -> tuple[str, int]:
        return FORMATS[self.input_format if direction == "input" else self.output_format]


def _format(value: Any, param: str) -> str:
    """A GA format object ``{"type": "audio/pcm", "rate": 24000}`` or a beta name."""
    if isinstance(value, str):
        name = BETA_FORMATS.get(value, value)
    elif isinstance(value, dict):
        name = value.get("type", "audio/pcm")
        rate = value.get("rate")
        if name == "audio/pcm" and rate not in (None, 24000):
            raise Invalid("audio/pcm is 24000 Hz only", f"{param}.rate")
    else:
        raise Invalid("format must be an object or a string", param)
    if name not in FORMATS:
        raise Invalid(f"unsupported audio format {fields.shown(name)}; use audio/pcm, "
                      "audio/pcmu or audio/pcma", param)
    return str(name)


def _number(obj: dict[str, Any], key: str, param: str, lo: float, hi: float) -> Any:
    value = obj.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not lo <= value <= hi:
        raise Invalid(f"{key} must be a number within {lo:g}..{hi:g}", f"{param}.{key}")
    return value


def _turn_detection(value: Any, param: str) -> TurnDetection | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise Invalid("turn_detection must be an object or null", param)
    kind = value.get("type", "server_vad")
    if kind not in VAD_TYPES:
        raise Invalid("turn_detection.type must be server_vad or semantic_vad", f"{param}.type")
    flags = {}
    for key in ("create_response", "interrupt_response"):
        flag = value.get(key, True)
        if not isinstance(flag, bool):
            raise Invalid(f"{key} must be a boolean", f"{param}.{key}")
        flags[key] = flag
    threshold = _number(value, "threshold", param, 0.0, 1.0)
    padding = _number(value, "prefix_padding_ms", param, 0, 5000)
    silence = _number(value, "silence_duration_ms", param, 20, 10000)
    idle = _number(value, "idle_timeout_ms", param, 5000, 30000)
    eagerness = value.get("eagerness") if kind == "semantic_vad" else None
    if eagerness is not None and eagerness not in EAGERNESS:
        raise Invalid(f"eagerness must be one of {', '.join(EAGERNESS)}", f"{param}.eagerness")
    return TurnDetection(
        type=kind, threshold=threshold,
        prefix_padding_ms=None if padding is None else int(padding),
        silence_duration_ms=None if silence is None else int(silence),
        idle_timeout_ms=None if idle is None else int(idle),
        eagerness=eagerness, **flags,
    )


def _modalities(value: Any, param: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not value or any(m not in ("text", "audio") for m in value):
        raise Invalid('modalities must be ["audio"] or ["text"]', param)
    return ("audio",) if "audio" in value else ("text",)


def _transcription(value: Any, param: str) -> dict[str, Any] | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise Invalid("transcription must be an object or null", param)
    return dict(_check(fields.plain_json, value, param))


# The strings of a session or response: each with its rule and limit (fields.py).
_STRINGS: Final[dict[str, tuple[Any, int]]] = {
    "model": (fields.name, fields.MODEL_CHARS),
    "voice": (fields.name, fields.VOICE_CHARS),
    "instructions": (fields.text, MAX_TEXT_CHARS),
}


def _string(obj: dict[str, Any], key: str, param: str) -> str | None:
    value = obj.get(key)
    if value is None:
        return None
    if isinstance(value, dict) and key == "voice":  # a custom voice reference {"id": "…"}
        return str(_check(fields.ident, value.get("id"), f"{param}.voice.id"))
    rule, limit = _STRINGS[key]
    return str(_check(rule, value, f"{param}.{key}", limit))


def _tools(value: Any, param: str) -> tuple[Any, ...]:
    if not isinstance(value, list) or len(value) > MAX_TOOLS:
        raise Invalid(f"tools must be a list of at most {MAX_TOOLS}", param)
    return tuple(_check(fields.plain_json, value, param))


def apply_session(config: RealtimeConfig, session: Any) -> RealtimeConfig:
    """``config`` with a ``session.update`` (or client-secret) session object applied."""
    if not isinstance(session, dict):
        raise Invalid("session must be an object", "session", "missing_required_parameter")
    if session.get("type", "realtime") != "realtime":
        raise Invalid("only realtime sessions are supported here", "session.type")
    changes: dict[str, Any] = {}
    for key in ("model", "instructions", "voice"):
        value = _string(session, key, "session")
        if value is not None:
            changes[key] = value
    changes.update(_audio_changes(session))
    for key in ("output_modalities", "modalities"):
        if key in session:
            changes["output_modalities"] = _modalities(session[key], f"session.{key}")
    if "tools" in session:
        changes["tools"] = _tools(session["tools"], "session.tools")
    if "tool_choice" in session:
        changes["tool_choice"] = _check(fields.plain_json, session["tool_choice"],
                                        "session.tool_choice", 1024)
    temperature = _number(session, "temperature", "session", 0.0, 2.0)
    if temperature is not None:
        changes["temperature"] = float(temperature)
    for key in ("max_output_tokens", "max_response_output_tokens"):
        if key in session:
            value = session[key]
            if value != "inf" and (isinstance(value, bool) or not isinstance(value, int)
                                   or not 1 <= value <= 4096):
                raise Invalid('max_output_tokens must be 1..4096 or "inf"', f"session.{key}")
            changes["max_output_tokens"] = value
    speed = _number(session, "speed", "session", 0.25, 1.5)
    if speed is not None:
        changes["speed"] = float(speed)
    return dataclasses.replace(config, **changes)


def _audio_changes(session: dict[str, Any]) -> dict[str, Any]:
    changes: dict[str, Any] = {}
    # Beta names at the top level of the session.
    if "input_audio_format" in session:
        changes["input_format"] = _format(session["input_audio_format"],
                                          "session.input_audio_format")
    if "output_audio_format" in session:
        changes["output_format"] = _format(session["output_audio_format"],
                                           "session.output_audio_format")
    if "turn_detection" in session:
        changes["turn_detection"] = _turn_detection(session["turn_detection"],
                                                    "session.turn_detection")
    if "input_audio_transcription" in session:
        changes["transcription"] = _transcription(session["input_audio_transcription"],
                                                  "session.input_audio_transcription")
    audio = session.get("audio")
    if audio is None:
        return changes
    if not isinstance(audio, dict):
        raise Invalid("audio must be an object", "session.audio")
    inp = audio.get("input") or {}
    out = audio.get("output") or {}
    if not isinstance(inp, dict) or not isinstance(out, dict):
        raise Invalid("audio.input and audio.output must be objects", "session.audio")
    p = "session.audio.input"
    if "format" in inp:
        changes["input_format"] = _format(inp["format"], f"{p}.format")
    if "turn_detection" in inp:
        changes["turn_detection"] = _turn_detection(inp["turn_detection"], f"{p}.turn_detection")
    if "transcription" in inp:
        changes["transcription"] = _transcription(inp["transcription"], f"{p}.transcription")
    if "noise_reduction" in inp:
        changes["noise_reduction"] = _check(fields.plain_json, inp["noise_reduction"],
                                            f"{p}.noise_reduction", 1024)
    if "format" in out:
        changes["output_format"] = _format(out["format"], "session.audio.output.format")
    voice = _string(out, "voice", "session.audio.output")
    if voice is not None:
        changes["voice"] = voice
    speed = _number(out, "speed", "session.audio.output", 0.25, 1.5)
    if speed is not None:
        changes["speed"] = float(speed)
    return changes


# --- conversation items --------------------------------------------------------------


@dataclass(slots=True)
class Item:
    """A conversation item. ``text`` is the input text, the audio transcript or the reply."""

    id: str
    type: str  # message | function_call | function_call_output
    role: str | None = None  # user | assistant | system (messages)
    text: str | None = None
    audio: bool = False  # the content is audio (input_audio / output_audio)
    status: str = "completed"
    call_id: str | None = None
    name: str | None = None
    arguments: str | None = None
    output: str | None = None
    # Input audio a client attached to a user message: s16le at ``rate``, until transcribed.
    pcm: bytes | None = field(default=None, repr=False)
    rate: int = 0


def _content_text(part: dict[str, Any], param: str) -> str | None:
    for key in ("text", "transcript"):
        if isinstance(part.get(key), str):
            return str(_check(fields.text, part[key], f"{param}.{key}", MAX_TEXT_CHARS))
    return None


def _message(item: dict[str, Any], item_id: str, config: RealtimeConfig) -> Item:
    role = item.get("role")
    if role not in ("user", "assistant", "system"):
        raise Invalid("role must be user, assistant or system", "item.role")
    content = item.get("content")
    if not isinstance(content, list) or not content:
        raise Invalid("a message needs content", "item.content", "missing_required_parameter")
    texts: list[str] = []
    audio = b""
    for i, part in enumerate(content):
        if not isinstance(part, dict):
            raise Invalid("content parts must be objects", f"item.content[{i}]")
        kind = part.get("type")
        if kind == "input_audio" and role == "user" and isinstance(part.get("audio"), str):
            codec, _ = config.codec("input")
            try:
                audio += pcm.decode(pcm.b64decode(part["audio"]), codec)
            except ValueError:
                raise Invalid("audio is not valid base64", f"item.content[{i}].audio") from None
            continue
        text = _content_text(part, f"item.content[{i}]")
        if kind not in ("input_text", "text", "output_text", "input_audio", "output_audio",
                        "audio") or text is None:
            raise Invalid("unsupported content part (use input_text, text or a transcript)",
                          f"item.content[{i}].type")
        texts.append(text)
    text = " ".join(texts)
    if len(text) > MAX_TEXT_CHARS:
        raise Invalid("message text too long", "item.content")
    rate = config.codec("input")[1]
    return Item(item_id, "message", role, text if texts else None, audio=bool(audio),
                pcm=audio or None, rate=rate if audio else 0)


def parse_item(item: Any, config: RealtimeConfig) -> Item:
    if not isinstance(item, dict):
        raise Invalid("item must be an object", "item", "missing_required_parameter")
    item_id = _check(fields.ident, item.get("id") or new_id("item"), "item.id")
    kind = item.get("type", "message")
    if kind == "message":
        return _message(item, item_id, config)
    if kind in ("function_call_output", "function_call"):
        call_id = item.get("call_id")
        if call_id is None:
            raise Invalid("call_id is required", "item.call_id", "missing_required_parameter")
        call_id = _check(fields.ident, call_id, "item.call_id", MAX_CALL_ID_CHARS)
        if kind == "function_call_output":
            return Item(item_id, kind, call_id=call_id, output=_item_text(item, "output"))
        return Item(item_id, kind, call_id=call_id, name=_item_text(item, "name", 64),
                    arguments=_item_text(item, "arguments"))
    raise Invalid("unsupported item type (use message, function_call or "
                  "function_call_output)", "item.type")


def _item_text(item: dict[str, Any], key: str, limit: int = MAX_TEXT_CHARS) -> str:
    value = item.get(key, "")
    if not isinstance(value, str):  # e.g. a tool output sent as a JSON object
        value = json.dumps(_check(fields.plain_json, value, f"item.{key}"), ensure_ascii=False)
    return str(_check(fields.text, value, f"item.{key}", limit))


# --- client events -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SessionUpdate:
    config: RealtimeConfig
    event_id: str | None = None


@dataclass(frozen=True, slots=True)
class AudioAppend:
    pcm: bytes  # s16le at ``sample_rate``
    sample_rate: int
    event_id: str | None = None


@dataclass(frozen=True, slots=True)
class AudioCommit:
    event_id: str | None = None


@dataclass(frozen=True, slots=True)
class AudioClear:
    event_id: str | None = None


@dataclass(frozen=True, slots=True)
class OutputAudioClear:
    event_id: str | None = None


@dataclass(frozen=True, slots=True)
class ItemCreate:
    item: Item
    previous_item_id: str | None = None
    event_id: str | None = None


@dataclass(frozen=True, slots=True)
class ItemTruncate:
    item_id: str
    content_index: int
    audio_end_ms: int
    event_id: str | None = None


@dataclass(frozen=True, slots=True)
class ItemDelete:
    item_id: str
    event_id: str | None = None


@dataclass(frozen=True, slots=True)
class ItemRetrieve:
    item_id: str
    event_id: str | None = None


@dataclass(frozen=True, slots=True)
class ResponseCreate:
    output_modalities: tuple[str, ...] | None = None
    instructions: str | None = None
    conversation: str = "auto"
    metadata: dict[str, Any] | None = None
    event_id: str | None = None
    tools: tuple[tuple[Any, ...], Any] | None = None  # this response's (tools, tool_choice)


@dataclass(frozen=True, slots=True)
class ResponseCancel:
    response_id: str | None = None
    event_id: str | None = None


@dataclass(frozen=True, slots=True)
class ClientError:
    """Bad input: answered with an ``error`` event; the session goes on."""

    message: str
    code: str = "invalid_value"
    param: str | None = None
    event_id: str | None = None
    type: str = "invalid_request_error"


ClientEvent = (SessionUpdate | AudioAppend | AudioCommit | AudioClear | OutputAudioClear
               | ItemCreate | ItemTruncate | ItemDelete | ItemRetrieve | ResponseCreate
               | ResponseCancel | ClientError)


def _item_id(msg: dict[str, Any]) -> str:
    item_id = msg.get("item_id")
    if not isinstance(item_id, str) or not item_id:
        raise Invalid("item_id is required", "item_id", "missing_required_parameter")
    return str(_check(fields.ident, item_id, "item_id"))


def _optional_id(msg: dict[str, Any], key: str) -> str | None:
    return None if msg.get(key) is None else str(_check(fields.ident, msg[key], key))


def _metadata(body: dict[str, Any]) -> dict[str, Any] | None:
    value = body.get("metadata")
    if value is None:
        return None
    if not isinstance(value, dict) or len(value) > MAX_METADATA_KEYS:
        raise Invalid(f"metadata must be an object of at most {MAX_METADATA_KEYS} pairs",
                      "response.metadata")
    return dict(_check(fields.plain_json, value, "response.metadata", 4096))


def _int(msg: dict[str, Any], key: str) -> int:
    value = msg.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise Invalid(f"{key} must be a non-negative integer", key)
    return value


class RealtimeParser:
    """One connection's client side: the current session configuration and event parsing."""

    def __init__(self, config: RealtimeConfig) -> None:
        self.config = config

    def receive(self, text: str) -> ClientEvent:
        try:
            msg = json.loads(text)
        except (ValueError, RecursionError):
            return ClientError("the message is not valid JSON", "invalid_json")
        if not isinstance(msg, dict) or not isinstance(msg.get("type"), str):
            return ClientError("the message must be a JSON object with a type",
                               "invalid_event", "type")
        try:
            event_id = _optional_id(msg, "event_id")
        except Invalid as exc:  # echoed in every error: bounded and clean like any id
            return ClientError(str(exc), exc.code, exc.param)
        handler = _HANDLERS.get(msg["type"])
        if msg["type"] in UNSUPPORTED:
            return ClientError(UNSUPPORTED[msg["type"]], "unsupported_event", "type", event_id)
        if handler is None:
            return ClientError(f"unknown event type {fields.shown(msg['type'])}",
                               "invalid_event", "type", event_id)
        try:
            event: ClientEvent = handler(self, msg, event_id)
            return event
        except Invalid as exc:
            return ClientError(str(exc), exc.code, exc.param, event_id)

    def append_fast(self, frame: bytes) -> AudioAppend | None:
        """The audio of a raw (UTF-8) append of the usual shape, or None: then ``receive``
        must judge it. Where this gives an event, ``receive`` gives the same."""
        found = audio_json.b64_member(frame, _APPEND_HEAD, _APPEND_TAIL)
        if found is None:
            return None
        head, tail, raw = found
        ids = [i for i in (*head.groups(), tail[1]) if i is not None]
        if len(ids) > 1:  # a repeated key: JSON keeps the last; leave that to the parser
            return None
        codec, rate = self.config.codec("input")
        if codec == "pcm_s16le" and len(raw) % 2:
            return None
        return AudioAppend(pcm.decode(raw, codec), rate, ids[0].decode() if ids else None)

    def _session_update(self, msg: dict[str, Any], event_id: str | None) -> SessionUpdate:
        self.config = apply_session(self.config, msg.get("session"))
        return SessionUpdate(self.config, event_id)

    def _append(self, msg: dict[str, Any], event_id: str | None) -> AudioAppend:
        audio = msg.get("audio")
        if not isinstance(audio, str):
            raise Invalid("audio (base64) is required", "audio", "missing_required_parameter")
        try:
            raw = pcm.b64decode(audio)
        except ValueError:
            raise Invalid("audio is not valid base64", "audio") from None
        codec, rate = self.config.codec("input")
        if codec == "pcm_s16le" and len(raw) % 2:
            raise Invalid("audio/pcm must be 16-bit samples (an even number of bytes)", "audio")
        return AudioAppend(pcm.decode(raw, codec), rate, event_id)

    def _item_create(self, msg: dict[str, Any], event_id: str | None) -> ItemCreate:
        return ItemCreate(parse_item(msg.get("item"), self.config),
                          _optional_id(msg, "previous_item_id"), event_id)

    def _truncate(self, msg: dict[str, Any], event_id: str | None) -> ItemTruncate:
        return ItemTruncate(_item_id(msg), _int(msg, "content_index"), _int(msg, "audio_end_ms"),
                            event_id)

    def _response_create(self, msg: dict[str, Any], event_id: str | None) -> ResponseCreate:
        body = msg.get("response") or {}
        if not isinstance(body, dict):
            raise Invalid("response must be an object", "response")
        modalities = None
        for key in ("output_modalities", "modalities"):
            if key in body:
                modalities = _modalities(body[key], f"response.{key}")
        instructions = _string(body, "instructions", "response")
        conversation = body.get("conversation", "auto")
        if conversation not in ("auto", "none"):
            raise Invalid('conversation must be "auto" or "none"', "response.conversation")
        for key, value in (("conversation", conversation != "auto"), ("input", "input" in body)):
            if value:  # an answer outside the conversation: its history would be wrong
                raise Invalid("out-of-band responses (conversation \"none\", input) are not "
                              "supported here", f"response.{key}", "unsupported_value")
        tools = None
        if "tools" in body or "tool_choice" in body:
            tools = (_tools(body["tools"], "response.tools") if "tools" in body
                     else self.config.tools,
                     _check(fields.plain_json, body["tool_choice"], "response.tool_choice", 1024)
                     if "tool_choice" in body else self.config.tool_choice)
        return ResponseCreate(modalities, instructions, conversation, _metadata(body), event_id,
                              tools)

    def _response_cancel(self, msg: dict[str, Any], event_id: str | None) -> ResponseCancel:
        return ResponseCancel(_optional_id(msg, "response_id"), event_id)


_HANDLERS: dict[str, Any] = {
    "session.update": RealtimeParser._session_update,
    "input_audio_buffer.append": RealtimeParser._append,
    "input_audio_buffer.commit": lambda self, msg, eid: AudioCommit(eid),
    "input_audio_buffer.clear": lambda self, msg, eid: AudioClear(eid),
    "output_audio_buffer.clear": lambda self, msg, eid: OutputAudioClear(eid),
    "conversation.item.create": RealtimeParser._item_create,
    "conversation.item.truncate": RealtimeParser._truncate,
    "conversation.item.delete": lambda self, msg, eid: ItemDelete(_item_id(msg), eid),
    "conversation.item.retrieve": lambda self, msg, eid: ItemRetrieve(_item_id(msg), eid),
    "response.create": RealtimeParser._response_create,
    "response.cancel": RealtimeParser._response_cancel,
}
